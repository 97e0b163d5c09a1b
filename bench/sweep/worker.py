"""The isolated worker: a pure function from one :class:`RunConfig` to one record.

Run as ``python -m bench.sweep.worker`` with the config's JSON on stdin (and optionally, on a second
line, :class:`~bench.sweep.wire.Instructions`: the prediction alone, or the measurement with a
prediction made elsewhere); it prints the record as one ``RECORD:`` line on stdout
(:mod:`bench.sweep.wire`). A fresh process per configuration keeps allocator state, cuDNN autotuning and
an out-of-memory error from leaking into the next. Running out of memory, on CUDA or on the CPU, is a
record with status ``oom`` (and the requested bytes the error names); any other failure exits non-zero
and the parent turns it into an ``error`` record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import sys
import threading
import time
from datetime import UTC, datetime
from functools import partial
from math import prod
from pathlib import Path
from typing import Any

import torch

import architectures

from .. import record as R
from ..measure import env, gpus, timing
from ..measure.allocator import AllocatorOOM
from ..measure.predict import predict
from ..measure.step import Prepared, StepRunner, prepare
from ..options import Backend, Mode
from ..version import code_version
from . import wire
from .config import RunConfig
from .expand import label

_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def resolve(cfg: RunConfig) -> tuple[architectures.ArchSpec, architectures.ArchSpec, dict[str, Any]]:
    """The architecture's spec, the spec of the configuration's stage with the run's recipe changes (every backend
    steps by that one) and the stage's build overrides."""
    spec = architectures.spec(cfg.arch)
    stage_spec, ov = spec.stage(cfg.stage, **cfg.overrides_dict)
    recipe = stage_spec.recipe.with_overrides(cfg.recipe_dict)
    return spec, dataclasses.replace(stage_spec, recipe=recipe), ov


#: the configuration's fields that name what it steps rather than change it (the step's digest leaves them out)
_NAMES = ("arch", "stage", "overrides", "arch_key", "arch_label", "snapshot_dir")


def measured_step(cfg: RunConfig) -> str:
    """A digest of the step a worker runs for ``cfg``: the network (its stage's spec, its builder and every
    hyper-parameter with the overrides applied), the recipe it trains by, and every field of the configuration
    that is not a name. Configurations with the same digest step the same network on the same batch under the
    same settings, whatever their architectures are called (a cascade's stage 1 is the meU-net itself, built
    by the same spec with the same arguments), so one measurement is theirs: ``bench validate`` measures each
    step once (:func:`bench.results.validate.same_step`)."""
    _, stage_spec, ov = resolve(cfg)
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NAMES}
    network = [stage_spec.name, stage_spec.builder.__module__, stage_spec.builder.__qualname__,
               stage_spec.hparams(**ov), stage_spec.recipe.describe()]
    blob = json.dumps([fields, network], sort_keys=True, default=repr)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def spec_columns(cfg: RunConfig) -> dict[str, Any]:
    """The configuration columns that need the architecture: what the size names, the input shapes,
    parameters and voxels per step."""
    spec, stage_spec, ov = resolve(cfg)
    hp = stage_spec.hparams(**ov)
    layout = stage_spec.layout(cfg.size, cfg.in_channels, cfg.num_classes, hp)
    shapes = {t.name: list(t.shape) for t in layout
              if t.role == "image" and (cfg.mode == Mode.TRAIN or t.name == "image")}
    return {
        R.SIZE_MEANING: spec.describe_size(cfg.size, **cfg.overrides_dict),
        R.PATCH: spec.patch_label(cfg.size, cfg.mode, cfg.stage, **cfg.overrides_dict),
        R.INPUT_SHAPE: "x".join(map(str, layout[0].shape)),
        R.INPUT_SHAPES: json.dumps(shapes),
        R.PARAMS: (stage_spec.param_count(cfg.in_channels, cfg.num_classes, **ov)
                   if cfg.mode == Mode.TRAIN or not cfg.stage else None),
        R.VOXELS_PER_STEP: cfg.batch * sum(prod(s) for s in shapes.values()),
        R.LABELLED_VOXELS_PER_STEP: cfg.batch * spec.labelled_voxels(cfg.size, cfg.stage, **cfg.overrides_dict),
    }


