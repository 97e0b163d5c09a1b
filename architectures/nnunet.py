"""``nnunet`` and ``nnunet_resenc``: nnU-Net's 3d_fullres networks, built by nnunetv2 itself.

Isensee et al., nnU-Net, Nature Methods 18:203-211 (2021); ResEnc presets: Isensee et al., "nnU-Net
Revisited", MICCAI 2024. The network is made by nnunetv2's plans-to-network path
(``get_network_from_plans``) over ``dynamic_network_architectures``, with the arch kwargs nnU-Net's
default planner writes for an isotropic dataset:

- ``nnunet`` (PlainConvUNet): 6 stages, features min(320, 32 * 2^i), all kernels 3x3x3, strides
  1, 2, 2, 2, 2, 2, two convolutions per stage in encoder and decoder, InstanceNorm (affine) +
  LeakyReLU, conv bias on. 31,196,399 parameters for 1 input channel and 3 classes (pinned in tests).
- ``nnunet_resenc`` (ResidualEncoderUNet, ResEnc M preset): blocks per encoder stage 1, 3, 4, 6, 6, 6,
  one convolution per decoder stage; otherwise as above.

Topology for another patch size and spacing is derived with nnU-Net's own planner function
``get_pool_and_conv_props`` (``planned_for=(D, H, W)``, ``spacing=...``): the part of the planner that
needs no dataset on disk. Both train as nnU-Net trains them (:func:`architectures.recipe.nnunet`: SGD with
Nesterov momentum, nnunetv2's DC_and_CE_loss with its deep-supervision wrapper, fp16 autocast with a grad
scaler, clipping at 12, cudnn.benchmark); the builder's ``deep_supervision`` (off by default, so that
inference has one output) is switched on for training by that recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import recipe
from .spec import ArchSpec

CITATION = (
    "Isensee, Jaeger, Kohl, Petersen, Maier-Hein. nnU-Net: a self-configuring method for deep "
    "learning-based biomedical image segmentation. Nature Methods 18:203-211, 2021"
)
RESENC_CITATION = (
    "Isensee, Wald, Ulrich, Baumgartner, Roy, Maier-Hein, Jaeger. nnU-Net Revisited: A Call for "
    "Rigorous Validation in 3D Medical Image Segmentation. MICCAI 2024"
)

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def plan_topology(
    patch_size: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0), min_feature_map: int = 4
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """nnU-Net's planner: (kernel sizes, strides, adjusted patch size) for a patch and spacing."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pool_ops, kernels, patch, _ = get_pool_and_conv_props(list(spacing), list(patch_size), min_feature_map, 999999)
    # nnunetv2 >= 2.2 already lists the first stage's stride (1, 1, 1)
    strides = [list(p) for p in pool_ops]
    return [list(k) for k in kernels], strides, [int(x) for x in patch]


def arch_kwargs(
    n_stages: int,
    base_features: int,
    max_features: int,
    kernel_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
    residual: bool,
) -> dict:
    """The ``arch_kwargs`` block of an nnU-Net plans file for a 3D configuration."""
    kw = {
        "n_stages": n_stages,
        "features_per_stage": [min(max_features, base_features * 2**i) for i in range(n_stages)],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [list(k) for k in kernel_sizes],
        "strides": [list(s) for s in strides],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if residual:  # nnUNetPlannerResEncM
        kw["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6, 6, 6][:n_stages]
        kw["n_conv_per_stage_decoder"] = [1] * (n_stages - 1)
    else:  # ExperimentPlanner
        kw["n_conv_per_stage"] = [2] * n_stages
        kw["n_conv_per_stage_decoder"] = [2] * (n_stages - 1)
    return kw


def _build(
    in_channels: int,
    num_classes: int,
    residual: bool,
    n_stages: int,
    base_features: int,
    max_features: int,
    deep_supervision: bool,
    planned_for: Sequence[int] | None,
    spacing: Sequence[float],
) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    if planned_for is not None:
        kernels, strides, _ = plan_topology(planned_for, spacing)
        n_stages = len(strides)
    else:
        kernels = [[3, 3, 3]] * n_stages
        strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    kw = arch_kwargs(n_stages, base_features, max_features, kernels, strides, residual)
    return get_network_from_plans(
        RESENC if residual else PLAIN,
        kw,
        ["conv_op", "norm_op", "dropout_op", "nonlin"],
        in_channels,
        num_classes,
        allow_init=True,
        deep_supervision=deep_supervision,
    )


def nnunet_fullres(
    in_channels: int = 1,
    num_classes: int = 3,
    n_stages: int = 6,
    base_features: int = 32,
    max_features: int = 320,
    deep_supervision: bool = False,
    planned_for: Sequence[int] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> nn.Module:
    """nnU-Net's 3d_fullres PlainConvUNet (see the module docstring for the defaults' source).

    Args:
        n_stages: resolution stages (6 for a 128^3 isotropic patch, as nnU-Net plans it).
        base_features / max_features: features min(max_features, base_features * 2^i).
        deep_supervision: return outputs at every decoder resolution, full resolution first.
        planned_for: a patch size; when given, kernels, strides and stage count come from nnU-Net's
            ``get_pool_and_conv_props`` for it and ``spacing`` (``n_stages`` is then ignored).
        spacing: voxel spacing used with ``planned_for``.
    """
    return _build(in_channels, num_classes, False, n_stages, base_features, max_features, deep_supervision,
                  planned_for, spacing)


def nnunet_resenc_m(
    in_channels: int = 1,
    num_classes: int = 3,
    n_stages: int = 6,
    base_features: int = 32,
    max_features: int = 320,
    deep_supervision: bool = False,
    planned_for: Sequence[int] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> nn.Module:
    """nnU-Net's ResEnc M preset (ResidualEncoderUNet); arguments as :func:`nnunet_fullres`."""
    return _build(in_channels, num_classes, True, n_stages, base_features, max_features, deep_supervision,
                  planned_for, spacing)


class PreConcat(nn.Module):
    """Wrap a single-input network so that ``forward(image, prior)`` feeds it cat(image, prior):
    how nnU-Net's 3d_cascade_fullres sees the one-hot low-resolution prediction."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, prior.to(image.dtype)], dim=1))


SPEC = ArchSpec(
    name="nnunet",
    summary="nnU-Net 3d_fullres PlainConvUNet via nnunetv2 (6 stages, 32..320, InstanceNorm)",
    citation=CITATION,
    builder=nnunet_fullres,
    divisor=32,
    min_size=64,  # InstanceNorm needs more than one voxel at the 2^5-times-smaller bottleneck
    default_sizes=((128, 128, 128),),
    default_batches=(2,),
    cpu_sizes=((64, 64, 64),),
    cpu_batches=(1,),
    recipe=recipe.nnunet(batch_dice=True),
)

RESENC_SPEC = ArchSpec(
    name="nnunet_resenc",
    summary="nnU-Net ResEnc M (ResidualEncoderUNet) via nnunetv2",
    citation=RESENC_CITATION,
    builder=nnunet_resenc_m,
    divisor=32,
    min_size=64,
    default_sizes=((128, 128, 128),),
    default_batches=(2,),
    cpu_sizes=((64, 64, 64),),
    cpu_batches=(1,),
    recipe=recipe.nnunet(batch_dice=True),
)

SPECS = (RESENC_SPEC,)
