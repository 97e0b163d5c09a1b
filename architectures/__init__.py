"""The architecture registry: every module of this package that defines ``SPEC`` (or ``SPECS``) is an
architecture. Adding one means adding one file; nothing else in segmem names architectures.

Beyond the built-in ones, :func:`spec` resolves

- installed packages' specs, registered under the entry-point group ``segmem.architectures`` (an
  entry point names an ``ArchSpec``, a sequence of them, or a module with ``SPEC``/``SPECS``); they
  are listed by :func:`names` and ``bench list``;
- ``monai:<Network>``: MONAI's networks by name (:mod:`architectures.monai_nets`);
- ``nnunet-plans:<configuration>@<plans file>``: the network an nnU-Net plans file names
  (:mod:`architectures.nnunet_plans`);
- ``package.module:attribute``: any factory or ``nn.Module`` class, or an ``ArchSpec``, by import
  path (:mod:`architectures.imported`).

>>> import architectures
>>> "meunet" in architectures.names()
True
>>> model = architectures.build("unet", in_channels=1, num_classes=3)
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from torch import nn

from .spec import ArchSpec, SampleTensor, Shape, Stage

__all__ = ["ArchSpec", "SampleTensor", "Shape", "Stage", "build", "names", "spec"]

_NOT_ARCHITECTURES = {"spec", "blocks", "imported", "monai_nets", "nnunet_plans", "nnunet_planner", "recipe"}
#: the entry-point group through which installed packages register their specs
ENTRY_POINT_GROUP = "segmem.architectures"


def _module_specs(module: ModuleType) -> tuple[ArchSpec, ...]:
    return tuple(getattr(module, "SPECS", ())) + ((module.SPEC,) if hasattr(module, "SPEC") else ())


def _plugin_specs() -> Iterable[ArchSpec]:
    """The specs of installed packages' entry points; one that fails to load is a warning, not a crash."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value}" + (f" of {ep.dist.name}" if ep.dist else "")
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the suite down
            warnings.warn(f"segmem: {where} does not load: {type(exc).__name__}: {exc}", stacklevel=2)
            continue
        specs = _module_specs(obj) if isinstance(obj, ModuleType) else (obj,) if isinstance(obj, ArchSpec) else obj
        try:
            specs = tuple(specs)
        except TypeError:
            specs = (obj,)
        for s in specs:
            if not isinstance(s, ArchSpec):
                warnings.warn(f"segmem: {where} gives a {type(s).__name__}, not an ArchSpec; skipped", stacklevel=2)
                continue
            yield s


@cache
def _registry() -> dict[str, ArchSpec]:
    found: dict[str, ArchSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_ARCHITECTURES or info.name.startswith("_"):
            continue
        for s in _module_specs(importlib.import_module(f"{__name__}.{info.name}")):
            if s.name in found:
                raise RuntimeError(f"architecture {s.name!r} defined twice")
            found[s.name] = s
    for s in _plugin_specs():
        if s.name in found:
            warnings.warn(f"segmem: a package registers architecture {s.name!r}, which exists; skipped", stacklevel=2)
            continue
        found[s.name] = s
    return found


@cache
def _resolve(name: str) -> ArchSpec:
    """A name outside the registry: ``monai:<Network>`` or ``module:attribute`` (once per process, so that a
    probed divisibility is probed once)."""
    from . import nnunet_plans
    from .monai_nets import PREFIX, monai_spec

    if name.startswith(PREFIX):
        return monai_spec(name[len(PREFIX):])
    if name.startswith(nnunet_plans.PREFIX):
        return nnunet_plans.from_name(name)
    from .imported import from_path

    return from_path(name)


def names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_registry())


def spec(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``name`` (a registered name, ``monai:<Network>`` or ``module:attribute``);
    ValueError in one line saying what is wrong (listing the valid names for an unknown one)."""
    if name in _registry():
        return _registry()[name]
    if ":" in name:
        return _resolve(name)
    raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(names())}, monai:<Network> (e.g. "
                     "monai:SwinUNETR) or a network by import path, module:factory (e.g. my_pkg.nets:build)")


def build(name: str, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> nn.Module:
    """Build architecture ``name``; ``overrides`` set documented constructor arguments."""
    return spec(name).build(in_channels, num_classes, **overrides)