def out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocation failure (torch's CPU allocator raises a RuntimeError saying so)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def oom_columns(exc: BaseException) -> dict[str, Any]:
    message = str(exc) or type(exc).__name__
    return {R.STATUS: R.OOM, R.ERROR: message.splitlines()[0][:500], R.OOM_REQUESTED: requested_bytes(message)}


def live_gpu(backend: Backend, how: wire.Instructions = wire.Instructions()) -> gpus.GPU | None:
    """The catalogue entry of the CUDA device a cuda run measures on (so that its measured step time sits
    beside the predicted one), or None. A prediction made apart from its measurement takes the device the
    parent names (``how.live_gpu``) and never asks CUDA."""
    if how.live_gpu:
        return gpus.find(how.live_gpu)
    return gpus.find(torch.cuda.get_device_name(0)) if backend is Backend.CUDA and not how.predict_only else None


def prepare_ahead(cfg: RunConfig) -> Prepared:
    """A measuring worker's CPU-side work, done before its configuration's turn while the GPU measures the one
    before: the configuration's columns once (imports, nnU-Net's plans), the network built and initialised on
    the CPU, the batch's values drawn (:func:`bench.measure.step.prepare`). Touches no GPU, on a quarter of the
    cores, so as to disturb the measuring worker's step little."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 4))
    try:
        # torch's compiler stack, which the first optimizer built imports (torch.optim's constructors go through
        # torch._compile's disable decorator; some 800 modules): here, it leaves the GPU's turn. On an H200
        # (reports/validation/nvidia-h200-2.11.0+cu130-2026-11-27) every training worker of an architecture whose
        # imports had not loaded it (nnunetv2's do) spent 3.4 to 6.0 s in its build phase, median 4.3 s; a training
        # StepRunner built on this 2-core CPU took about 2 s without it, 0.003 s with it (tests/sweep/test_imports.py).
        # Their inference workers spent 3.5 to 5.6 s in the snapshot phase, nnU-Net's none: the same import, by that
        # sign (not confirmed; the next GPU run's phases will say). Not at every worker's start: two of
        # tests/test_cli.py's CPU sweeps took 48.2 s so, 43.6 s without
        importlib.import_module("torch._dynamo")
        _, stage_spec, ov = resolve(cfg)
        spec_columns(cfg)
        return prepare(stage_spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.in_channels, cfg.num_classes)
    finally:
        torch.set_num_threads(threads)


def run(cfg: RunConfig, memtracker: bool = True, how: wire.Instructions = wire.Instructions(),
        prepared: Prepared | None = None, ahead_s: float | None = None, flops: bool = True,
        imports_s: float | None = None) -> dict[str, Any]:
    """One configuration's record (``memtracker``: also torch's MemTracker figure, as every sweep has; ``flops``:
    also the step's FLOPs and predicted time, as every sweep has).
    ``how``: the prediction alone, or the measurement with a prediction made elsewhere (:class:`wire.Instructions`).
    ``prepared``: the step's CPU-side parts made ahead (:func:`prepare_ahead`, in ``ahead_s`` seconds), by a worker
    whose imports took ``imports_s`` (:func:`since_start`)."""
    t_start = time.perf_counter()
    backend = cfg.backend_kind
    measures = backend.measures and not how.predict_only
    # before CUDA initialises (the worker is a fresh process): the real allocator reads it there, and the
    # prediction's allocator model reads it too, so that both run under the configuration's settings
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = cfg.alloc_conf
    # the step trains by the (stage) spec's recipe with the run's changes: every backend below gets that spec
    spec, stage_spec, ov = resolve(cfg)
    recipe = stage_spec.recipe
    rec = R.config_columns(cfg)
    rec[R.RECIPE], rec[R.COMPILED] = recipe.describe(), recipe.compile
    rec[R.CUDNN_BENCHMARK] = cfg.cudnn_benchmark or recipe.cudnn_benchmark
    rec.update(spec_columns(cfg))
    rec[R.TIMESTAMP] = datetime.now(UTC).isoformat(timespec="seconds")
    rec[R.DEVICE_NAME] = {Backend.CUDA: None, Backend.CPU: "cpu",
                          Backend.PREDICT: "prediction (CUDA caching-allocator model)"}[backend]
    t_env = time.perf_counter()
    rec.update(env.capture(cuda=backend is Backend.CUDA and measures))
    t_env = time.perf_counter() - t_env
    t_pred = time.perf_counter()
    gpu = gpus.lookup(cfg.gpu) if cfg.gpu else live_gpu(backend, how)
    snap = Path(cfg.snapshot_dir) / cfg.slug() if cfg.snapshot_dir else None
    try:
        if how.prediction is not None:
            rec.update(how.prediction)
        else:
            rec.update(predict(stage_spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision, cfg.channels_last,
                               with_memtracker=memtracker, in_channels=cfg.in_channels, num_classes=cfg.num_classes,
                               snapshot_to=snap.with_name(snap.name + ".predicted") if snap else None,
                               label=label(cfg), gpu=gpu, voxels=rec[R.LABELLED_VOXELS_PER_STEP],
                               cudnn_benchmark=rec[R.CUDNN_BENCHMARK], gpu_memory=cfg.gpu_memory or None,
                               cuda=rec.get(R.ENV_CUDA), with_flops=flops))
    except AllocatorOOM as exc:  # the prediction at --gpu-memory: the record a real GPU would give
        rec.update(getattr(exc, "record", {}))
        rec.update(oom_columns(exc))
        return rec
    t_pred = time.perf_counter() - t_pred
    if not measures:
        rec[R.STATUS] = R.OK
        return rec
    factory = partial(StepRunner, stage_spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision,
                      backend.torch_device, cfg.channels_last, cfg.in_channels, cfg.num_classes, prepared=prepared)
    try:
        if backend is Backend.CUDA:
            from ..measure import cuda

            rec[R.DEVICE_NAME] = torch.cuda.get_device_name(0)
            recorded = snap.with_name(snap.name + ".cuda.pickle") if snap else None
            # the worker's time before the measurement, less the environment's and a prediction made here
            setup = time.perf_counter() - t_start - t_env - t_pred
            meas, runner = cuda.measure(factory, cfg.repeats, rec[R.CUDNN_BENCHMARK], recorded)
            t_finish = time.perf_counter()
            ahead = {name: round(t, 4) for name, t in zip(R.BEFORE_TURN_PHASES, (imports_s, ahead_s), strict=True)
                     if t is not None}
            meas[R.CUDA_PHASES] = {**ahead, "env": round(t_env, 4), "setup": round(setup, 4), **meas[R.CUDA_PHASES]}
            if recorded is not None:
                rec[R.CUDA_SNAPSHOT_PATH] = str(recorded)
        else:
            from ..measure import cpu

            meas, runner = cpu.measure(factory, cfg.repeats)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        rec.update(oom_columns(exc))
        return rec
    times = meas.pop("times_s")
    rec.update(meas)
    rec.update(timing.summarize(times, rec[R.LABELLED_VOXELS_PER_STEP], rec[R.VOXELS_PER_STEP], cfg.batch,
                                rec.get(R.FLOPS_PER_STEP), gpus.peak_flops(rec.get(R.DEVICE_NAME), cfg.precision)))
    rec[R.STATUS] = R.OK
    del runner  # free the measured step's model and batch (before training, with --dice)
    if backend is Backend.CUDA:  # the phases as JSON, the measurement's aftermath in them
        rec[R.CUDA_PHASES] = json.dumps({**rec[R.CUDA_PHASES], "finish": round(time.perf_counter() - t_finish, 4)})
    if cfg.dice:
        rec.update(dice(cfg, spec))
    return rec


def prediction(config_json: str, live_gpu: str = "", memory_only: bool = False) -> dict[str, Any]:
    """The prediction alone of one configuration, as a measuring worker would make it for the GPU named
    ``live_gpu``, touching no GPU (:class:`bench.sweep.executor.PredictAheadExecutor` calls it in a pool).
    ``memory_only``: without MemTracker's figure, the FLOPs and the step time, a third of the time (a recorded
    run's memory predicted again: ``bench validate --recorded``)."""
    return run(RunConfig.from_json(config_json), memtracker=not memory_only, flops=not memory_only,
               how=wire.Instructions(predict_only=True, live_gpu=live_gpu))


def log(message: str) -> None:
    """Progress for the parent (shown under the sweep's progress bar)."""
    sys.stdout.write(wire.log_line(message))
    sys.stdout.flush()


def dice(cfg: RunConfig, spec: architectures.ArchSpec) -> dict[str, Any]:
    """The Dice columns of a Dice run (all stages of the whole architecture), or why there are none."""
    from ..train.dice_run import dice_record

    try:
        return dice_record(spec, cfg.overrides_dict, cfg.size, cfg.batch, cfg.precision,
                           cfg.backend_kind.torch_device, cfg.data, cfg.train_minutes, cfg.train_iterations,
                           cfg.weighting, log=log, seed=cfg.seed, inferer=cfg.inferer, recipe=cfg.recipe_dict)
    except Exception as exc:  # the memory figures above stay valid; say why Dice is missing
        if out_of_memory(exc):
            return {R.DICE_STATUS: R.OOM, R.DICE_ERROR: str(exc).splitlines()[0][:500]}
        return {R.DICE_STATUS: R.ERROR_STATUS, R.DICE_ERROR: f"{type(exc).__name__}: {exc}"[:2000]}


def requested_bytes(message: str) -> int | None:
    """The allocation size in an out-of-memory message: CUDA's "Tried to allocate 2.00 GiB", the CPU
    allocator's "you tried to allocate 1000 bytes"."""
    m = re.search(r"[Tt]ried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB|bytes)", message)
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS.get(m.group(2), 1))


