"""A Dice run: train an architecture on a dataset within a budget, segment its test volumes whole by
sliding window, and score them; plus the intensity-threshold baseline on the same volumes.

:func:`dice_record` returns columns for the run's record (the worker adds them to the memory and
throughput it measured for the same configuration), so a smaller footprint is never bought blind:

- ``dataset``, ``train_volumes``/``val_volumes``/``test_volumes``, ``train_budget``,
  ``train_iterations``, ``train_time_s``, ``train_stopped``, ``val_dice_mean_fg`` (best validation);
- ``dice_<class>`` (mean over test volumes), ``dice_mean_fg``, ``dice_per_volume`` (JSON);
- ``threshold_dice_<class>``, ``threshold_dice_mean_fg``: the plain intensity threshold;
- ``infer_volume_shape``, ``infer_tile``, ``infer_weighting``, ``infer_volume_time_s`` (median per test
  volume) and its peak memory: ``infer_volume_peak_allocated_bytes`` on CUDA, or
  ``infer_volume_cpu_live_peak_bytes`` (tracked live tensors) on the CPU.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from architectures import ArchSpec

from .. import record as R
from ..options import format_size
from .data import datasets
from .data.datasets import Dataset
from .dice import ThresholdBaseline, dice_per_class, mean_over_volumes
from .evaluate import inference_tile, labels, mean_foreground, probabilities
from .trainer import TrainConfig, train

#: the default budget of a Dice run, in iterations per stage, so that its Dice does not depend on the machine's
#: speed: on the CPU about 6 minutes of U-net 32^3 batch 4 on 2 cores (where a 1,165-iteration run kept its
#: best weights at iteration 1,000); on CUDA a choice (nnU-Net trains 250,000; the paper stopped early)
CPU_ITERATIONS = 1000
CUDA_ITERATIONS = 20_000


def phantom_shape(data: str) -> tuple[int, int, int] | None:
    """The phantom shape ``data`` names (``phantom``: the default), or None if it names a path."""
    if data != "phantom" and not data.startswith("phantom:"):
        return None
    if ":" not in data:
        return datasets.DEFAULT_SHAPE
    text = data.split(":", 1)[1]
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise datasets.DatasetError(f"phantom size {text!r} must be DxHxW with edges >= 16, e.g. phantom:160x96x96")
    return shape  # type: ignore[return-value]


def open_dataset(data: str) -> Dataset:
    """``phantom`` (the default small phantom), ``phantom:DxHxW`` (e.g. the paper's 1072x470x470), or a path."""
    shape = phantom_shape(data)
    return datasets.phantom_dataset(shape) if shape is not None else datasets.load(data)


def column(name: str) -> str:
    """A class name as a column suffix: ``mid-gut`` -> ``mid_gut``."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def budget(minutes: float | None, iterations: int | None, device: str) -> tuple[float | None, int | None]:
    """(minutes, iterations) per stage: as given, or the default number of iterations for the device. A
    wall-clock budget makes the result depend on the machine's speed; an iteration budget does not."""
    if minutes is None and iterations is None:
        iterations = CUDA_ITERATIONS if device == "cuda" else CPU_ITERATIONS
    return minutes, iterations


def dice_record(
    spec: ArchSpec,
    overrides: dict[str, Any],
    size: tuple[int, int, int],
    batch: int,
    precision: str,
    device: str,
    data: str = "phantom",
    minutes: float | None = None,
    iterations: int | None = None,
    weighting: str = "centre",
    log: Callable[[str], None] | None = None,
    seed: int = 0,
    inferer: str = "segmem",
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Dice columns of one run. With an iteration budget the run is deterministic: seeded initialisation
    and patch sampling, deterministic algorithms (bit-reproducible on the CPU; on CUDA as far as cuDNN
    allows)."""
    dev = torch.device(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    log = log or (lambda _m: None)
    ds = open_dataset(data)
    minutes, iterations = budget(minutes, iterations, device)
    cfg = TrainConfig(patch=size, batch=batch, minutes=minutes, iterations=iterations, precision=precision,
                      weighting=weighting, inferer=inferer, overrides=overrides, seed=seed,
                      recipe_overrides=dict(recipe or {}))  # type: ignore[arg-type]
    names = ds.class_names()
    classes = list(range(ds.num_classes))
    rec: dict[str, Any] = {
        R.DATASET: ds.name,
        R.TRAIN_VOLUMES: len(ds.train), R.VAL_VOLUMES: len(ds.val), R.TEST_VOLUMES: len(ds.test),
    }
    # the threshold baseline first: it is cheap and tells the reader how hard the data is
    base = ThresholdBaseline().fit([v.image for v in ds.train], [v.label for v in ds.train], classes[1:])
    thr = mean_over_volumes([dice_per_class(base.predict(v.image), v.label, classes) for v in ds.test])
    for c in classes[1:]:
        rec[R.threshold_dice_class(column(names.get(c, str(c))))] = thr[c]
    rec[R.THRESHOLD_DICE_MEAN_FG] = mean_foreground(thr)

    model, logs = train(spec, ds, cfg, dev, log)
    rec[R.TRAIN_ITERATIONS] = sum(s.iterations for s in logs)
    rec[R.TRAIN_TIME] = sum(s.seconds for s in logs)
    rec[R.TRAIN_STOPPED] = "; ".join(f"{s.name}: {s.stopped} (best at {s.best_iteration})" for s in logs)
    rec[R.VAL_DICE] = logs[-1].best_val_dice
    last = spec.train_stages(**overrides)[-1]
    tile = inference_tile(last.spec, cfg, last.spec.hparams(**last.overrides), ds.num_classes, ds.in_channels)
    per_volume, times, peaks = [], [], []
    for v in ds.test:
        probs, seconds, peak = _timed_peak(
            lambda v=v: probabilities(lambda x: spec.infer(model, x), v, tile, ds.num_classes, cfg, dev), dev)
        times.append(seconds)
        peaks.append(peak)
        per_volume.append(dice_per_class(labels(probs), v.label, classes))
        log(f"test {v.name}: " + ", ".join(f"{names.get(c, c)} {per_volume[-1][c]:.3f}" for c in classes[1:]))
    mean = mean_over_volumes(per_volume)
    for c in classes[1:]:
        rec[R.dice_class(column(names.get(c, str(c))))] = mean[c]
    rec[R.DICE_MEAN_FG] = mean_foreground(mean)
    rec[R.DICE_PER_VOLUME] = json.dumps({v.name: {names.get(c, str(c)): round(d[c], 4) for c in classes[1:]}
                                         for v, d in zip(ds.test, per_volume)})
    rec[R.INFER_VOLUME_SHAPE] = format_size(ds.test[0].shape)
    rec[R.INFER_TILE] = format_size(tile)
    rec[R.INFER_VOLUME_TIME] = statistics.median(times)
    rec[R.INFER_VOLUME_PEAK_ALLOCATED if dev.type == "cuda" else R.INFER_VOLUME_CPU_LIVE_PEAK] = max(peaks)
    rec[R.DICE_STATUS] = R.OK
    return rec


def _timed_peak(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float, int]:
    """(result, seconds, peak bytes): CUDA allocator peak, or the tracked live-tensor peak on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated()
    from ..measure.tracker import AllocationTracker

    tracker = AllocationTracker()
    t0 = time.perf_counter()
    with tracker:
        out = fn()
    seconds = time.perf_counter() - t0
    peak, _ = tracker.live_peak()
    return out, seconds, peak
