"""MONAI's 3D segmentation networks by name: ``--arch monai:SwinUNETR --set feature_size=48``.

Each network's constructor arguments are its overrides (``spatial_dims`` is 3, ``in_channels`` and
``out_channels`` are the run's channels and classes); its input divisibility follows from them as MONAI
documents it; arguments MONAI requires get the defaults below (DynUNet and AttentionUnet: five levels,
as nnU-Net's 3d_fullres). Any other class of ``monai.networks.nets`` is taken by name too, its
divisibility probed as for any network (:mod:`architectures.imported`).

MONAI is an optional extra (``pip install -e ".[monai]"``); it is imported only when a ``monai:`` name
is used, and never imports torchvision (:func:`import_monai`). SwinUNETR calls ``.item()`` in its
constructor: :meth:`ArchSpec.build_model` builds it for real and gives its parameters fake storage for
prediction. A network's smallest edge is twice its divisibility (instance norm needs more than one voxel
at the bottleneck in training).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from math import prod
from types import ModuleType
from typing import Any

from .imported import FactorySpec, factory_spec
from .spec import Shape

PREFIX = "monai:"
#: how to get MONAI, in every message that needs it
INSTALL = "pip install 'segmem[monai]' (or pip install monai)"

MONAI_CITATION = "Cardoso et al. MONAI: An open-source framework for deep learning in healthcare. arXiv:2211.02701, 2022"


def _strides(hp: Mapping[str, Any]) -> int:
    """The product of a network's strides (each an int or a per-axis sequence: its largest entry)."""
    return prod(max(s) if isinstance(s, list | tuple) else int(s) for s in hp["strides"])


def _unetr_size(size: Shape, hp: Mapping[str, Any]) -> str | None:
    img = hp["img_size"]
    img = tuple(img) if isinstance(img, list | tuple) else (img,) * 3
    if tuple(size) != img:
        return (f"UNETR's input must be its img_size ({'x'.join(map(str, img))}): its position embedding is fixed; "
                f"use --set img_size={tuple(size)}")
    return None


#: per network: what the suite needs beyond the constructor (divisibility, defaults, sizes, citation)
NETWORKS: dict[str, dict[str, Any]] = {
    "SwinUNETR": dict(
        declared_divisor=lambda hp: hp["patch_size"] ** 5, default_sizes=((96, 96, 96),), default_batches=(2,),
        cpu_sizes=((64, 64, 64),), default_precision="fp16", checkpointing="use_checkpoint",
        citation="Hatamizadeh et al. Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in "
                 "MRI Images. BrainLes 2021"),
    "UNETR": dict(
        declared_divisor=lambda hp: 16, defaults=(("img_size", (96, 96, 96)),), size_rule=_unetr_size,
        default_sizes=((96, 96, 96),), default_batches=(2,), cpu_sizes=((96, 96, 96),), default_precision="fp16",
        citation="Hatamizadeh et al. UNETR: Transformers for 3D Medical Image Segmentation. WACV 2022"),
    "SegResNet": dict(
        declared_divisor=lambda hp: 2 ** (len(hp["blocks_down"]) - 1), default_sizes=((128, 128, 128),),
        default_batches=(2,), cpu_sizes=((64, 64, 64),),
        citation="Myronenko. 3D MRI brain tumor segmentation using autoencoder regularization. BrainLes 2018"),
    "DynUNet": dict(
        declared_divisor=_strides, defaults=(("kernel_size", (3, 3, 3, 3, 3)), ("strides", (1, 2, 2, 2, 2)),
                                             ("upsample_kernel_size", (2, 2, 2, 2))),
        default_sizes=((128, 128, 128),), default_batches=(2,), cpu_sizes=((64, 64, 64),),
        citation="Isensee et al. nnU-Net. Nature Methods 18, 2021 (MONAI's dynamic U-Net)"),
    "AttentionUnet": dict(
        declared_divisor=_strides, defaults=(("channels", (16, 32, 64, 128, 256)), ("strides", (2, 2, 2, 2))),
        default_sizes=((128, 128, 128),), default_batches=(2,), cpu_sizes=((64, 64, 64),),
        citation="Oktay et al. Attention U-Net: Learning Where to Look for the Pancreas. MIDL 2018"),
    "BasicUNet": dict(
        declared_divisor=lambda hp: 16, default_sizes=((128, 128, 128),), default_batches=(2,),
        cpu_sizes=((64, 64, 64),),
        citation="Falk et al. U-Net: deep learning for cell counting, detection, and morphometry. Nature Methods 16, "
                 "2019 (MONAI's basic U-Net)"),
}


def available() -> bool:
    """Whether MONAI is installed (without importing it)."""
    return importlib.util.find_spec("monai") is not None


def import_monai() -> ModuleType:
    """``monai``, imported without torchvision. MONAI probes torchvision while it is imported
    (``optional_import`` in its networks and losses); the torchvision that nnunetv2's dependencies pull in
    (through timm) is built for another torch than the CPU pin and fails half-way through its import,
    leaving broken modules behind, and segmem needs none of it. So torchvision is marked absent while
    MONAI is imported, as if it were not installed (MONAI's own fallback)."""
    if "monai" in sys.modules or "torchvision" in sys.modules:
        return importlib.import_module("monai")
    sys.modules["torchvision"] = None  # type: ignore[assignment]  # ``import torchvision`` raises ImportError
    try:
        return importlib.import_module("monai")
    finally:
        del sys.modules["torchvision"]


def monai_spec(name: str) -> FactorySpec:
    """The spec of ``monai:<name>``; ValueError saying how to install MONAI, or listing the networks."""
    if not available():
        raise ValueError(f"{PREFIX}{name} needs MONAI: {INSTALL}")
    cls = getattr(import_monai().networks.nets, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"unknown MONAI network {name!r}; known: {', '.join(NETWORKS)} (or any class of "
                         "monai.networks.nets)")
    fields = dict(NETWORKS.get(name, {}))
    fields.setdefault("citation", MONAI_CITATION)
    fields["check_output"] = "declared_divisor" not in fields
    if "declared_divisor" in fields:  # a bottleneck of one voxel cannot be normalised per instance in training
        hp = {k: p.default for k, p in inspect.signature(cls).parameters.items()} | dict(fields.get("defaults", ()))
        fields.setdefault("min_size", 2 * fields["declared_divisor"](hp))
    return factory_spec(f"{PREFIX}{name}", cls, class_arg="out_channels", fixed=(("spatial_dims", 3),),
                        summary=f"MONAI's {name}", **fields)
