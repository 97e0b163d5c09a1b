"""The architecture registry: every module of this package that defines ``SPEC`` (or ``SPECS``) is an
architecture. Adding one means adding one file; nothing else in segmem names architectures.

>>> import architectures
>>> "meunet" in architectures.names()
True
>>> model = architectures.build("unet", in_channels=1, num_classes=3)
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from torch import nn

from .spec import ArchSpec, SampleTensor, Shape, Stage

__all__ = ["ArchSpec", "SampleTensor", "Shape", "Stage", "build", "names", "spec"]

_NOT_ARCHITECTURES = {"spec", "blocks"}


@cache
def _registry() -> dict[str, ArchSpec]:
    found: dict[str, ArchSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_ARCHITECTURES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        specs = getattr(module, "SPECS", ()) + ((module.SPEC,) if hasattr(module, "SPEC") else ())
        for s in specs:
            if s.name in found:
                raise RuntimeError(f"architecture {s.name!r} defined twice")
            found[s.name] = s
    return found


def names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_registry())


def spec(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``name``; ValueError listing the valid names if unknown."""
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(names())}") from None


def build(name: str, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> nn.Module:
    """Build architecture ``name``; ``overrides`` set documented constructor arguments."""
    return spec(name).build(in_channels, num_classes, **overrides)
