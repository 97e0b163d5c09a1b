"""The isolated worker: a pure function from one :class:`RunConfig` to one record.

Run as ``python -m bench.worker`` with the config's JSON on stdin; it prints the record as one JSON
line prefixed by ``RECORD:`` on stdout. A fresh process per configuration keeps allocator state,
cuDNN autotuning and an OOM from leaking into the next. A CUDA OOM becomes a record with status
``oom`` (and the requested bytes torch names); any other failure exits non-zero and the parent
turns it into an ``error`` record with the tail of stderr.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import torch

import architectures

from . import env
from .config import RunConfig
from .measure import timing
from .measure.predict import predict
from .step import StepRunner, stage_of

MARK = "RECORD:"
LOG_MARK = "LOG:"
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def base_record(cfg: RunConfig) -> dict[str, Any]:
    """The configuration columns every record has, whatever its status."""
    spec = architectures.spec(cfg.arch)
    stage_spec, ov = stage_of(spec, cfg.stage, cfg.overrides_dict)
    hp = stage_spec.hparams(**ov)
    layout = stage_spec.layout(cfg.size, 1, 3, hp)
    shapes = {t.name: list(t.shape) for t in layout if t.role == "image" and (cfg.mode == "train" or t.name == "image")}
    return {
        "key": cfg.key(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "arch": cfg.arch,
        "stage": cfg.stage,
        "mode": cfg.mode,
        "device": cfg.device,
        "precision": cfg.precision,
        "batch": cfg.batch,
        "size": "x".join(map(str, cfg.size)),
        "size_meaning": spec.size_meaning,
        "input_shape": "x".join(map(str, layout[0].shape)),
        "input_shapes": json.dumps(shapes),
        "options": json.dumps(dict(cfg.overrides), sort_keys=True, default=list),
        "channels_last": cfg.channels_last,
        "params": stage_spec.param_count(**ov) if cfg.mode == "train" or not cfg.stage else None,
        "voxels_per_step": cfg.batch * sum(int(torch.tensor(s).prod()) for s in shapes.values()),
    }


def run(cfg: RunConfig) -> dict[str, Any]:
    spec = architectures.spec(cfg.arch)
    stage_spec, ov = stage_of(spec, cfg.stage, cfg.overrides_dict)
    rec = base_record(cfg)
    rec["device_name"] = {"cuda": None, "cpu": "cpu", "predict": "prediction (CUDA caching-allocator model)"}[cfg.device]
    rec.update(env.capture(cuda=cfg.device == "cuda"))
    rec.update(predict(stage_spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision, cfg.channels_last))
    if cfg.device == "predict":
        rec["status"] = "ok"
        return rec
    factory = partial(StepRunner, stage_spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision,
                      "cuda" if cfg.device == "cuda" else "cpu", cfg.channels_last)
    if cfg.device == "cuda":
        from .measure import cuda

        rec["device_name"] = torch.cuda.get_device_name(0)
        try:
            meas, runner = cuda.measure(factory, cfg.repeats)
        except torch.cuda.OutOfMemoryError as exc:
            rec.update(status="oom", error=str(exc).splitlines()[0][:500], oom_requested_bytes=requested_bytes(str(exc)))
            return rec
    else:
        from .measure import cpu

        meas, runner = cpu.measure(factory, cfg.repeats)
    times = meas.pop("times_s")
    rec.update(meas)
    samples = cfg.batch
    rec.update(timing.summarize(times, rec["voxels_per_step"], samples, rec.get("flops_per_step"),
                                timing.peak_flops(rec.get("device_name"), cfg.precision)))
    rec["status"] = "ok"
    if cfg.dice:
        del runner  # free the measured step's model and batch before training
        rec.update(dice(cfg, spec))
    return rec


def log(message: str) -> None:
    """Progress for the parent (shown under the sweep's progress bar)."""
    sys.stdout.write(LOG_MARK + message + "\n")
    sys.stdout.flush()


def dice(cfg: RunConfig, spec: architectures.ArchSpec) -> dict[str, Any]:
    """The Dice columns of a Dice run (all stages of the whole architecture), or why there are none."""
    from .evaluate import dice_record

    device = "cuda" if cfg.device == "cuda" else "cpu"
    try:
        return dice_record(spec, cfg.overrides_dict, cfg.size, cfg.batch, cfg.precision, device, cfg.data,
                           cfg.train_minutes, cfg.train_iterations, cfg.weighting, log=log)
    except torch.cuda.OutOfMemoryError as exc:
        return {"dice_status": "oom", "dice_error": str(exc).splitlines()[0][:500]}
    except Exception as exc:  # the memory figures above stay valid; say why Dice is missing
        return {"dice_status": "error", "dice_error": f"{type(exc).__name__}: {exc}"[:2000]}


def requested_bytes(message: str) -> int | None:
    """The allocation size in torch's OOM message ("Tried to allocate 2.00 GiB")."""
    m = re.search(r"Tried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB)", message)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def main() -> int:
    cfg = RunConfig.from_json(sys.stdin.read())
    t0 = time.perf_counter()
    rec = run(cfg)
    rec["worker_time_s"] = time.perf_counter() - t0
    sys.stdout.write(MARK + json.dumps(rec, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
