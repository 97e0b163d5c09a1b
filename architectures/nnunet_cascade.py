"""``nnunet_cascade``: nnU-Net's own cascade, the paper's Table 3 comparison.

Stage 1 is ``3d_lowres``: nnU-Net's 3d_fullres network trained on the image downsampled x2 (the paper
ran it on the whole downsampled volume, 536x235x235, batch 1). Stage 2 is ``3d_cascade_fullres``: the
same network at full resolution whose input is the image plus the stage-1 segmentation, upsampled
and one-hot encoded over the *foreground* classes (nnU-Net adds ``len(foreground_labels)`` input
channels, so 2 for 3 classes). Networks come from nnunetv2 (see :mod:`architectures.nnunet`).

A run's size names the full-resolution patch: stage 1 trains on that patch downsampled x2 (so the
size must be a multiple of 64), stage 2 on the patch itself. For the paper's whole-volume stage 1,
run stage 1's spec (``nnunet``) at the downsampled volume size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import nnunet, recipe
from .spec import ArchSpec, SampleTensor, Shape, Stage, downsample, standard_layout


class NNUNetCascade(nn.Module):
    """3d_lowres then 3d_cascade_fullres (inference path; stages train separately).

    Args:
        n_stages, base_features, max_features, deep_supervision: as :func:`architectures.nnunet.nnunet_fullres`.
        lowres_factor: the downsampling of stage 1's input (nnU-Net: about 2 for this data).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        n_stages: int = 6,
        base_features: int = 32,
        max_features: int = 320,
        deep_supervision: bool = False,
        lowres_factor: int = 2,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.lowres_factor = lowres_factor
        common = dict(n_stages=n_stages, base_features=base_features, max_features=max_features,
                      deep_supervision=deep_supervision)
        self.lowres = nnunet.nnunet_fullres(in_channels, num_classes, **common)
        self.fullres = nnunet.PreConcat(nnunet.nnunet_fullres(in_channels + num_classes - 1, num_classes, **common))

    @staticmethod
    def _main(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out[0]

    def prior(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 1 on ``x`` downsampled, its segmentation upsampled (nearest), one-hot over foreground."""
        low = downsample(x, self.lowres_factor, "linear")
        seg = self._main(self.lowres(low)).argmax(1, keepdim=True).to(x.dtype)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest").squeeze(1).long()
        return F.one_hot(seg, self.num_classes)[..., 1:].movedim(-1, 1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._main(self.fullres(x, self.prior(x)))


def cascade_fullres(
    in_channels: int = 1,
    num_classes: int = 3,
    n_stages: int = 6,
    base_features: int = 32,
    max_features: int = 320,
    deep_supervision: bool = False,
) -> nn.Module:
    """3d_cascade_fullres: nnU-Net's network with ``num_classes - 1`` extra (one-hot) input channels."""
    net = nnunet.nnunet_fullres(in_channels + num_classes - 1, num_classes, n_stages, base_features, max_features,
                                deep_supervision)
    return nnunet.PreConcat(net)


def lowres_layout(size: Shape, in_channels: int, num_classes: int, hp: Mapping[str, Any]) -> list[SampleTensor]:
    """Stage 1 trains on the patch downsampled x2: the image trilinearly, as nnU-Net resamples image data and as
    the cascade's own inference path feeds stage 1 (:func:`architectures.spec.downsample`), the label by nearest."""
    return [SampleTensor("image", "image", size, stride=2, channels=in_channels, resample="linear"),
            SampleTensor("label", "label", size, stride=2)]


def foreground_prior_layout(size: Shape, in_channels: int, num_classes: int, hp: Mapping[str, Any]) -> list[SampleTensor]:
    return standard_layout(size, in_channels, num_classes, hp) + [
        SampleTensor("prior", "prior", size, channels=num_classes - 1)
    ]


LOWRES_SPEC = ArchSpec(
    name="nnunet_cascade.3d_lowres",
    summary="nnU-Net 3d_lowres (stage 1 of nnU-Net's cascade), on the x2-downsampled patch",
    citation=nnunet.CITATION,
    builder=nnunet.nnunet_fullres,
    divisor=64,
    min_size=128,
    default_sizes=((256, 256, 256),),
    default_batches=(2,),
    cpu_sizes=((128, 128, 128),),
    layout=lowres_layout,
    recipe=recipe.nnunet(batch_dice=False),  # nnU-Net's planner: batch_dice False for 3d_lowres
)

FULLRES_SPEC = ArchSpec(
    name="nnunet_cascade.3d_cascade_fullres",
    summary="nnU-Net 3d_cascade_fullres (stage 2): image + one-hot foreground of stage 1",
    citation=nnunet.CITATION,
    builder=cascade_fullres,
    divisor=32,
    min_size=64,
    default_sizes=((128, 128, 128),),
    default_batches=(2,),
    cpu_sizes=((64, 64, 64),),
    layout=foreground_prior_layout,
    recipe=recipe.nnunet(batch_dice=True),  # 3d_cascade_fullres inherits 3d_fullres's batch_dice True
)


def _stages(hp: Mapping[str, Any]) -> tuple[Stage, ...]:
    common = {k: hp[k] for k in ("n_stages", "base_features", "max_features", "deep_supervision")}
    return (Stage("3d_lowres", LOWRES_SPEC, common, module="lowres"),
            Stage("3d_cascade_fullres", FULLRES_SPEC, common, module="fullres"))


SPEC = ArchSpec(
    name="nnunet_cascade",
    summary="nnU-Net cascade: 3d_lowres (x2 down) then 3d_cascade_fullres with one-hot input",
    citation=nnunet.CITATION,
    builder=NNUNetCascade,
    divisor=64,
    min_size=128,
    default_sizes=((256, 256, 256),),
    default_batches=(2,),
    cpu_sizes=((128, 128, 128),),
    size_meaning="full-resolution patch (stage 1 sees it downsampled x2)",
    stages=_stages,
    prior=lambda model, image: model.prior(image),
    recipe=recipe.nnunet(batch_dice=True),
)
