"""``vnet``: V-Net of Milletari, Navab, Ahmadi (3DV 2016), as the paper describes it.

- Every convolution in the stages is 5x5x5 (padding 2) followed by PReLU; each stage is residual:
  its input is added to the output of its last convolution (before that convolution's PReLU in
  the reference Caffe model; here after it, as the paper's figure draws the sum at the stage's end).
- Compression path: stages of 1, 2, 3, 3 convolutions with 16, 32, 64, 128 channels, then a bottom
  stage of 3 convolutions with 256 channels. Going down is a 2x2x2 convolution with stride 2 that
  doubles the channels (+ PReLU), no pooling.
- Decompression path: stages of 3, 3, 2, 1 convolutions with 256, 128, 64, 32 channels. Going up is a
  2x2x2 transposed convolution with stride 2 to half the stage's channels (+ PReLU), concatenated
  with the compression stage of that resolution (fine-grained features forwarded from the left).
- Head: 1x1x1 convolution to the classes (softmax in the loss).
- The first stage's residual adds the input image replicated to 16 channels.

The original has no normalisation; ``norm="batch"`` adds BatchNorm after each convolution, as many
ports do, for users who need it to train with larger learning rates (documented deviation).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Norm, make_norm
from .spec import ArchSpec

CITATION = (
    "Milletari, Navab, Ahmadi. V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image "
    "Segmentation. 3DV 2016"
)


class ResidualStage(nn.Module):
    """n x (5x5x5 conv [+ norm] + PReLU), plus the stage's input."""

    def __init__(self, channels: int, n_convs: int, norm: Norm, kernel_size: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(n_convs):
            layers += [
                nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2),
                make_norm(norm, channels),
                nn.PReLU(channels),
            ]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + x


class VNet(nn.Module):
    """V-Net.

    Args:
        in_channels: image channels (paper: 1).
        num_classes: output classes (paper: 2).
        channels: stage channels on the compression path and bottom (paper: 16, 32, 64, 128, 256).
        down_convs: convolutions per compression stage and the bottom (paper: 1, 2, 3, 3, 3).
        up_convs: convolutions per decompression stage, coarsest first (paper: 3, 3, 2, 1).
        kernel_size: stage convolution kernel (paper: 5).
        norm: ``none`` (paper) or ``batch`` / ``instance``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        down_convs: tuple[int, ...] = (1, 2, 3, 3, 3),
        up_convs: tuple[int, ...] = (3, 3, 2, 1),
        kernel_size: int = 5,
        norm: Norm = "none",
    ) -> None:
        super().__init__()
        ch, depth = tuple(channels), len(channels)
        if len(down_convs) != depth or len(up_convs) != depth - 1:
            raise ValueError(f"need {depth} down_convs and {depth - 1} up_convs for {depth} channel levels")
        self.in_channels, self.first = in_channels, ch[0]
        # input stage: its convolutions, the first taking the image; residual is the tiled image
        layers: list[nn.Module] = []
        for i in range(down_convs[0]):
            c_in = in_channels if i == 0 else ch[0]
            layers += [nn.Conv3d(c_in, ch[0], kernel_size, padding=kernel_size // 2), make_norm(norm, ch[0]),
                       nn.PReLU(ch[0])]
        self.input_stage = nn.Sequential(*layers)
        self.down = nn.ModuleList()
        self.down_stages = nn.ModuleList()
        for i in range(1, depth):
            self.down.append(nn.Sequential(nn.Conv3d(ch[i - 1], ch[i], 2, stride=2), make_norm(norm, ch[i]), nn.PReLU(ch[i])))
            self.down_stages.append(ResidualStage(ch[i], down_convs[i], norm, kernel_size))
        self.up = nn.ModuleList()
        self.up_stages = nn.ModuleList()
        c_prev = ch[-1]
        for j, n in enumerate(up_convs):
            c_stage = ch[-1] // 2**j  # 256, 128, 64, 32
            skip = ch[-2 - j]
            self.up.append(
                nn.Sequential(nn.ConvTranspose3d(c_prev, c_stage - skip, 2, stride=2), make_norm(norm, c_stage - skip),
                              nn.PReLU(c_stage - skip))
            )
            self.up_stages.append(ResidualStage(c_stage, n, norm, kernel_size))
            c_prev = c_stage
        self.head = nn.Conv3d(c_prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = -(-self.first // self.in_channels)
        tiled = x.repeat(1, reps, 1, 1, 1)[:, : self.first]
        x = self.input_stage(x) + tiled
        skips = [x]
        for down, stage in zip(self.down, self.down_stages):
            x = stage(down(x))
            skips.append(x)
        skips.pop()
        for up, stage in zip(self.up, self.up_stages):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


SPEC = ArchSpec(
    name="vnet",
    summary="V-Net (Milletari 2016): 5x5x5 residual stages, strided-conv down, PReLU",
    citation=CITATION,
    builder=VNet,
    divisor=16,
    min_size=16,
    default_sizes=((128, 128, 64),),
    default_batches=(2,),
    cpu_sizes=((32, 32, 32),),
    cpu_batches=(1,),
)
