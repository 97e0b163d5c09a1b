"""Measure a step on a CUDA GPU: allocator peaks, NVML device peak, CUDA-event step times.

- ``peak_allocated_bytes`` / ``peak_reserved_bytes``: ``torch.cuda.max_memory_allocated`` /
  ``max_memory_reserved`` over the measured step, after ``reset_peak_memory_stats`` (a warm-up step
  before, so that Adam's state and cuDNN's choices exist);
- ``nvml_peak_bytes``: this process's device memory as NVML reports it, sampled every millisecond
  during the measured step (context, cuDNN/cuBLAS workspaces and allocator cache included);
- ``cuda_context_bytes``: what NVML reports for the process right after CUDA initialises, before
  the model exists;
- step times by CUDA events after warm-up.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .. import record as R
from .step import StepRunner


class NvmlSampler:
    """Samples this process's used device memory (NVML) on a background thread."""

    def __init__(self, index: int = 0, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # NVML absent (driver without it, container): no device-level figure
            self._nvml = None

    def read(self) -> int | None:
        if self._nvml is None:
            return None
        pid = os.getpid()
        try:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return int(p.usedGpuMemory)
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        except Exception:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self.read()
            if v is not None:
                self.peak = max(self.peak, v)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> NvmlSampler:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        v = self.read()
        if v is not None:
            self.peak = max(self.peak, v)


def measure(runner_factory, repeats: int, cudnn_benchmark: bool = False,
            snapshot_to: Path | None = None) -> tuple[dict[str, Any], StepRunner]:
    """The CUDA columns and times of one configuration; ``snapshot_to``: also record the allocator's
    history from before the model exists to the end of the measured step, and write its
    ``torch.cuda.memory._snapshot()`` pickle there (a real trace: ``bench replay`` reads it)."""
    clock = Phases()
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.cuda.init()
    if snapshot_to is not None:
        # before the first allocation, so that the trace covers the whole run (its replay starts from an empty
        # allocator). Python frames only: C++ frames cost an unwind per allocation and a symbolisation pass in
        # _snapshot() that can take minutes, and nothing here reads them
        torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    sampler = NvmlSampler(torch.cuda.current_device())
    context = sampler.read()
    clock.lap("init")
    runner: StepRunner = runner_factory()
    torch.cuda.synchronize()
    clock.lap("build")
    runner.step()  # warm-up
    torch.cuda.synchronize()
    clock.lap("warmup")
    torch.cuda.reset_peak_memory_stats()
    with sampler:
        runner.step()
        torch.cuda.synchronize()
    clock.lap("memory_step")
    if snapshot_to is not None:
        with open(snapshot_to, "wb") as f:
            pickle.dump(torch.cuda.memory._snapshot(), f)
        torch.cuda.memory._record_memory_history(enabled=None)
    clock.lap("snapshot")
    rec: dict[str, Any] = {
        R.PEAK_ALLOCATED: torch.cuda.max_memory_allocated(),
        R.PEAK_RESERVED: torch.cuda.max_memory_reserved(),
        R.NVML_PEAK: sampler.peak or None,
        R.CUDA_CONTEXT: context,
        R.WARMUP_STEPS: 2,  # the warm-up step and the memory step (CUDA-event times are stable after them)
    }
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runner.step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    clock.lap("timed_steps")
    rec["times_s"] = times
    rec[R.CUDA_PHASES] = clock.laps
    return rec, runner


class Phases:
    """Seconds between successive :meth:`lap` calls, by phase name (``R.CUDA_PHASE_NAMES``): where a
    measuring worker's time goes, so that a GPU run says what to speed up."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 4)
        self._t = now
