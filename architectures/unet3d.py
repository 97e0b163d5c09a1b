"""``unet3d``: the 3D U-Net of Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (MICCAI 2016).

Analysis path: per level two 3x3x3 Conv -> BatchNorm -> ReLU with channels (32, 64), (64, 128),
(128, 256), bottom (256, 512), 2x2x2 max pooling. Synthesis path: 2x2x2 up-convolution (stride 2)
that keeps the channel count, concatenation with the analysis level, two 3x3x3 convolutions to half
the channels of that up-convolution's input level (256, 128, 64), 1x1x1 head.

Parameter count. The paper's 19,069,955 (3 input channels, 3 classes) counts convolution weights and
biases, up-convolutions *without* bias, and no BatchNorm parameters. This module reproduces that
convention by default (``upconv_bias=False``) and has exactly 19,069,955 such parameters plus 4,672
BatchNorm affine parameters, 19,074,627 in all (``sum(p.numel() for p in model.parameters())``; both
pinned in tests). For 1 input channel: 19,072,899 in all.

Convolutions are padded (``padding="same"``) by default so that output and label align; the paper's
valid convolutions (132x132x116 in -> 44x44x28 out) are ``padding="valid"``, where skips are
centre-cropped and the loss centre-crops the label to the output.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .blocks import DoubleConv, Norm, center_crop
from .spec import ArchSpec

CITATION = (
    "Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger. 3D U-Net: Learning Dense Volumetric Segmentation "
    "from Sparse Annotation. MICCAI 2016"
)


class UNet3D(nn.Module):
    """Cicek et al.'s 3D U-Net.

    Args:
        in_channels: input channels (paper: 3).
        num_classes: output classes (paper: 3).
        base_channels: 32 in the paper; level i has (b*2^i, b*2^(i+1)) channels, bottom (8b, 16b).
        levels: analysis levels above the bottom (paper: 3).
        norm: ``batch`` (paper, before each ReLU), ``instance`` or ``none``.
        padding: ``same`` (default here) or ``valid`` (paper).
        upconv_bias: bias in the up-convolutions (off to match the paper's parameter count).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        base_channels: int = 32,
        levels: int = 3,
        norm: Norm = "batch",
        padding: Literal["same", "valid"] = "same",
        upconv_bias: bool = False,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid'; got {padding!r}")
        pad = None if padding == "same" else 0
        b = base_channels
        self.down = nn.ModuleList()
        c_in = in_channels
        for i in range(levels + 1):  # the last one is the bottom
            mid = b * 2**i
            self.down.append(DoubleConv(c_in, mid, 2 * mid, norm, "relu", True, pad))
            c_in = 2 * mid
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            skip = 2 * b * 2**i
            self.upconv.append(nn.ConvTranspose3d(c_in, c_in, 2, stride=2, bias=upconv_bias))
            out = b * 2 ** (i + 1)
            self.up.append(DoubleConv(c_in + skip, out, out, norm, "relu", True, pad))
            c_in = out
        self.head = nn.Conv3d(c_in, num_classes, 1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = self.pool(x)
            x = level(x)
            skips.append(x)
        skips.pop()
        for upconv, level in zip(self.upconv, self.up):
            x = upconv(x)
            skip = center_crop(skips.pop(), tuple(x.shape[2:]))
            x = level(torch.cat([x, skip], dim=1))
        return self.head(x)


def paper_parameter_count(model: UNet3D) -> int:
    """Parameters counted as in Cicek et al.: everything but the BatchNorm affine parameters."""
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - bn


SPEC = ArchSpec(
    name="unet3d",
    summary="3D U-Net (Cicek 2016): 32..512 channels, up-convolutions, BatchNorm",
    citation=CITATION,
    builder=UNet3D,
    divisor=8,
    min_size=16,
    default_sizes=((128, 128, 128),),
    default_batches=(1,),
    cpu_sizes=((32, 32, 32),),
    cpu_batches=(1,),
)
