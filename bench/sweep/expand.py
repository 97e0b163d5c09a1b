"""From command-line options to the list of configurations a sweep runs, validated before any runs.

Validation uses the architectures' own specs (divisibility, stages, override values: a network is
built on the meta device so that its constructor's own message is the one a user sees), so this module
imports :mod:`architectures` and with it torch; the rest of the sweep engine does not.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import architectures
from architectures import Shape

from ..options import Backend, BackendChoice, Mode, Precision, choice, format_size
from .config import RunConfig


def label(cfg: RunConfig) -> str:
    """A configuration's label with its patch named by the spec (``meunet train 160^3 -> 240^3 b4 ...``)."""
    try:
        patch = architectures.spec(cfg.arch).patch_label(cfg.size, cfg.mode, cfg.stage, **cfg.overrides_dict)
    except ValueError:  # an unknown architecture or stage (a record of older code): the size alone
        patch = None
    return cfg.label(patch)


def size_warnings(configs: Sequence[RunConfig]) -> list[str]:
    """What a user must be told about the sizes before a sweep runs (meU-net: a k that had to be rounded)."""
    out = []
    for cfg in configs:
        spec, ov = architectures.spec(cfg.arch).stage(cfg.stage, **cfg.overrides_dict)
        msg = spec.size_warning(cfg.size, spec.hparams(**ov)) if spec.size_warning else None
        if msg:
            stage = f" [{cfg.stage}]" if cfg.stage else ""
            out.append(f"{cfg.arch_label or cfg.arch}{stage} {format_size(cfg.size)}: {msg}")
    return list(dict.fromkeys(out))


