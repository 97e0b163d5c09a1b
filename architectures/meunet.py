"""``meunet``: the memory-efficient U-net of Wang et al., MIDL 2022.

The paper's backbone (:class:`architectures.unet.UNet`, weights shared) trained on two inputs per sample:

1. the standard patch P^3 goes through the whole network with gradients, supervised at full resolution;
2. the expanded patch (kP)^3, cropped around the same centre, runs its first encoder level without
   gradient, is decoded only down to level 2 (P/2, so no full-resolution decoder activation is ever
   allocated for it) and is supervised there by an extra 1x1x1 head against its label downsampled
   x0.5 (nearest);
3. loss = loss(standard) + loss(expanded), equal weights.

Gradient checkpointing of every stage and mixed precision are part of the method (the paper measured
memory with both on), so ``checkpointing=True`` and the spec's default precision is fp16 autocast;
both can be switched off for ablations. Inference uses the standard path only.

Choices the paper leaves open (documented parameters):
    expansion: k, default 1.5 (paper: 1.25, 1.5, 1.75). The expanded edge is round(k * P) rounded to
        an even number, so that its half-resolution label is exact.
    size_refers_to: whether a run's size names the ``standard`` patch (default) or the ``expanded``
        one (the paper's Table 1 names the expanded patch); every record stores both shapes.
    The auxiliary head adds 16 * 3 + 3 = 51 parameters: 2,512,566 for 1 input channel, 3 classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .blocks import Act, Norm
from .spec import ArchSpec, Batch, Criterion, SampleTensor, Shape
from .unet import CITATION, UNet


class MeUNet(nn.Module):
    """meU-net: :class:`UNet` plus a half-resolution auxiliary head for the expanded patch.

    Args:
        in_channels, num_classes, encoder_channels, decoder_channels, conv_bias, norm, act: as
            :class:`UNet`.
        expansion: k, the expanded patch's edge over the standard one (paper default here 1.5).
        checkpointing: gradient checkpointing of every encoder/decoder level (paper: on).
        checkpoint_scope: what ``checkpointing`` covers, a reading of the paper's memory tables (``bench
            paper``): ``all`` levels of both paths (default), the ``encoder`` levels only, or the
            ``expanded`` branch only (the standard path then keeps its activations, as a plain U-net).
        size_refers_to: ``standard`` or ``expanded``: which patch a run's size names.
        no_grad_levels: encoder levels of the expanded branch run without autograd (paper: 1).
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
        expansion: float = 1.5,
        checkpointing: bool = True,
        size_refers_to: Literal["standard", "expanded"] = "standard",
        no_grad_levels: int = 1,
        checkpoint_scope: Literal["all", "encoder", "expanded"] = "all",
    ) -> None:
        super().__init__()
        if checkpoint_scope not in ("all", "encoder", "expanded"):
            raise ValueError(f"checkpoint_scope must be 'all', 'encoder' or 'expanded'; got {checkpoint_scope!r}")
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1; got {expansion}")
        if size_refers_to not in ("standard", "expanded"):
            raise ValueError(f"size_refers_to must be 'standard' or 'expanded'; got {size_refers_to!r}")
        self.expansion = expansion
        self.size_refers_to = size_refers_to
        self.no_grad_levels = no_grad_levels
        self.checkpoint_expanded = checkpointing
        self.backbone = UNet(
            in_channels, num_classes, encoder_channels, decoder_channels, conv_bias, norm, act,
            checkpointing=checkpointing and checkpoint_scope != "expanded",
            checkpoint_scope="encoder" if checkpoint_scope == "encoder" else "all",
        )
        # the decoder level at P/2 is the second last one
        self.aux_head = nn.Conv3d(tuple(decoder_channels)[-2], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: the standard path only."""
        return self.backbone(x)

    def forward_expanded(self, x: torch.Tensor) -> torch.Tensor:
        """The expanded branch: logits at half resolution, decoded only to level 2."""
        ckpt = self.checkpoint_expanded
        feats = self.backbone.encode(x, no_grad_levels=self.no_grad_levels, checkpointing=ckpt)
        return self.aux_head(self.backbone.decode(feats, levels=len(self.backbone.decoder) - 1, checkpointing=ckpt))

    def forward_train(self, standard: torch.Tensor, expanded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(standard), self.forward_expanded(expanded)


def expanded_edge(standard: int, k: float) -> int:
    """round(k * P) to the nearest even number (so the half-resolution label is exact)."""
    return 2 * round(k * standard / 2)


def standard_edge(expanded: int, k: float, divisor: int) -> int:
    """The standard edge for a named expanded edge: k * P ~= E with P a multiple of ``divisor``."""
    return max(divisor, divisor * round(expanded / k / divisor))


def patch_shapes(size: Shape, hp: Mapping[str, Any], divisor: int = 16) -> tuple[Shape, Shape]:
    """(standard, expanded) shapes for a run's size, per ``size_refers_to``."""
    k = hp["expansion"]
    if hp["size_refers_to"] == "expanded":
        std = tuple(standard_edge(s, k, divisor) for s in size)
        return std, tuple(size)  # type: ignore[return-value]
    return tuple(size), tuple(expanded_edge(s, k) for s in size)  # type: ignore[return-value]


def rounding_warning(size: Shape, hp: Mapping[str, Any]) -> str | None:
    """The sentence a user must read when the patches make a k other than the one asked for (the expanded
    edge is rounded to an even number; a named expanded patch gives a standard one rounded to 16)."""
    std, exp = patch_shapes(size, hp)
    k = float(hp["expansion"])
    actual = sorted({e / s for s, e in zip(std, exp)})
    if all(abs(a - k) < 1e-9 for a in actual):
        return None
    return (f"k = {', '.join(f'{a:.3g}' for a in actual)} here, not {k:g}: the patches are "
            f"{'x'.join(map(str, std))} -> {'x'.join(map(str, exp))} (the standard patch a multiple of 16, "
            "the expanded one even)")


def layout(size: Shape, in_channels: int, num_classes: int, hp: Mapping[str, Any]) -> list[SampleTensor]:
    """(standard patch, its label, expanded patch, its label at half resolution), one centre."""
    std, exp = patch_shapes(size, hp)
    return [
        SampleTensor("image", "image", std, channels=in_channels, divisor=16),
        SampleTensor("label", "label", std),
        SampleTensor("image_expanded", "image", exp, channels=in_channels, divisor=2),
        SampleTensor("label_expanded", "label", exp, stride=2),
    ]


def loss(model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
    """loss(standard) + loss(expanded at half resolution), equal weights (paper)."""
    out_std, out_exp = model.forward_train(batch["image"], batch["image_expanded"])
    return criterion(out_std, batch["label"]) + criterion(out_exp, batch["label_expanded"])


SPEC = ArchSpec(
    name="meunet",
    summary="memory-efficient U-net: standard + expanded patch (k=1.5), checkpointing, AMP",
    citation=CITATION,
    builder=MeUNet,
    divisor=2,  # the named size need only be even; the layout checks the standard patch at 16 (size_divisor says which)
    min_size=16,
    default_sizes=((160, 160, 160),),
    default_batches=(4,),
    cpu_sizes=((32, 32, 32), (48, 48, 48)),
    cpu_batches=(1, 2),
    default_precision="fp16",
    checkpointing="checkpointing",
    size_meaning=lambda hp: (lambda named, other: f"{named} patch; --set size_refers_to={other} names the {other} one")(
        hp["size_refers_to"], "expanded" if hp["size_refers_to"] == "standard" else "standard"),
    layout=layout,
    loss=loss,
    size_warning=rounding_warning,
)
