"""nnU-Net plans in: the network, patch and batch an nnU-Net plans file names for one configuration.

``bench run --arch nnunet --plans nnUNetResEncUNetLPlans.json --configuration 3d_fullres`` runs exactly
what nnU-Net would train: the network class the plans name (PlainConvUNet, ResidualEncoderUNet, ...)
built by nnunetv2's ``get_network_from_plans`` with the configuration's ``arch_kwargs`` (resolved by
nnunetv2's ``PlansManager``, so ``inherits_from`` works as in nnU-Net), at the configuration's
``patch_size`` and ``batch_size`` unless a run names others. Input channels and classes come from the
``dataset.json`` beside the plans file (nnU-Net's preprocessed folder has it there; ``bench plan``
writes it there) when present. ``3d_cascade_fullres`` takes the image plus the one-hot foreground of
the previous stage (``len(foreground labels)`` extra input channels, as nnU-Net's
``determine_num_input_channels``); its previous stage ``3d_lowres`` is its own configuration, run at its
own planned patch and batch.

How the engine sees it: a plans configuration is an :class:`~architectures.spec.ArchSpec` named
``nnunet-plans:<configuration>@<absolute path>`` (:func:`spec_name`), which :func:`architectures.spec`
resolves in any process (a sweep's worker rebuilds it from the name, as it does a network by import
path). Its ``key_name`` puts the file's SHA-256 in place of the path, so the configuration's key
follows the plans' content, not where the file lies; its ``short_name`` (:func:`short_name`,
``nnunet-plans:3d_fullres@nnUNetPlans#3f9a2c``: the file's stem and the digest's first characters) is what
the console, report tables and plots show. Its divisor is per axis: the product of the
configuration's strides on each axis (e.g. 32x16x16 for an elongated plan's 224x112x96 patch).

Python API (what ``bench plan`` / ``bench run --plans`` use)::

    plans = load_plans("plans.json")            # or a dict, e.g. nnunet_planner.plan(...)
    conf = configuration(plans, "3d_fullres")    # patch, batch, network class, strides, divisors
    net = build_network(plans, "3d_fullres", in_channels=1, num_classes=3)
    spec = plans_spec(plans, "3d_fullres")       # an ArchSpec (a dict is cached to a file by content)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

from .recipe import nnunet as nnunet_recipe
from .spec import ArchSpec, Shape, standard_layout

#: the prefix of a plans configuration's architecture name
PREFIX = "nnunet-plans:"
#: the configurations a plans file may name that segmem can run (3D ones)
CASCADE = "3d_cascade_fullres"
CITATION = ("Isensee et al., nnU-Net (Nature Methods 2021) and nnU-Net Revisited (MICCAI 2024): "
            "the network an nnU-Net plans file names, built by nnunetv2")


@dataclass(frozen=True)
class Configuration:
    """One configuration of a plans file, as nnunetv2 resolves it."""

    name: str
    network_class: str
    arch_kwargs: Mapping[str, Any]
    kw_requires_import: tuple[str, ...]
    patch: tuple[int, ...]
    batch: int
    strides: tuple[tuple[int, ...], ...]
    previous_stage: str | None
    batch_dice: bool = True  # the plans' choice for nnU-Net's Dice loss (ConfigurationManager.batch_dice)

    @property
    def divisors(self) -> tuple[int, ...]:
        """Per axis, the product of the strides: what every patch edge must be a multiple of."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(len(self.patch)))

    @property
    def class_name(self) -> str:
        return self.network_class.rsplit(".", 1)[-1]