def watch_parent(interval_s: float = 1.0) -> None:
    """Exit when the parent dies (where the kernel's parent-death signal is not available)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def since_start() -> float | None:
    """Seconds since this process started: on Linux its start in ``/proc/self/stat`` (clock ticks since boot, field
    22) against the boot clock, to 10 ms; else None. The spares of a sweep import while others measure: how long
    that takes says how many to keep ahead (:func:`bench.sweep.executor.spares_ahead`)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (name)": field 3 on
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def main() -> int:
    imported = since_start()  # (this module's imports, torch's and segmem's, are done: a spare may wait from here)
    watch_parent()
    text, how = wire.read_config(sys.stdin)
    cfg = RunConfig.from_json(text)
    prepared = ahead_s = imports_s = None
    if how.ahead:  # sent before its turn: the CPU-side parts now, the rest when told to go on
        imports_s = imported
        t = time.perf_counter()
        prepared = prepare_ahead(cfg)
        ahead_s = time.perf_counter() - t
        go = wire.read_go(sys.stdin)
        if go is None:  # discarded: another configuration came, or the sweep stopped
            return 0
        how = go
    t0 = time.perf_counter()
    try:
        rec = run(cfg, how=how, prepared=prepared, ahead_s=ahead_s, imports_s=imports_s)
    except Exception as exc:
        if not out_of_memory(exc):
            raise
        rec = {**R.config_columns(cfg), **oom_columns(exc)}
    rec[R.CODE_VERSION] = code_version()
    rec[R.WORKER_TIME] = time.perf_counter() - t0
    sys.stdout.write(wire.record_line(rec))
    sys.stdout.flush()
    return 0


def leave(code: int) -> None:
    """Exit at once, without the interpreter's teardown: the record is out and every file is closed, and the
    parent waits for this process to end before it hands the next configuration on. Tearing down the modules
    of torch and the objects of the run took 0.8 s on a CPU worker, each configuration, and a CUDA worker
    would free its allocator's segments one by one besides; the driver takes the context back at exit anyway."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
