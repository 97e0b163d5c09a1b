"""The memory-budget planner: the largest patch and batch each architecture fits in N GB.

Answers come from a search over GPU-free predictions (:mod:`bench.measure.predict`): peak memory
grows monotonically with the patch's edge and with the batch, so a doubling search followed by a
bisection over multiples of the architecture's divisor finds the largest size that fits the budget, in a
handful of predictions. "Fits" is the one rule of ``bench run --backend predict --gpu-memory`` and of the
``--gpu-memory`` screen (:func:`bench.measure.device.run_device`): the allocator model, cuDNN's
workspaces included, runs at the budget less the CUDA context of the GPU's family (``gpu``; none: the generic
figure of :mod:`bench.measure.device`) and less an optional extra ``margin``, freeing its cache and retrying
as PyTorch does; the figure shown is the nvidia-smi one (``pred_nvidia_smi_bytes``), within the budget exactly
when the step fits. A multi-stage architecture fits when every stage does: its memory is its largest
stage's (:func:`bench.results.stages.combine`, the rule every table uses). Sizes are multiples of what
``bench run`` enforces (:meth:`ArchSpec.size_divisor`). An answer left blank is explained in the ``note``
column (e.g. the smallest allowed size does not fit).

:func:`predicted_peak` (the allocator model's reserved or allocated peak alone) is what ``bench paper`` and
the Dice ranking compare at equal memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import architectures
from architectures import ArchSpec, Shape

from .. import record as R
from ..measure.device import context_bytes, run_device
from ..measure.gpus import lookup
from ..measure.predict import trace
from ..measure.tracker import replay
from ..options import Figure, GiB, choice, format_size
from ..parallel import pmap
from .stages import combine

MemoryFn = Callable[[Shape, int], int]


def box(edge: int, ratio: Sequence[float], divisor: int) -> Shape:
    """The box of aspect ``ratio`` whose *largest* side is ``edge``, each side a multiple of ``divisor``."""
    top = max(ratio)
    return tuple(max(divisor, divisor * round(edge * r / top / divisor)) for r in ratio)  # type: ignore[return-value]


def largest(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 16) -> int | None:
    """The largest integer n >= start with ``fits(n)``, for a monotone ``fits`` (True up to the answer,
    False after); None if even ``start`` does not fit. Doubling, then bisection."""
    if not fits(start):
        return None
    lo = start
    while True:
        if lo * 2 > limit:
            hi = limit + 1  # never evaluated: the search stays within the limit
            break
        if fits(lo * 2):
            lo *= 2
        else:
            hi = lo * 2
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _per_stage(spec: ArchSpec, overrides: dict[str, Any], mode: str, precision: str, in_channels: int,
               num_classes: int, figure: Callable[[ArchSpec, Any, set[int]], int]) -> MemoryFn:
    """size, batch -> ``figure(stage spec, tracker, host tensors)`` of each trained stage's trace, folded by
    :func:`combine` (a cascade's memory is its largest stage's)."""

    def peak(size: Shape, batch: int) -> int:
        stages = spec.train_stages(**overrides) if (mode == "train" and spec.stages) else None
        parts = [(s.spec, dict(s.overrides)) for s in stages] if stages else [(spec, overrides)]
        return int(combine([figure(sp, *trace(sp, ov, size, batch, mode, precision, False, in_channels,
                                              num_classes)[:2]) for sp, ov in parts]))

    return peak


def predicted_peak(spec: ArchSpec, overrides: dict[str, Any], mode: str, precision: str,
                   figure: str = Figure.RESERVED, in_channels: int = 1, num_classes: int = 3) -> MemoryFn:
    """size, batch -> the allocator model's predicted peak bytes (the largest stage's, for cascades)."""
    figure = choice(Figure, figure, "figure")

    def one(sp: ArchSpec, tracker: Any, host: set[int]) -> int:
        alloc = replay(tracker, host, tracker.marks["measured"])
        return alloc.peak_reserved if figure is Figure.RESERVED else alloc.peak_allocated

    return _per_stage(spec, overrides, mode, precision, in_channels, num_classes, one)


def predicted_device(spec: ArchSpec, overrides: dict[str, Any], mode: str, precision: str, gpu_memory: int,
                     gpu: str | None = None, in_channels: int = 1, num_classes: int = 3) -> MemoryFn:
    """size, batch -> the predicted nvidia-smi figure at ``gpu_memory`` bytes on ``gpu`` (a catalogue name; None:
    the generic context), by the rule of ``bench run --backend predict --gpu-memory``: at most ``gpu_memory``
    exactly when the step fits (the largest stage's, for cascades). Allocator settings and CUDA version: this
    process's, as a prediction worker's."""
    import torch

    context = context_bytes(lookup(gpu).name if gpu else None, torch.version.cuda, training=mode == "train")

    def one(sp: ArchSpec, tracker: Any, host: set[int]) -> int:
        return run_device(tracker, host, tracker.marks["measured"], sp.recipe.cudnn_benchmark, context,
                          gpu_memory).nvidia_smi

    return _per_stage(spec, overrides, mode, precision, in_channels, num_classes, one)


@dataclass
class FitResult:
    arch: str
    mode: str
    precision: str
    budget_bytes: int
    batch: int
    edge: int | None  # the largest cube edge at ``batch`` (None: not even the smallest fits)
    edge_bytes: int | None
    box: Shape | None  # the largest box of the asked aspect at ``batch``
    box_bytes: int | None
    batch_size: Shape | None  # the size at which the largest batch was searched
    max_batch: int | None
    max_batch_bytes: int | None
    in_channels: int = 1
    num_classes: int = 3
    notes: list[str] = field(default_factory=list)  # why an answer is blank
    patch: str | None = None  # the largest cube's patch in words (meU-net: standard -> expanded)

    def row(self) -> dict[str, Any]:
        def gb(b: int | None) -> float | None:
            return None if b is None else round(b / GiB, 2)

        return {
            "arch": self.arch, "mode": self.mode, "precision": self.precision, R.IN_CHANNELS: self.in_channels,
            R.NUM_CLASSES: self.num_classes,
            "budget_gib": round(self.budget_bytes / GiB, 2), "batch": self.batch,
            "largest_cube": self.edge, "cube_patch": self.patch, "cube_gib": gb(self.edge_bytes),
            "largest_box": "x".join(map(str, self.box)) if self.box else None, "box_gib": gb(self.box_bytes),
            "batch_at": "x".join(map(str, self.batch_size)) if self.batch_size else None,
            "largest_batch": self.max_batch, "batch_gib": gb(self.max_batch_bytes),
            "note": "; ".join(self.notes) or None,
        }


def fit(
    name: str,
    budget_bytes: int,
    batch: int = 1,
    mode: str = "train",
    precision: str | None = None,
    ratio: Sequence[float] | None = None,
    size: Shape | None = None,
    margin_bytes: int = 0,
    gpu: str | None = None,
    overrides: dict[str, Any] | None = None,
    memory: MemoryFn | None = None,
    max_edge: int = 2048,
    in_channels: int = 1,
    num_classes: int = 3,
) -> FitResult:
    """Largest cube (and box of ``ratio``) at ``batch`` and largest batch at ``size`` (default: the
    architecture's paper patch) that fit ``budget_bytes`` by prediction (:func:`predicted_device` at the
    budget less ``margin_bytes`` on ``gpu``). ``memory`` replaces the prediction (tests use a synthetic
    monotone function)."""
    spec = architectures.spec(name)
    ov = dict(overrides or {})
    precision = precision or spec.run_precision
    mem = memory or predicted_device(spec, ov, mode, precision, budget_bytes - margin_bytes, gpu, in_channels,
                                     num_classes)
    div = spec.size_divisor(mode, **ov)
    first = max(1, -(-max(div, spec.min_size) // div))  # smallest multiple count that is allowed
    cache: dict[tuple[Shape, int], int] = {}

    def cost(s: Shape, b: int) -> int:
        if (s, b) not in cache:
            cache[(s, b)] = mem(s, b) + margin_bytes
        return cache[(s, b)]

    def valid(s: Shape, b: int = batch) -> bool:
        """Allowed by the spec, and traceable (e.g. BatchNorm refuses a 1-voxel bottleneck at batch 1)."""
        try:
            spec.check_size(s, mode, **ov)
            cost(s, b)
            return True
        except (ValueError, RuntimeError):
            return False

    def edge_fits(k: int) -> bool:
        s = (div * k,) * 3
        return valid(s) and cost(s, batch) <= budget_bytes

    first = next((k for k in range(first, first + 4) if valid((div * k,) * 3)), first)
    k = largest(edge_fits, first, max_edge // div)
    edge = None if k is None else div * k
    result = FitResult(name, mode, precision, budget_bytes, batch, edge, cost((edge,) * 3, batch) if edge else None,
                       None, None, None, None, None, in_channels, num_classes)

    def why_not(s: Shape, b: int, what: str) -> str:
        if (s, b) in cache:
            return (f"no {what}: the smallest allowed, {format_size(s)} b{b}, needs "
                    f"{cache[(s, b)] / GiB:.2f} GiB" + (" with the margin" if margin_bytes else ""))
        return f"no {what}: {format_size(s)} b{b}, the smallest allowed, cannot be traced"

    if edge is None:
        result.notes.append(why_not((div * first,) * 3, batch, "cube"))
    else:
        result.patch = spec.patch_label((edge,) * 3, mode, **ov)
    if ratio:
        first_box = next((k for k in range(first, first + 4) if valid(box(div * k, ratio, div))), first)

        def box_fits(k: int) -> bool:
            s = box(div * k, ratio, div)
            return valid(s) and cost(s, batch) <= budget_bytes

        kb = largest(box_fits, first_box, max_edge // div)
        if kb is not None:
            result.box = box(div * kb, ratio, div)
            result.box_bytes = cost(result.box, batch)
        else:
            result.notes.append(why_not(box(div * first_box, ratio, div), batch, "box"))
    at = tuple(size) if size else spec.default_sizes[0]
    result.batch_size = at  # type: ignore[assignment]
    if valid(at, 1):  # type: ignore[arg-type]  (the batch search's first probe, so no extra prediction)
        nb = largest(lambda b: cost(at, b) <= budget_bytes, 1, 4096)  # type: ignore[arg-type]
        result.max_batch = nb
        result.max_batch_bytes = cost(at, nb) if nb else None  # type: ignore[arg-type]
        if nb is None:
            result.notes.append(why_not(at, 1, "batch"))  # type: ignore[arg-type]
    else:
        try:
            spec.check_size(at, mode, **ov)  # type: ignore[arg-type]
            result.notes.append(f"no batch: {format_size(at)} b1 cannot be traced")  # type: ignore[arg-type]
        except ValueError as exc:
            result.notes.append(f"no batch: {exc}")
    return result


def _fit_job(job: tuple[tuple, dict[str, Any]]) -> FitResult | str:
    args, kwargs = job
    try:
        return fit(*args, **kwargs)
    except ValueError as exc:
        return f"{args[0]}: {exc}"


def fit_many(names: Sequence[str], progress: Callable[[str], Any] | None = None, jobs: int | None = None,
             overrides: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> list[FitResult | str]:
    """:func:`fit` for each architecture on ``jobs`` processes (default: every core), in order; an
    architecture that cannot be fitted gives its one-line reason instead of a result."""
    work = [((name,), {**kwargs, "overrides": (overrides or {}).get(name)}) for name in names]
    return pmap(_fit_job, work, jobs, (lambda job: progress(job[0][0])) if progress else None)
