"""A fake CUDA backend, so that segmem's CUDA path runs (and is tested) on a machine without a GPU.

Tensors asked for on ``cuda`` are made on the CPU (a ``TorchFunctionMode`` rewrites the device of every
call), and ``torch.cuda``'s memory statistics, events, device properties and NVML answer from what really
happens: every storage allocation and free is tracked (segmem's own :class:`AllocationTracker`), and
``max_memory_allocated`` / ``max_memory_reserved`` since ``reset_peak_memory_stats`` are that event
sequence replayed through the caching-allocator model with cuDNN's convolution workspaces inserted as a
real GPU allocates them through the allocator (:func:`bench.measure.device.replay_device`, following
``torch.backends.cudnn.benchmark``). Going over ``capacity_bytes`` (live tensors) raises
``torch.cuda.OutOfMemoryError`` with CUDA's own wording.

``install()`` patches the running process (for a worker subprocess: ``python -c "import fake_cuda;
fake_cuda.worker()"``); :class:`FakeCuda` used with pytest's ``monkeypatch`` undoes itself.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
import types
from typing import Any

import pynvml
import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode

from bench.measure.tracker import AllocationTracker, replay

NAME = "NVIDIA H100 80GB HBM3 (fake)"
CONTEXT_BYTES = 537 * 2**20


def _is_cuda(x: Any) -> bool:
    return (isinstance(x, str) and x.startswith("cuda")) or (isinstance(x, torch.device) and x.type == "cuda")


class CudaOnCpu(TorchFunctionMode):
    """Every ``device="cuda"`` (and ``.to("cuda")``) becomes the CPU. ``on_host(t)``: whether ``t`` is host memory
    (made before CUDA initialised, so never tracked): its ``.to("cuda")`` then copies, as a real one does, so that the
    copy is the device's allocation."""

    def __init__(self, on_host: Any = lambda t: False) -> None:
        super().__init__()
        self.on_host = on_host

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # code may still ask which device it was given; and Module.to parses its device first (_parse_to): given the
        # CPU, it would call each parameter's .to("cpu"), and a network made on the host ahead of its turn would never
        # be copied to the device (the ahead workers' weights were missing from their peaks)
        if func is torch.device or func is torch._C._nn._parse_to:
            return func(*args, **(kwargs or {}))
        kwargs = kwargs or {}
        to_cuda = any(_is_cuda(a) for a in (*args[1:], *kwargs.values()))
        kwargs = {k: ("cpu" if _is_cuda(v) else v) for k, v in kwargs.items()}
        args = tuple("cpu" if _is_cuda(a) else a for a in args)
        if to_cuda and func is torch.Tensor.to and self.on_host(args[0]):
            kwargs["copy"] = True
        return func(*args, **kwargs)


class CapacityTracker(AllocationTracker):
    """The allocation tracker, failing as CUDA does past the device's capacity. It tracks from CUDA's
    initialisation on (``torch.cuda.init``): what a process makes before is host memory (a measuring worker's network
    and batch made ahead of its turn), which reaches the device as a copy (:class:`CudaOnCpu`)."""

    capacity_bytes: int = 80 * 2**30
    live_bytes: int = 0
    initialised: bool = False

    def on_host(self, t: torch.Tensor) -> bool:
        return isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in self._live

    def see(self, t: torch.Tensor) -> None:
        if isinstance(t, FakeTensor) or t.device.type == "meta":  # a prediction's tensors hold no device memory
            return
        if not self.initialised:
            return
        before = len(self.events)
        super().see(t)
        if len(self.events) > before:
            n = self.events[-1].nbytes
            if self.live_bytes + n > self.capacity_bytes:
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {n / 2**20:.2f} MiB. GPU 0 has a total capacity of "
                    f"{self.capacity_bytes / 2**30:.2f} GiB (fake)")
            self.live_bytes += n

    def _freer(self, key, sid, nbytes):
        inner = super()._freer(key, sid, nbytes)

        def on_free(ref) -> None:
            self.live_bytes -= nbytes
            inner(ref)

        return on_free


class FakeEvent:
    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.t - self.t) * 1000


