"""Measure a step on the CPU: tracked live-tensor peak, process RSS increase, wall-clock times.

CPU figures are not GPU figures: no caching allocator, different kernels and workspaces. The
tracked live-tensor peak is the quantity the GPU-free prediction's ``pred_peak_live_bytes`` must
equal, which is how the tracer is checked against real computation.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import psutil

from .. import record as R
from .step import StepRunner
from .tracker import AllocationTracker


def _rss() -> int:
    return psutil.Process().memory_info().rss


def measure(runner_factory, repeats: int) -> tuple[dict[str, Any], StepRunner]:
    rss0 = _rss()
    tracker = AllocationTracker()
    with tracker:
        runner: StepRunner = runner_factory()

        def phase(name: str) -> None:
            if name == "optimizer":
                tracker.label_gradients(runner.model)
            tracker.set_phase(name)

        runner.step(phase)  # warm-up: optimizer state exists afterwards
        tracker.set_phase("setup")
        tracker.mark("measured")
        runner.step(phase)
        host = tracker.host_sids(runner.optimizer)
    peak, _ = tracker.live_peak(tracker.marks["measured"], host)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.step()
        times.append(time.perf_counter() - t0)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        R.CPU_LIVE_PEAK: peak,
        R.CPU_RSS_INCREASE: max(0, maxrss - rss0),
        "times_s": times,
    }, runner
