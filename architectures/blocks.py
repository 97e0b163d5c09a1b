"""Building blocks shared by the networks written in this package (nnU-Net comes from nnunetv2).

Kept separate from the architectures, as dynamic_network_architectures does, so that every network
file only wires blocks together and its channel plan can be read at a glance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

Norm = Literal["batch", "instance", "none"]
Act = Literal["relu", "leaky_relu", "prelu"]


def make_norm(norm: Norm, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of batch, instance, none; got {norm!r}")


def make_act(act: Act, channels: int) -> nn.Module:
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if act == "prelu":
        return nn.PReLU(channels)  # one slope per channel, as Caffe's PReLU default
    raise ValueError(f"act must be one of relu, leaky_relu, prelu; got {act!r}")


class ConvNormAct(nn.Sequential):
    """Conv3d -> norm -> activation; ``padding=None`` keeps the size (odd kernels), 0 is a valid conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: Norm = "batch",
        act: Act = "relu",
        bias: bool = True,
        padding: int | None = None,
    ) -> None:
        pad = kernel_size // 2 if padding is None else padding
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size, padding=pad, bias=bias),
            make_norm(norm, out_channels),
            make_act(act, out_channels),
        )


class DoubleConv(nn.Sequential):
    """Two ConvNormAct: the level of every classic U-Net (Ronneberger, Cicek, the paper's backbone)."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        norm: Norm = "batch",
        act: Act = "relu",
        bias: bool = True,
        padding: int | None = None,
    ) -> None:
        super().__init__(
            ConvNormAct(in_channels, mid_channels, 3, norm, act, bias, padding),
            ConvNormAct(mid_channels, out_channels, 3, norm, act, bias, padding),
        )


def run_stage(fn: Callable[..., torch.Tensor], *args: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Call one network stage, through non-reentrant gradient checkpointing when asked and useful.

    Checkpointing is skipped when autograd is off (inference, the no-grad first level of meU-net's
    expanded branch): there is nothing to save then, and recomputation would only cost time.
    """
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def center_crop(x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Crop the trailing spatial dims of ``x`` to ``spatial`` around the centre (valid-conv skips)."""
    slices = [slice(None)] * (x.dim() - len(spatial))
    for have, want in zip(x.shape[-len(spatial) :], spatial):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]
