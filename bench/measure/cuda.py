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
import threading
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


def measure(runner_factory, repeats: int, cudnn_benchmark: bool = False) -> tuple[dict[str, Any], StepRunner]:
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.cuda.init()
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    sampler = NvmlSampler(torch.cuda.current_device())
    context = sampler.read()
    runner: StepRunner = runner_factory()
    runner.step()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with sampler:
        runner.step()
        torch.cuda.synchronize()
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
    rec["times_s"] = times
    return rec, runner