class FakeCuda:
    """The fake device: its patches (``patches()``) and the modes that run ``cuda`` tensors on the CPU."""

    def __init__(self, capacity_bytes: int = 80 * 2**30) -> None:
        self.tracker = CapacityTracker()
        self.tracker.capacity_bytes = capacity_bytes
        self.capacity_bytes = capacity_bytes
        self.tracker.mark("reset")
        self.recorded_from = 0
        self.modes = (CudaOnCpu(self.tracker.on_host), self.tracker)

    # ----- torch.cuda -----------------------------------------------------------------------------
    def init(self) -> None:
        """``torch.cuda.init``: from here on, tensors are the device's."""
        self.tracker.initialised = True

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.tracker.mark("reset")

    def _device(self):  # noqa: ANN202
        from bench.measure.device import replay_device

        return replay_device(self.tracker, set(), self.tracker.marks["reset"], torch.backends.cudnn.benchmark).model

    def max_memory_allocated(self, device: Any = None) -> int:
        return self._device().peak_allocated

    def max_memory_reserved(self, device: Any = None) -> int:
        return self._device().peak_reserved

    def memory_reserved(self, device: Any = None) -> int:
        return replay(self.tracker, set(), len(self.tracker.events)).reserved

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        return self.capacity_bytes - self.memory_reserved(), self.capacity_bytes

    def properties(self, device: Any = None) -> types.SimpleNamespace:
        return types.SimpleNamespace(name=NAME, total_memory=self.capacity_bytes, major=9, minor=0)

    # ----- NVML: this process holds its context plus what the allocator reserved --------------------
    def nvml_processes(self, handle: Any) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=CONTEXT_BYTES + self.memory_reserved())]

    # ----- memory history: PyTorch's snapshot format, built from the tracked events ------------------
    def record_memory_history(self, enabled: Any = "all", *args: Any, **kwargs: Any) -> None:
        self.recording = enabled is not None
        self.recorded_from = len(self.tracker.events)  # as the real one, the trace holds what comes after

    def snapshot(self, device: Any = None) -> dict:
        """``torch.cuda.memory._snapshot()``: the tracked events through the allocator model (the
        settings of this process's ``PYTORCH_CUDA_ALLOC_CONF``), segments and device trace."""
        from bench.measure import snapshot
        from bench.measure.allocator import AllocatorSettings
        from bench.measure.device import Workspaces

        data = snapshot.build(self.tracker, settings=AllocatorSettings.from_env(), label="fake cuda",
                              before=Workspaces(self.tracker, torch.backends.cudnn.benchmark))
        data.pop(snapshot.OWN)  # the real one carries no key of segmem's (trace2events takes only a GPU's)
        if not getattr(self, "recording", False):
            data["device_traces"] = [[]]
        data["device_traces"] = [[e for e in data["device_traces"][0] if e["time_us"] >= self.recorded_from]]
        return data

    def patches(self) -> list[tuple[Any, str, Any]]:
        noop = lambda *a, **k: None  # noqa: E731
        return [
            (torch.cuda, "is_available", lambda: True), (torch.cuda, "init", self.init), (torch.cuda, "synchronize", noop),
            (torch.cuda, "device_count", lambda: 1), (torch.cuda, "current_device", lambda: 0),
            (torch.cuda, "get_device_name", lambda device=None: NAME),
            (torch.cuda, "get_device_properties", self.properties),
            (torch.cuda, "reset_peak_memory_stats", self.reset_peak_memory_stats),
            (torch.cuda, "max_memory_allocated", self.max_memory_allocated),
            (torch.cuda, "max_memory_reserved", self.max_memory_reserved),
            (torch.cuda, "memory_reserved", self.memory_reserved),
            (torch.cuda, "mem_get_info", self.mem_get_info), (torch.cuda, "Event", FakeEvent),
            (torch.cuda.memory, "_record_memory_history", self.record_memory_history),
            (torch.cuda.memory, "_snapshot", self.snapshot),
            (torch.backends.cudnn, "version", lambda: 91002),
            (pynvml, "nvmlInit", noop), (pynvml, "nvmlDeviceGetHandleByIndex", lambda i: ("gpu", i)),
            (pynvml, "nvmlDeviceGetComputeRunningProcesses", self.nvml_processes),
            (pynvml, "nvmlSystemGetDriverVersion", lambda: "575.57.08 (fake)"),
        ]

    def enter(self) -> None:
        for m in self.modes:
            m.__enter__()

    def exit(self) -> None:
        for m in reversed(self.modes):
            m.__exit__(None, None, None)


def install(capacity_bytes: int | None = None) -> FakeCuda:
    """Patch this process for good (a worker subprocess)."""
    fake = FakeCuda(capacity_bytes or int(os.environ.get("FAKE_CUDA_CAPACITY_BYTES", 80 * 2**30)))
    for obj, name, value in fake.patches():
        setattr(obj, name, value)
    fake.enter()
    return fake


def worker() -> None:
    """``bench.sweep.worker`` on the fake device."""
    install()
    sys.argv = ["bench.sweep.worker"]
    runpy.run_module("bench.sweep.worker", run_name="__main__")


#: the worker command line that runs on the fake device (``LocalExecutor(command=...)`` or the
#: executor's ``WORKER`` default, which the CLI uses)
WORKER = ("-c", f"import sys; sys.path.append({os.path.dirname(os.path.abspath(__file__))!r}); "
                "import fake_cuda; fake_cuda.worker()")
