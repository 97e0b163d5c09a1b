"""Step times: how a CPU step is timed so that the figure is stable (warm up until settled, repeat
until the spread is small), and the statistics and throughputs derived from the times.

Why adaptive: a CPU step's first runs pay for oneDNN's kernel selection, page faults and caches, and a
shared machine adds noise, so a fixed "1 warm-up + 3 repeats" gave 4.26 s in one run and 0.61 s in the
next for the same configuration. Warming up until two successive steps agree, and repeating until the
interquartile range is a small fraction of the median, makes the median reproducible, and the spread
recorded beside it says how far it can be trusted.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import record as R

#: warm-up ends when two successive untimed steps differ by less than this fraction
SETTLE_TOLERANCE = 0.10
#: timing ends when the interquartile range is below this fraction of the median (after MIN_FOR_SPREAD steps)
TARGET_SPREAD = 0.05
MIN_FOR_SPREAD = 5
#: environment variable: seconds a configuration's timing may take on the CPU (warm-up and timed steps
#: each; default 60); the test suite sets it low, a careful user may raise it
BUDGET_ENV = "SEGMEM_CPU_TIME_BUDGET_S"


def budget() -> float:
    return float(os.environ.get(BUDGET_ENV) or 60.0)


def settle(step: Callable[[], Any], tolerance: float = SETTLE_TOLERANCE, max_steps: int = 8,
           budget_s: float | None = None, clock: Callable[[], float] = time.perf_counter) -> int:
    """Run untimed steps until two successive ones agree within ``tolerance`` (at most ``max_steps``, or
    ``budget_s`` seconds: :func:`budget`); returns how many ran."""
    budget_s = budget() if budget_s is None else budget_s
    last, started = None, clock()
    for n in range(1, max_steps + 1):
        t0 = clock()
        step()
        t = clock() - t0
        if last is not None and (abs(t - last) <= tolerance * max(t, last) or clock() - started >= budget_s):
            return n
        last = t
    return max_steps


def spread(times_s: Sequence[float]) -> float:
    """Interquartile range over median (0 for fewer than two times)."""
    if len(times_s) < 2:
        return 0.0
    q = statistics.quantiles(times_s, n=4)
    med = statistics.median(times_s)
    return (q[2] - q[0]) / med if med > 0 else 0.0


def timed_steps(step: Callable[[], Any], min_repeats: int, max_repeats: int = 30, target: float = TARGET_SPREAD,
                budget_s: float | None = None, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Time steps until the spread (:func:`spread`) is below ``target`` over at least
    ``max(min_repeats, MIN_FOR_SPREAD)`` steps, or ``max_repeats`` steps or ``budget_s`` seconds
    (:func:`budget`) have been spent (never fewer than ``min_repeats``)."""
    budget_s = budget() if budget_s is None else budget_s
    times: list[float] = []
    started = clock()
    while True:
        t0 = clock()
        step()
        times.append(clock() - t0)
        n = len(times)
        if n < min_repeats:
            continue
        if n >= max_repeats or clock() - started >= budget_s:
            return times
        if n >= max(min_repeats, MIN_FOR_SPREAD) and spread(times) <= target:
            return times


def summarize(times_s: Sequence[float], labelled_voxels: int, input_voxels: int, samples: int, flops: int | None,
              peak_flops_per_s: float | None) -> dict[str, Any]:
    """The time columns of a record: median, min, max, IQR and spread, and the throughputs (:func:`throughputs`)."""
    med = statistics.median(times_s)
    q = statistics.quantiles(times_s, n=4) if len(times_s) >= 2 else [med, med, med]
    return {
        R.STEP_TIME_MEDIAN: med,
        R.STEP_TIME_MIN: min(times_s),
        R.STEP_TIME_MAX: max(times_s),
        R.STEP_TIME_IQR: q[2] - q[0],
        R.STEP_TIME_SPREAD: spread(times_s),
        R.REPEATS: len(times_s),
        **throughputs(med, labelled_voxels, input_voxels, samples, flops, peak_flops_per_s),
    }


def throughputs(median_s: float, labelled_voxels: int, input_voxels: int, samples: int, flops: int | None,
                peak_flops_per_s: float | None) -> dict[str, Any]:
    """The throughput columns of a median step time: labelled full-resolution voxels per second (the one to
    compare), input voxels and samples per second beside it, and the FLOP rate against the GPU's peak. A record
    that takes another configuration's measurement (``measured_as``) has them again for its own voxels."""
    ok = median_s is not None and median_s > 0
    achieved = flops / median_s if (flops and ok) else None
    return {
        R.THROUGHPUT_VOXELS: labelled_voxels / median_s if ok else None,
        R.THROUGHPUT_INPUT_VOXELS: input_voxels / median_s if ok else None,
        R.THROUGHPUT_SAMPLES: samples / median_s if ok else None,
        R.ACHIEVED_FLOPS: achieved,
        R.PEAK_FLOPS: peak_flops_per_s,
        R.FLOPS_FRACTION: achieved / peak_flops_per_s if (peak_flops_per_s and achieved) else None,
    }