def load_plans(plans: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The plans dict of a file (or a dict, checked); ValueError in one line when it is not nnU-Net plans."""
    if isinstance(plans, Mapping):
        data: Any = dict(plans)
        where = "the plans dict"
    else:
        path = Path(plans)
        where = str(path)
        if not path.is_file():
            raise ValueError(f"{path}: {'a folder, not a' if path.is_dir() else 'no such'} plans file")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not an nnU-Net plans file: not JSON ({exc})") from None
    confs = data.get("configurations") if isinstance(data, dict) else None
    if not isinstance(confs, dict) or not confs or "plans_name" not in data:
        raise ValueError(f"{where}: not an nnU-Net plans file (no plans_name and configurations; "
                         "`bench plan` writes one, nnU-Net keeps them in nnUNet_preprocessed/<dataset>/)")
    return data


def configuration(plans: str | Path | Mapping[str, Any], name: str) -> Configuration:
    """Configuration ``name`` of ``plans`` (nnunetv2's ``PlansManager`` resolves ``inherits_from``);
    ValueError listing the configurations the plans have when it is not one of them, or is 2D."""
    data = load_plans(plans)
    have = list(data["configurations"])
    if name not in have:
        raise ValueError(f"the plans have no configuration {name!r}; they have: {', '.join(have)}")
    conf = _resolve(data, name)
    if len(conf.patch) != 3:
        three = [c for c in have if _is_3d(data, c)]
        raise ValueError(f"configuration {name!r} is {len(conf.patch)}D; segmem runs 3D networks: "
                         f"{', '.join(three) or 'the plans have none'}")
    return conf


def _resolve(data: Mapping[str, Any], name: str) -> Configuration:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        cm = PlansManager(dict(data)).get_configuration(name)
        kwargs = dict(cm.network_arch_init_kwargs)
        return Configuration(
            name, cm.network_arch_class_name, kwargs, tuple(cm.network_arch_init_kwargs_req_import),
            tuple(int(x) for x in cm.patch_size), int(cm.batch_size),
            tuple(tuple(int(x) for x in s) for s in kwargs.get("strides", cm.pool_op_kernel_sizes)),
            cm.previous_stage_name, bool(cm.batch_dice))
    except (KeyError, TypeError, AssertionError) as exc:
        raise ValueError(f"configuration {name!r} of the plans is incomplete: {type(exc).__name__}: {exc}") from None


def _is_3d(data: Mapping[str, Any], name: str) -> bool:
    try:
        return len(_resolve(data, name).patch) == 3
    except ValueError:
        return False


def three_d_configurations(plans: str | Path | Mapping[str, Any]) -> list[str]:
    """The plans' 3D configuration names, in the plans' order."""
    data = load_plans(plans)
    return [c for c in data["configurations"] if _is_3d(data, c)]


def build_network(plans: str | Path | Mapping[str, Any], name: str, in_channels: int = 1, num_classes: int = 3,
                  deep_supervision: bool = True) -> nn.Module:
    """The network of configuration ``name``: nnunetv2's ``get_network_from_plans`` with the plans' class
    and arch kwargs. ``in_channels`` are the image's: a cascade stage's one-hot inputs are added here."""
    return _network(configuration(plans, name), in_channels, num_classes, deep_supervision)


def _network(conf: Configuration, in_channels: int, num_classes: int, deep_supervision: bool) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from .nnunet import PreConcat

    extra = num_classes - 1 if conf.previous_stage else 0  # nnU-Net: + len(foreground labels)
    net = get_network_from_plans(conf.network_class, dict(conf.arch_kwargs), conf.kw_requires_import,
                                 in_channels + extra, num_classes, allow_init=True, deep_supervision=deep_supervision)
    return PreConcat(net) if extra else net


def data_shape(plans_file: str | Path) -> tuple[int, int] | None:
    """(input channels, classes) from the ``dataset.json`` beside a plans file, or None when there is none."""
    ds = Path(plans_file).with_name("dataset.json")
    if not ds.is_file():
        return None
    try:
        d = json.loads(ds.read_text())
        chans = d.get("channel_names", d.get("modality"))
        return len(chans), len(d["labels"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


def digest(path: str | Path) -> str:
    """The plans file's SHA-256 (hex), what a configuration's key holds instead of its path."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def short_name(configuration: str, path: str | Path) -> str:
    """``nnunet-plans:<configuration>@<file stem>#<first 6 hex of the digest>``: the plans file as a person knows
    it, and which content (two datasets' nnUNetPlans.json differ there), without the folder."""
    return f"{PREFIX}{configuration}@{Path(path).stem}#{digest(path)[:6]}"


def cache_dir() -> Path:
    """Where a plans dict is written so that a worker can rebuild its spec: ``$SEGMEM_CACHE/plans`` or
    ``~/.cache/segmem/plans``."""
    return Path(os.environ.get("SEGMEM_CACHE", Path.home() / ".cache" / "segmem")) / "plans"


def save(plans: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Write ``plans`` as nnU-Net does (indented JSON) to ``path``, or to the cache by content digest."""
    text = json.dumps(load_plans(plans), indent=4)
    if path is None:
        path = cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def spec_name(plans_file: str | Path, name: str) -> str:
    """The architecture name of configuration ``name`` of a plans file (absolute path)."""
    return f"{PREFIX}{name}@{Path(plans_file).resolve()}"


def plans_spec(plans: str | Path | Mapping[str, Any], name: str) -> ArchSpec:
    """The :class:`ArchSpec` of configuration ``name`` (a plans dict is saved to the cache first)."""
    path = save(plans) if isinstance(plans, Mapping) else Path(plans)
    return from_name(spec_name(path, name))


@dataclass(frozen=True)
class PlansSpec(ArchSpec):
    """A plans configuration's spec: an :class:`ArchSpec` whose size errors name where the divisors come from."""

    strides: tuple[tuple[int, ...], ...] = ()

    def check_size(self, size: Shape, mode: str = "train", **overrides: Any) -> None:
        try:
            super().check_size(size, mode, **overrides)
        except ValueError as exc:
            strides = " ".join("x".join(map(str, s)) for s in self.strides)
            raise ValueError(f"{exc} (the products of the plan's strides per axis: {strides})") from None


@cache
def from_name(arch: str) -> ArchSpec:
    """The spec of ``nnunet-plans:<configuration>@<path>`` (what :func:`architectures.spec` calls)."""
    name, sep, path = arch[len(PREFIX):].partition("@")
    if not sep or not name or not path:
        raise ValueError(f"{arch!r}: a plans configuration is {PREFIX}<configuration>@<plans file>")
    conf = configuration(path, name)
    divisors = conf.divisors

    def build(in_channels: int = 1, num_classes: int = 3, deep_supervision: bool = False) -> nn.Module:
        """nnU-Net's network for this configuration (nnU-Net's recipe switches deep supervision on for training)."""
        return _network(conf, in_channels, num_classes, deep_supervision)

    layout = standard_layout
    if conf.previous_stage:
        from .nnunet_cascade import foreground_prior_layout as layout  # image, label, one-hot prior
    patch = conf.patch
    return PlansSpec(
        name=arch,
        summary=f"{conf.class_name}, nnU-Net configuration {name} of {Path(path).name} ({'x'.join(map(str, patch))} "
                f"b{conf.batch})",
        citation=CITATION,
        builder=build,
        divisor=divisors,  # type: ignore[arg-type]
        min_size=1,
        default_sizes=(patch,),  # type: ignore[arg-type]
        default_batches=(conf.batch,),
        cpu_sizes=(patch,),  # type: ignore[arg-type]
        cpu_batches=(conf.batch,),
        recipe=nnunet_recipe(batch_dice=conf.batch_dice),  # nnU-Net's trainer: SGD, DC+CE, deep supervision, AMP
        size_meaning=f"patch (nnU-Net {name}, planned {'x'.join(map(str, patch))})",
        layout=layout,
        key_name=f"{PREFIX}{name}@sha256:{digest(path)[:16]}",
        short_name=short_name(name, path),
        strides=conf.strides,
    )


#: the built-in nnU-Net architectures whose name ``--plans`` accepts: the plans then say which network it is
FAMILY = ("nnunet", "nnunet_resenc", "nnunet_cascade")


def run_archs(plans_file: str | Path, archs: list[str] | None, configurations: list[str] | None) -> list[str]:
    """The architecture names ``bench run --plans FILE [--arch A] [--configuration C]`` runs: each named
    configuration; without one, ``3d_fullres``, or for ``--arch nnunet_cascade`` nnU-Net's cascade as
    planned (``3d_lowres`` at its own patch and batch, then ``3d_cascade_fullres``). ValueError in one line."""
    data = load_plans(plans_file)
    other = [a for a in archs or [] if a not in FAMILY]
    if other:
        raise ValueError(f"--plans builds the network the plans name: use --arch {' or '.join(FAMILY)} (or no --arch); "
                         f"got {', '.join(other)}")
    if configurations and "nnunet_cascade" in (archs or []):
        raise ValueError("--arch nnunet_cascade --plans runs the cascade the plans name (its 3d_lowres, then "
                         f"{CASCADE}): leave --configuration out, or leave --arch nnunet_cascade out to run "
                         f"{', '.join(configurations)} alone")
    if not configurations:
        if "nnunet_cascade" in (archs or []):
            if CASCADE not in data["configurations"]:
                raise ValueError(f"the plans have no {CASCADE} (nnU-Net plans a cascade only where the 3d_fullres patch "
                                 "covers less than a quarter of the median image); they have: "
                                 f"{', '.join(data['configurations'])}")
            configurations = [_previous(data, CASCADE) or "3d_lowres", CASCADE]
        else:
            configurations = ["3d_fullres"]
    for c in configurations:
        configuration(data, c)  # the one-line error of a configuration the plans lack
    return [spec_name(plans_file, c) for c in dict.fromkeys(configurations)]


def _previous(data: Mapping[str, Any], name: str) -> str | None:
    try:
        return _resolve(data, name).previous_stage
    except ValueError:
        return None


def describe(plans: str | Path | Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per 3D configuration: what ``bench plan`` prints (patch, batch, network class, stages,
    per-axis divisors, spacing, median image size, previous stage)."""
    data = load_plans(plans)
    rows = []
    for name in three_d_configurations(data):
        c = configuration(data, name)
        raw = data["configurations"][name]
        parent = data["configurations"].get(raw.get("inherits_from", ""), {})
        rows.append({"configuration": name, "patch": "x".join(map(str, c.patch)), "batch": c.batch,
                     "network": c.class_name, "stages": len(c.strides), "divisors": "x".join(map(str, c.divisors)),
                     "spacing": "x".join(f"{s:.4g}" for s in raw.get("spacing", parent.get("spacing", []))),
                     "median_image": "x".join(str(round(s)) for s in raw.get("median_image_size_in_voxels",
                                                                           parent.get("median_image_size_in_voxels", []))),
                     "previous_stage": c.previous_stage or ""})
    return rows