def resolve_backend(name: str, instead: str = "cpu or predict") -> Backend:
    """``auto`` -> cuda when a GPU is visible, else cpu; cuda without a GPU is a ValueError, which advises the
    backends ``instead`` (those the command accepts)."""
    import torch

    if choice(BackendChoice, name, "backend") is BackendChoice.AUTO:  # one line naming auto too (--device's path)
        return Backend.CUDA if torch.cuda.is_available() else Backend.CPU
    backend = Backend(name)
    if backend is Backend.CUDA and not torch.cuda.is_available():
        raise ValueError(f"backend cuda asked for, but this machine has no CUDA GPU; use --backend {instead}")
    return backend


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs), so
    that a ``--jobs`` slot can be pinned to one of them."""
    import os

    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named[:n] if named else [str(i) for i in range(n)]


def gpu_memory(text: str, option: str = "--gpu-memory", least: int = 0) -> int:
    """``--gpu-memory`` (or another ``option`` that takes a GPU's memory, e.g. ``bench fit --budget``): a size
    (80GB, 80GiB), a GPU of the catalogue (A100-40GB: its memory) or ``auto``: the smallest visible GPU's memory.
    A size under ``least`` is refused (``bench run``: a GPU smaller than a CUDA context alone, where every
    configuration would be screened out: 1MB typed for 1GB)."""
    from ..measure import gpus
    from ..options import human_bytes, parse_bytes

    if text.strip().lower() != "auto":
        g = gpus.find(text)
        if g is not None:
            return g.memory_bytes
        try:
            size = parse_bytes(text)
        except ValueError as exc:
            raise ValueError(f"{option} {text!r} is neither a size ({exc}) nor a GPU of the catalogue "
                             f"({gpus.known()})") from None
        if size < least:
            raise ValueError(f"{option} {text!r} is {human_bytes(size)}, less than a CUDA context alone "
                             f"({human_bytes(least)} at the least): nothing would fit; give the GPU's whole memory, "
                             "e.g. 24GB")
        return size
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"{option} auto needs a visible CUDA GPU; give a size such as 80GB")
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))


def validated_overrides(spec: architectures.ArchSpec, overrides: dict[str, Any], in_channels: int = 1,
                        num_classes: int = 3) -> dict[str, Any]:
    """``overrides`` as the spec reads them (a flag's word as True/False: ``checkpointing=on`` and ``=true`` are
    one configuration, one key) if ``spec`` builds with them (on the meta device, allocating nothing, or on the
    CPU for a network that computes while it is built); else a ValueError carrying the architecture's own
    message (``expansion must be >= 1``)."""
    hp = spec.hparams(**overrides)
    overrides = {k: hp[k] for k in overrides}
    try:
        spec.param_count(in_channels, num_classes, **overrides)
    except ValueError:
        raise
    except Exception as exc:  # the constructor's own complaint about a value, e.g. a string for a number
        raise ValueError(f"{spec.name}: cannot build with {overrides}: {type(exc).__name__}: {exc}") from None
    return overrides


def split_recipe(overrides: dict[str, Any]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """(architecture overrides, recipe changes): ``recipe.KEY`` overrides, parsed to their values
    (``recipe.clip=none`` -> ``("clip", None)``) and sorted, so that equal changes make equal keys."""
    from architectures.recipe import parse

    prefix = "recipe."
    parsed = tuple(sorted(parse({k[len(prefix):]: v for k, v in overrides.items() if k.startswith(prefix)}).items()))
    return {k: v for k, v in overrides.items() if not k.startswith(prefix)}, parsed


def expand(
    archs: Sequence[str],
    sizes: Sequence[Shape] = (),
    batches: Sequence[int] = (),
    modes: Sequence[str] = (Mode.TRAIN,),
    precisions: Sequence[str] = (),
    backend: str = Backend.CPU,
    checkpointing: bool | None = None,
    channels_last: bool = False,
    overrides: dict[str, Any] | None = None,
    repeats: int = 3,
    dice: dict[str, Any] | None = None,
    in_channels: int = 1,
    num_classes: int = 3,
) -> list[RunConfig]:
    """The cross product, validated before anything runs (ValueError: one line saying what is allowed).

    Empty ``sizes``/``batches``/``precisions`` mean each architecture's defaults (the paper's on CUDA
    and for prediction, small ones on CPU). A multi-stage architecture's training is one config
    per stage; its inference is one config for the whole.

    ``dice`` (the :class:`RunConfig` Dice fields: data, train_minutes, train_iterations, weighting) makes
    every training configuration also a Dice run; a multi-stage architecture trains all its stages in
    the record of its last stage. Without sizes, a CPU Dice run uses the spec's ``cpu_dice`` patch
    and batch (one configuration per architecture, so that it ends in minutes). ``in_channels`` and
    ``num_classes`` are the user's data shape (a Dice run's must be its data's). Overrides named
    ``recipe.KEY`` change the architecture's training recipe (:meth:`architectures.recipe.Recipe.with_overrides`)
    and go to :attr:`RunConfig.recipe`; precision defaults to the recipe's (:attr:`ArchSpec.run_precision`).
    """
    backend = choice(Backend, backend, "backend")
    names = architectures.names() if "all" in archs else list(dict.fromkeys(archs))
    for b in batches:
        if b < 1:
            raise ValueError(f"batch must be >= 1; got {b}")
    modes = [choice(Mode, m, "mode") for m in modes]
    precisions = [choice(Precision, p, "precision") for p in precisions]
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if in_channels < 1:
        raise ValueError(f"--in-channels must be >= 1; got {in_channels}")
    if num_classes < 2:
        raise ValueError(f"--classes must be >= 2 (background and one class); got {num_classes}")
    if dice is not None and not backend.measures:
        raise ValueError("--dice trains and evaluates a network: use --backend cpu or cuda, not predict")
    if dice is not None and Mode.TRAIN not in modes:
        raise ValueError("--dice trains the network: it needs --mode train")
    configs: list[RunConfig] = []
    overrides, recipe = split_recipe(overrides or {})
    for name in names:
        spec = architectures.spec(name)
        ov = dict(overrides)
        if checkpointing is not None:
            if spec.checkpointing is None:
                raise ValueError(f"{name} has no gradient checkpointing option; drop --checkpointing for it")
            ov[spec.checkpointing] = checkpointing
        ov = validated_overrides(spec, ov, in_channels, num_classes)
        gpu_like = backend.gpu_defaults
        arch_sizes = list(sizes) or list(spec.default_sizes if gpu_like else spec.cpu_sizes)
        arch_batches = list(batches) or list(spec.default_batches if gpu_like else spec.cpu_batches)
        if dice is not None and not gpu_like:
            dice_size, dice_batch = spec.cpu_dice or (spec.cpu_sizes[0], max(spec.cpu_batches))
            arch_sizes = list(sizes) or [dice_size]
            arch_batches = list(batches) or [dice_batch]
        arch_precisions = list(precisions) or [spec.run_precision if gpu_like else Precision.FP32]
        for s in [spec] + [st.spec for st in spec.train_stages(**ov)]:
            try:
                s.recipe.with_overrides(recipe)  # a recipe that does not hold together: one line saying why
            except ValueError as exc:
                raise ValueError(f"{s.name}: {exc}") from None
        for size, batch, mode, prec in itertools.product(arch_sizes, arch_batches, modes, arch_precisions):
            spec.check_size(size, mode, **ov)
            spec.check_batch(size, batch, mode, in_channels, num_classes, **ov)
            stages = [s.name for s in spec.train_stages(**ov)] if (mode == Mode.TRAIN and spec.stages) else [""]
            for stage in stages:
                extra = dict(dice=True, **dice) if (dice is not None and mode == Mode.TRAIN and stage == stages[-1]) else {}
                configs.append(RunConfig(name, size, batch, mode, backend, prec, stage,
                                         tuple(sorted(ov.items())), channels_last, repeats, **extra,
                                         in_channels=in_channels, num_classes=num_classes, arch_key=spec.key_name,
                                         recipe=recipe, arch_label=spec.short_name))
    return configs
