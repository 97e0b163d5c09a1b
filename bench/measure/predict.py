"""Predict CUDA's peak memory of a step without a GPU, in seconds, allocating nothing of that size.

The exact step that :mod:`bench.measure.cuda` measures (same :class:`bench.step.StepRunner`: build,
a warm-up step so that Adam's state exists, then the measured step) is traced on fake tensors
(``FakeTensorMode``, CPU device). :class:`bench.measure.tracker.AllocationTracker` records every
storage's allocation and free in order; CUDA autocast is emulated
(:mod:`bench.measure.autocast`); the sequence is replayed through
:class:`bench.measure.allocator.CachingAllocatorModel`, with the peak reset where the measured step
starts (as ``torch.cuda.reset_peak_memory_stats``). The result gives:

- ``pred_peak_allocated_bytes`` / ``pred_peak_reserved_bytes``: the allocator model's peaks;
- ``pred_peak_live_bytes``: the peak of live tensor bytes without allocator rounding (what a CPU
  run's tracked peak measures);
- ``pred_<category>_bytes``: live bytes per category at the peak;
- ``memtracker_peak_bytes``: torch's ``MemTracker`` on the same traced step, the reference to beat
  (None where MemTracker cannot track the step, e.g. a module called twice per step as meU-net's
  shared backbone is);
- ``flops_per_step``: ``torch.utils.flop_counter`` over the measured step (forward and backward);
- ``pred_work``: the same trace's operators as roofline work (:mod:`bench.measure.roofline`), and with
  a GPU, ``pred_step_time_s`` and the predicted throughput on it.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd.graph import register_multi_grad_hook
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.module_tracker import ModuleTracker

from architectures import ArchSpec, Shape

from .. import record as R
from .allocator import AllocatorOOM, AllocatorSettings
from .autocast import EmulatedCudaAutocast
from .device import Workspaces, context_bytes, run_device
from .gpus import GPU
from .roofline import Work, WorkCounter, step_time, work_to_json
from .snapshot import build, deepest, write
from .step import DTYPES, StepRunner
from .tracker import CATEGORIES, AllocationTracker, replay


class TracedScaler:
    """GradScaler's memory-relevant behaviour for tracing: the loss is multiplied by the scale and
    the optimizer steps (the real scaler's inf checks are data-dependent and cost a few bytes)."""

    def __init__(self, scale: float = 65536.0) -> None:
        self.scale_value = scale

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients divided by the scale in place, as ``GradScaler.unscale_`` does (before clipping)."""
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / self.scale_value)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def update(self) -> None:
        pass


@contextlib.contextmanager
def fake_step(precision: str, *modes: Any) -> Iterator[EmulatedCudaAutocast | None]:
    """FakeTensorMode (plus ``modes`` on top of it) and, for autocast precisions, the entered CUDA
    autocast emulation: the context every traced step of this module runs in."""
    emul = EmulatedCudaAutocast(DTYPES[precision]) if precision != "fp32" else None
    with FakeTensorMode(), contextlib.ExitStack() as stack:
        for m in modes:
            stack.enter_context(m)
        if emul is not None:
            stack.enter_context(emul)
        yield emul


def _runner(spec: ArchSpec, overrides: Mapping[str, Any], size: Shape, batch: int, mode: str, precision: str,
            channels_last: bool, emul: EmulatedCudaAutocast | None, in_channels: int = 1, num_classes: int = 3) -> StepRunner:
    return StepRunner(
        spec, overrides, size, batch, mode, precision, "cpu", channels_last, in_channels, num_classes,
        autocast=emul.region if emul is not None else None,
        scaler=TracedScaler() if (precision == "fp16" and mode == "train") else None,
    )


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off for a block that makes many objects without cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class LifetimeNeutralModuleTracker(ModuleTracker):
    """torch's ModuleTracker, without changing when the step's tensors are freed.

    ModuleTracker follows the backward pass through multi-grad hooks in their ``"all"`` mode, which hold
    every gradient of a module's inputs (or outputs) until the last of them is computed. Where a module's
    inputs get their gradients at different times (meU-net's backbone, called on two patches; checkpointed
    stages), that keeps gradients alive that the real step has already freed: a snapshot's trace then
    peaked 23% above the same step's trace without it (meU-net, 32^3, batch 4, fp32). The ``"any"``
    mode calls the hook at the first gradient and holds none; the module is then named from the first
    gradient that reaches it (entering its backward) and left at the first gradient of its inputs."""

    def _fw_pre_hook(self, mod, input) -> None:
        name = self._get_mod_name(mod)
        self._get_append_fn(name, False)()
        tensors = [a for a in tree_flatten(input)[0] if isinstance(a, torch.Tensor) and a.requires_grad]
        if tensors:
            self._hooks.append(register_multi_grad_hook(tensors, self._get_pop_fn(name, True), mode="any"))

    def _fw_post_hook(self, mod, input, output) -> None:
        name = self._get_mod_name(mod)
        self._get_pop_fn(name, False)()
        tensors = [a for a in tree_flatten(output)[0] if isinstance(a, torch.Tensor) and a.requires_grad]
        if tensors:
            self._hooks.append(register_multi_grad_hook(tensors, self._get_append_fn(name, True), mode="any"))


def trace(spec: ArchSpec, overrides: Mapping[str, Any], size: Shape, batch: int, mode: str = "train",
          precision: str = "fp32", channels_last: bool = False, in_channels: int = 1,
          num_classes: int = 3, modules: bool = False) -> tuple[AllocationTracker, set[int], StepRunner]:
    """Trace build + warm-up + measured step on fake tensors; returns the tracker (mark ``measured``
    where the measured step starts), the host-resident storages to leave out, and the runner.
    ``modules``: also name the module that made each storage of the measured step (``tracker.modules``,
    for snapshots), and parameters, gradients and optimizer state by their parameter. ModuleTracker runs
    over the measured step only: it hooks every module call (a snapshot's main cost), and the build and the
    warm-up's optimizer make their tensors outside any module."""
    tracker = AllocationTracker()
    with fake_step(precision, tracker) as emul:
        runner = _runner(spec, overrides, size, batch, mode, precision, channels_last, emul, in_channels, num_classes)

        def phase(name: str) -> None:
            if name == "optimizer":
                tracker.label_gradients(runner.model)
                if modules:
                    tracker.name_training_state(runner.model, gradients=True)
            tracker.set_phase(name)

        out = runner.step(phase)
        del out
        tracker.set_phase("setup")
        tracker.label_training_state(runner.model, runner.optimizer)
        tracker.mark("measured")
        names = LifetimeNeutralModuleTracker() if modules else contextlib.nullcontext()
        with names:
            if modules:
                tracker.where = lambda: deepest(names.parents)
            out = runner.step(phase)
            del out
        tracker.where = None
        tracker.label_training_state(runner.model, runner.optimizer)
        if modules:
            tracker.name_training_state(runner.model, runner.optimizer)
        host = tracker.host_sids(runner.optimizer)
    return tracker, host, runner


def memtracker_peak(spec: ArchSpec, overrides: Mapping[str, Any], size: Shape, batch: int, mode: str,
                    precision: str, channels_last: bool, in_channels: int = 1,
                    num_classes: int = 3) -> tuple[int | None, str | None]:
    """Peak total bytes torch's MemTracker reports for the measured step (same fake trace), or None and
    why (the record's memtracker_note)."""
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None, "torch built without torch.distributed (MemTracker lives there)"
    with fake_step(precision) as emul:
        runner = _runner(spec, overrides, size, batch, mode, precision, channels_last, emul, in_channels, num_classes)
        runner.step()  # warm-up: Adam state exists afterwards
        mt = MemTracker()
        mt.track_external(runner.model, *([runner.optimizer] if runner.optimizer else []),
                          *runner.inputs.values())
        try:
            with mt:
                runner.step()
        except NotImplementedError as exc:  # e.g. a module called twice in one step (meU-net's shared backbone)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            return None, f"MemTracker cannot track this step (NotImplementedError: {first})"
        snap = mt.get_tracker_snapshot("peak")
    return int(max((d.get("Total", 0) for d in snap.values()), default=0)), None


def count_flops(spec: ArchSpec, overrides: Mapping[str, Any], size: Shape, batch: int, mode: str,
                precision: str, channels_last: bool, in_channels: int = 1,
                num_classes: int = 3) -> tuple[int, list[Work]]:
    """FLOPs of one step (forward and backward) by ``torch.utils.flop_counter``, on fake tensors, and the
    step's operators as roofline work (:class:`bench.measure.roofline.WorkCounter`, same trace).

    A trace of its own: FlopCounterMode's module hooks extend tensor lifetimes under checkpointing,
    so it must not run inside the memory trace."""
    counter = WorkCounter()
    with fake_step(precision) as emul:
        runner = _runner(spec, overrides, size, batch, mode, precision, channels_last, emul, in_channels, num_classes)
        with FlopCounterMode(display=False) as flops, counter:
            runner.step(counter.set_phase)
    return int(flops.get_total_flops()), counter.work()


def time_columns(work: list[Work], gpu: GPU, batch: int, voxels: int | None = None) -> dict[str, Any]:
    """The predicted step-time columns for ``gpu`` from a step's roofline work."""
    t, notes = step_time(work, gpu)
    return {R.PRED_GPU: gpu.name, R.PRED_STEP_TIME: t, **throughput_columns(t, batch, voxels),
            R.PRED_TIME_NOTE: "; ".join(notes) or None}


def throughput_columns(step_s: float, batch: int, voxels: int | None) -> dict[str, Any]:
    """The predicted throughputs of a predicted step time: samples and labelled voxels per second (a record that
    takes another configuration's measurement, ``measured_as``, has them again for its own voxels)."""
    return {R.PRED_THROUGHPUT_SAMPLES: batch / step_s if step_s > 0 else None,
            R.PRED_THROUGHPUT_VOXELS: voxels / step_s if (voxels and step_s > 0) else None}


def device_columns(rec: dict[str, Any], tracker: AllocationTracker, host: set[int], start: int, mode: str,
                   cudnn_benchmark: bool, gpu: GPU | None, cuda: str | None, settings: AllocatorSettings | None,
                   gpu_memory: int | None) -> None:
    """Add to ``rec`` the columns of what the device shows beyond the allocator model's peaks
    (bench.measure.device). With ``gpu_memory``, the rule of "fits" (:func:`bench.measure.device.run_device`):
    raises :class:`AllocatorOOM` where the step does not fit, the columns then saying what it needs, so that
    ``pred_nvidia_smi_bytes > pred_capacity_bytes`` exactly when it does not fit."""
    context = context_bytes(gpu.name if gpu else None, cuda, training=mode == "train")
    rec[R.PRED_CONTEXT] = context
    if gpu_memory is not None:
        rec[R.PRED_CAPACITY] = gpu_memory
    run = run_device(tracker, host, start, cudnn_benchmark, context, gpu_memory, settings)
    dev = run.replay
    rec.update({R.PRED_DEVICE_ALLOCATED: dev.model.peak_allocated, R.PRED_DEVICE_RESERVED: dev.model.peak_reserved,
                R.PRED_WORKSPACE: dev.largest_workspace, R.PRED_NVIDIA_SMI: run.nvidia_smi})
    if run.oom is not None:
        raise run.oom


def predict(spec: ArchSpec, overrides: Mapping[str, Any], size: Shape, batch: int, mode: str = "train",
            precision: str = "fp32", channels_last: bool = False, with_memtracker: bool = True, in_channels: int = 1,
            num_classes: int = 3, settings: AllocatorSettings | None = None, capacity: int | None = None,
            snapshot_to: Path | None = None, label: str = "", gpu: GPU | None = None,
            voxels: int | None = None, cudnn_benchmark: bool = False, gpu_memory: int | None = None,
            cuda: str | None = None, with_flops: bool = True) -> dict[str, Any]:
    """The prediction record fields for one configuration (see the module docstring); ``settings``
    and ``capacity`` as for :func:`replay`. ``snapshot_to``: also write the step as a PyTorch memory
    snapshot (``<snapshot_to>.pickle``, the path a stem) labelled ``label``; its timeline plot is drawn
    from the pickle afterwards (:mod:`bench.results.timeline`), outside the prediction. With ``gpu``, also
    its predicted step time there (throughput on ``voxels`` per step). ``with_flops=False``: the memory
    columns only, without the FLOPs and roofline work, whose trace of their own is about a quarter of a
    prediction's time (``bench compare`` and the memory tests ask for memory only).

    What the device shows (:func:`device_columns`): allocated and reserved with cuDNN's workspaces for
    ``cudnn_benchmark``, the CUDA context of ``gpu``'s family and ``cuda``, and their nvidia-smi sum; with
    ``gpu_memory`` (bytes) that replay runs at the GPU's capacity less the context and raises
    :class:`bench.measure.allocator.AllocatorOOM` where a real GPU would run out (the columns computed so far
    are then in the exception's ``record``)."""
    t0 = time.perf_counter()
    shape = (in_channels, num_classes)
    tracker, host, _ = trace(spec, overrides, size, batch, mode, precision, channels_last, *shape,
                             modules=snapshot_to is not None)
    start = tracker.marks["measured"]
    alloc = replay(tracker, host, start, settings, capacity)
    live_peak, at = tracker.live_peak(start, host)
    rec: dict[str, Any] = {
        R.PRED_ALLOCATED: alloc.peak_allocated,
        R.PRED_RESERVED: alloc.peak_reserved,
        R.PRED_LIVE: live_peak,
        R.PRED_EVENTS: len(tracker.events),
    }
    try:
        device_columns(rec, tracker, host, start, mode, cudnn_benchmark, gpu, cuda, settings, gpu_memory)
    except AllocatorOOM as exc:
        exc.record = rec  # type: ignore[attr-defined]
        raise
    if with_flops:
        rec[R.FLOPS_PER_STEP], work = count_flops(spec, overrides, size, batch, mode, precision, channels_last,
                                                  *shape)
        rec[R.PRED_WORK] = work_to_json(work)
        if gpu is not None:
            rec.update(time_columns(work, gpu, batch, voxels))
    for cat, n in tracker.breakdown_at(at, host).items():
        rec[R.pred_category(cat)] = n
    rec[R.PRED_TIME] = time.perf_counter() - t0
    if snapshot_to is not None:
        t1 = time.perf_counter()
        settings = settings if settings is not None else AllocatorSettings.from_env()
        stem = str(snapshot_to)
        with no_gc():  # tens of thousands of acyclic dicts: the cyclic collector would scan the whole heap for them
            # what the device columns count: cuDNN's workspaces, at the capacity of their replay (run_device)
            at = capacity if gpu_memory is None else max(gpu_memory - rec[R.PRED_CONTEXT], 0)
            write(build(tracker, host, settings, at, label or snapshot_to.name, start,
                        before=Workspaces(tracker, cudnn_benchmark, capacity=at)), Path(stem + ".pickle"))
        rec[R.SNAPSHOT_PATH] = stem + ".pickle"
        rec[R.SNAPSHOT_TIME] = time.perf_counter() - t1
    if with_memtracker:
        t1 = time.perf_counter()
        rec[R.MEMTRACKER_PEAK], note = memtracker_peak(spec, overrides, size, batch, mode, precision, channels_last,
                                                       *shape)
        if note:
            rec[R.MEMTRACKER_NOTE] = note
        rec[R.MEMTRACKER_TIME] = time.perf_counter() - t1
    return rec


__all__ = ["CATEGORIES", "memtracker_peak", "predict", "trace"]
