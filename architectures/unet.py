"""``unet``: the "unified 3D U-net" backbone of Wang et al., MIDL 2022 (and its authors' notebook).

Channel plan (defaults): encoder 16, 32, 64, 128, 128 at P, P/2, P/4, P/8, P/16; decoder 64, 32, 16, 16
at P/8, P/4, P/2, P. Each level is two 3x3x3 Conv -> BatchNorm -> ReLU (padding 1). Down: MaxPool3d(2).
Up: nearest-neighbour interpolation to the skip's size (no transposed convolutions), concatenation
skips, 1x1x1 head.

Parameter count, 1 input channel and 3 classes: 2,512,515 (pinned in tests), of which 2,510,531 are
convolution weights and biases and 1,984 BatchNorm affine parameters (992 normalised channels x
weight and bias). Convolutions keep their bias (``conv_bias=True``), as PyTorch's ``nn.Conv3d``
default in the notebook; with ``conv_bias=False`` the count drops by 992 to 2,511,523.

The same module is the stage-2 network of the paper's cascade: ``prior_channels > 0`` adds one-hot
stage-1 predictions, either concatenated to the decoder input at the start of all four decoder levels
(``prior_mode="post"``, nearest-downsampled to P/8, P/4, P/2 and as is at P; the paper's full-level
post-concatenation) or to the image as extra input channels (``prior_mode="pre"``, nnU-Net's cascade).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Act, DoubleConv, Norm, run_stage
from .spec import ArchSpec

CITATION = (
    "Wang, Blackie, Miguel-Aliaga, Bai. Memory-efficient Segmentation of High-resolution Volumetric "
    "MicroCT Images. MIDL 2022, PMLR 172:1322-1335"
)


class UNet(nn.Module):
    """The paper's backbone U-net.

    Args:
        in_channels: image channels (1 for microCT).
        num_classes: output classes (3: background, mid-gut, hind-gut).
        encoder_channels: channels of the encoder levels, finest first (paper: 16, 32, 64, 128, 128).
        decoder_channels: channels of the decoder levels, coarsest first (paper: 64, 32, 16, 16).
        conv_bias: bias in every 3x3x3 convolution (the notebook's nn.Conv3d default).
        norm: ``batch`` (paper), ``instance`` or ``none``.
        act: ``relu`` (paper), ``leaky_relu`` or ``prelu``.
        upsample: interpolation mode of the up steps (paper: ``nearest``).
        checkpointing: recompute each encoder and decoder level in backward (torch.utils.checkpoint,
            non-reentrant). Off for the plain U-net rows of the paper; meU-net turns it on.
        checkpoint_scope: which levels ``checkpointing`` recomputes: ``all`` (default) or ``encoder`` only
            (a reading of the paper's memory tables, ``bench paper``).
        prior_channels: channels of the stage-1 one-hot prediction (0: single-stage network).
        prior_mode: ``post`` (decoder levels) or ``pre`` (input channels); see the module docstring.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        encoder_channels: Sequence[int] = (16, 32, 64, 128, 128),
        decoder_channels: Sequence[int] = (64, 32, 16, 16),
        conv_bias: bool = True,
        norm: Norm = "batch",
        act: Act = "relu",
        upsample: Literal["nearest", "trilinear"] = "nearest",
        checkpointing: bool = False,
        prior_channels: int = 0,
        prior_mode: Literal["post", "pre"] = "post",
        checkpoint_scope: Literal["all", "encoder"] = "all",
    ) -> None:
        super().__init__()
        enc, dec = tuple(encoder_channels), tuple(decoder_channels)
        if len(dec) != len(enc) - 1:
            raise ValueError(f"need one decoder level fewer than encoder levels; got {len(enc)} and {len(dec)}")
        if prior_mode not in ("post", "pre"):
            raise ValueError(f"prior_mode must be 'post' or 'pre'; got {prior_mode!r}")
        if checkpoint_scope not in ("all", "encoder"):
            raise ValueError(f"checkpoint_scope must be 'all' or 'encoder'; got {checkpoint_scope!r}")
        self.checkpointing = checkpointing
        self.checkpoint_decoder = checkpoint_scope == "all"
        self.upsample = upsample
        self.prior_channels = prior_channels
        self.prior_mode = prior_mode
        post = prior_channels if prior_mode == "post" else 0
        first_in = in_channels + (prior_channels if prior_mode == "pre" else 0)

        self.encoder = nn.ModuleList()
        c_prev = first_in
        for c in enc:
            self.encoder.append(DoubleConv(c_prev, c, c, norm, act, conv_bias))
            c_prev = c
        self.decoder = nn.ModuleList()
        for i, c in enumerate(dec):
            skip = enc[-2 - i]
            self.decoder.append(DoubleConv(c_prev + skip + post, c, c, norm, act, conv_bias))
            c_prev = c
        self.head = nn.Conv3d(c_prev, num_classes, 1)

    @property
    def depth(self) -> int:
        return len(self.encoder)

    def encode(self, x: torch.Tensor, no_grad_levels: int = 0, checkpointing: bool | None = None) -> list[torch.Tensor]:
        """Encoder features, finest first; the first ``no_grad_levels`` levels run without autograd.
        ``checkpointing`` overrides the module's for this call (meU-net checkpoints one path only)."""
        ckpt = self.checkpointing if checkpointing is None else checkpointing
        feats: list[torch.Tensor] = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                x = F.max_pool3d(x, 2)
            if i < no_grad_levels:
                with torch.no_grad():
                    x = level(x)
            else:
                x = run_stage(level, x, checkpointing=ckpt)
            feats.append(x)
        return feats

    def decode(self, feats: list[torch.Tensor], prior: torch.Tensor | None = None, levels: int | None = None,
               checkpointing: bool | None = None) -> torch.Tensor:
        """Decode ``levels`` decoder levels (all by default) and return the last one's features."""
        ckpt = (self.checkpointing if checkpointing is None else checkpointing) and self.checkpoint_decoder
        x = feats[-1]
        for i, level in enumerate(self.decoder[: levels if levels is not None else len(self.decoder)]):
            skip = feats[-2 - i]
            parts = [F.interpolate(x, size=skip.shape[2:], mode=self.upsample), skip]
            if prior is not None and self.prior_mode == "post":
                parts.append(resize_onehot(prior, skip.shape[2:]).to(skip.dtype))
            x = run_stage(_cat_then(level), *parts, checkpointing=ckpt)
        return x

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if (prior is None) != (self.prior_channels == 0):
            raise ValueError(f"this UNet expects {'a' if self.prior_channels else 'no'} stage-1 prior")
        if prior is not None and self.prior_mode == "pre":
            x = torch.cat([x, prior.to(x.dtype)], dim=1)
        return self.head(self.decode(self.encode(x), prior))


def _cat_then(level: nn.Module):
    def fn(*parts: torch.Tensor) -> torch.Tensor:
        return level(torch.cat(parts, dim=1))

    return fn


def resize_onehot(prior: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """One-hot maps at another resolution by nearest-neighbour sampling (keeps them one-hot)."""
    if tuple(prior.shape[2:]) == tuple(spatial):
        return prior
    return F.interpolate(prior, size=tuple(spatial), mode="nearest")


SPEC = ArchSpec(
    name="unet",
    summary="the paper's unified 3D U-net backbone (16-32-64-128-128, nearest upsampling)",
    citation=CITATION,
    builder=UNet,
    divisor=16,
    min_size=16,
    default_sizes=((160, 160, 160),),
    default_batches=(4,),
    cpu_sizes=((32, 32, 32), (64, 64, 64)),
    cpu_batches=(1, 2),
    cpu_dice=((32, 32, 32), 4),  # learns the default phantom to Dice >= 0.8 in minutes on 2 cores
    checkpointing="checkpointing",
)
