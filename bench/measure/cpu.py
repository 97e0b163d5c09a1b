"""Measure a step on the CPU: tracked live-tensor peak, process RSS increase, wall-clock times.

CPU figures are not GPU figures: no caching allocator, different kernels and workspaces. The
tracked live-tensor peak is the quantity the GPU-free prediction's ``pred_peak_live_bytes`` must
equal, which is how the tracer is checked against real computation.
"""

from __future__ import annotations

import os
import resource
from typing import Any

import psutil
import torch

from .. import parallel
from .. import record as R
from .step import StepRunner
from .timing import settle, timed_steps
from .tracker import AllocationTracker


def pin_threads() -> int:
    """Fix torch's threads for the timed steps (one inter-op thread; intra-op as below); returns the count.

    Intra-op threads: ``$SEGMEM_CPU_THREADS`` if set (a ``--jobs`` slot's share of the cores, see
    :func:`bench.sweep.executor.local_pool`, or the user's), else the cores this process may run on, except on
    a machine already busier than those cores (1-minute load average), where it is one thread: a
    parallel region waits for its slowest thread, and a descheduled one makes step times swing (unet
    32^3 b1 at load 8 on 2 cores: 5.9 s median, 3.7 s interquartile range with 2 threads; 1.2 s and
    0.08 s with 1). The count is recorded (env_cpu_count)."""
    cores = parallel.cores()
    if os.environ.get(parallel.THREADS_ENV):
        n = int(os.environ[parallel.THREADS_ENV])
    else:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        n = 1 if busy >= cores else cores
    torch.set_num_threads(max(1, n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed once inter-op work started (a second measurement in one process)
        pass
    return torch.get_num_threads()


def _rss() -> int:
    return psutil.Process().memory_info().rss


def measure(runner_factory, repeats: int, timed: bool = True) -> tuple[dict[str, Any], StepRunner]:
    """Memory over one tracked step (after a warm-up step), then times: untimed steps until they settle,
    timed steps until their spread is small (at least ``repeats``); see :mod:`bench.measure.timing`.
    ``timed=False``: the memory alone (no time, ``times_s`` empty), for a check of the tracer against a real step,
    where the timing's three or more steps would be most of the cost (about 8 s each for nnU-Net ResEnc at 64^3)."""
    before = torch.get_num_threads()
    threads = pin_threads()
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
    warmup = settle(runner.step) if timed else 0
    times = timed_steps(runner.step, repeats) if timed else []
    torch.set_num_threads(before)  # what follows in the worker (a Dice run's training) is not a timed step
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        R.CPU_LIVE_PEAK: peak,
        R.CPU_RSS_INCREASE: max(0, maxrss - rss0),
        R.ENV_CPU_COUNT: threads,
        R.WARMUP_STEPS: warmup + 2,  # and the tracked warm-up and memory steps
        "times_s": times,
    }, runner
