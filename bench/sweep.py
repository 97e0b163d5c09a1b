"""Expand options into configurations, skip done ones, run each in an isolated worker process.

:class:`LocalExecutor` runs workers as local subprocesses with a timeout; anything with the same
``run(config, timeout) -> record`` method (a SLURM launcher such as submitit, Ray) can replace it
without touching the worker.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import architectures

from . import store
from .config import RunConfig, Shape
from .worker import LOG_MARK, MARK, base_record

MODES = ("train", "infer")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("cuda", "cpu", "predict")


def parse_size(text: str) -> Shape:
    """``160`` -> (160, 160, 160); ``128x160x96`` -> (128, 160, 96)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"size {text!r} is not an edge like 160 or a box like 128x160x96") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or min(vals) < 1:
        raise ValueError(f"size {text!r} must be one positive edge or three (DxHxW)")
    return vals  # type: ignore[return-value]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise ValueError(f"device must be one of auto, {', '.join(DEVICES)}; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but this machine has no CUDA GPU; use --device cpu or predict")
    return device


def expand(
    archs: Sequence[str],
    sizes: Sequence[Shape] = (),
    batches: Sequence[int] = (),
    modes: Sequence[str] = ("train",),
    precisions: Sequence[str] = (),
    device: str = "cpu",
    checkpointing: bool | None = None,
    channels_last: bool = False,
    overrides: dict[str, Any] | None = None,
    repeats: int = 3,
    dice: dict[str, Any] | None = None,
) -> list[RunConfig]:
    """The cross product, validated before anything runs (ValueError: one line saying what is allowed).

    Empty ``sizes``/``batches``/``precisions`` mean each architecture's defaults (the paper's on CUDA
    and for prediction, small ones on CPU). A multi-stage architecture's training is one config
    per stage; its inference is one config for the whole.

    ``dice`` (the :class:`RunConfig` Dice fields: data, train_minutes, train_iterations, weighting) makes
    every training configuration also a Dice run; a multi-stage architecture trains all its stages in
    the record of its last stage. Without sizes, a CPU Dice run uses the spec's ``cpu_dice`` patch
    and batch (one configuration per architecture, so that it ends in minutes).
    """
    names = architectures.names() if "all" in archs else list(dict.fromkeys(archs))
    for b in batches:
        if b < 1:
            raise ValueError(f"batch must be >= 1; got {b}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {m!r}")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {p!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if dice is not None and device == "predict":
        raise ValueError("--dice trains and evaluates a network: use --device cpu or cuda, not predict")
    if dice is not None and "train" not in modes:
        raise ValueError("--dice trains the network: it needs --mode train")
    configs: list[RunConfig] = []
    for name in names:
        spec = architectures.spec(name)
        ov = dict(overrides or {})
        if checkpointing is not None:
            if spec.checkpointing is None:
                raise ValueError(f"{name} has no gradient checkpointing option; drop --checkpointing for it")
            ov[spec.checkpointing] = checkpointing
        spec.hparams(**ov)  # validates overrides
        gpu_like = device in ("cuda", "predict")
        arch_sizes = list(sizes) or list(spec.default_sizes if gpu_like else spec.cpu_sizes)
        arch_batches = list(batches) or list(spec.default_batches if gpu_like else spec.cpu_batches)
        if dice is not None and not gpu_like:
            dice_size, dice_batch = spec.cpu_dice or (spec.cpu_sizes[0], max(spec.cpu_batches))
            arch_sizes = list(sizes) or [dice_size]
            arch_batches = list(batches) or [dice_batch]
        arch_precisions = list(precisions) or [spec.default_precision if gpu_like else "fp32"]
        for size, batch, mode, prec in itertools.product(arch_sizes, arch_batches, modes, arch_precisions):
            spec.check_size(size, mode, **ov)
            stages = [s.name for s in spec.train_stages(**ov)] if (mode == "train" and spec.stages) else [""]
            for stage in stages:
                extra = dict(dice=True, **dice) if (dice is not None and mode == "train" and stage == stages[-1]) else {}
                configs.append(RunConfig(name, size, batch, mode, device, prec, stage,
                                         tuple(sorted(ov.items())), channels_last, repeats, **extra))
    return configs


class Executor(Protocol):
    def run(self, cfg: RunConfig, timeout_s: float) -> dict[str, Any]: ...


@dataclass
class LocalExecutor:
    """One fresh ``python -m bench.worker`` process per configuration.

    The worker's ``LOG:`` lines (progress of long work, e.g. a Dice run's validations) are passed to
    ``on_log`` as they come; its stderr goes to a temporary file, whose tail an ``error`` record keeps.
    """

    python: str = sys.executable
    on_log: Callable[[str], None] | None = None

    def run(self, cfg: RunConfig, timeout_s: float) -> dict[str, Any]:
        envvars = dict(os.environ, PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parent.parent)
        envvars["PYTHONPATH"] = root + os.pathsep + envvars.get("PYTHONPATH", "")
        with tempfile.TemporaryFile("w+") as errfile:
            proc = subprocess.Popen([self.python, "-m", "bench.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=errfile, text=True, env=envvars)
            lines: list[str] = []
            reader = threading.Thread(target=self._read, args=(proc, lines), daemon=True)
            reader.start()
            proc.stdin.write(cfg.to_json())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                reader.join(5)
                errfile.seek(0)
                return failed(cfg, "timeout", f"no result within {timeout_s:g} s", _tail(errfile.read()))
            reader.join(5)
            errfile.seek(0)
            stderr = errfile.read()
        for line in reversed(lines):
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        return failed(cfg, "error", f"worker exited with code {proc.returncode}", _tail(stderr))

    def _read(self, proc: subprocess.Popen, lines: list[str]) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            lines.append(line)
            if line.startswith(LOG_MARK) and self.on_log:
                self.on_log(line[len(LOG_MARK):])


def _tail(text: str | bytes | None, n: int = 2000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-n:]


def failed(cfg: RunConfig, status: str, error: str, stderr_tail: str) -> dict[str, Any]:
    try:
        rec = base_record(cfg)
    except Exception:  # the config itself is broken: keep what identifies it
        rec = {"key": cfg.key(), "arch": cfg.arch, "stage": cfg.stage, "mode": cfg.mode}
    rec.update(device=cfg.device, status=status, error=error, stderr_tail=stderr_tail)
    return rec


def run_sweep(
    configs: Iterable[RunConfig],
    out: str | Path,
    timeout_s: float = 600,
    force: bool = False,
    executor: Executor | None = None,
    on_start: Callable[[RunConfig], None] | None = None,
    on_done: Callable[[RunConfig, dict[str, Any] | None], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every configuration not yet in the store (all with ``force``); append each record as it
    comes. Returns the new records. ``on_done(cfg, None)`` reports a skipped configuration."""
    executor = executor or LocalExecutor()
    done = set() if force else store.done_keys(out)
    new = []
    for cfg in configs:
        if cfg.key() in done:
            if on_done:
                on_done(cfg, None)
            continue
        if on_start:
            on_start(cfg)
        rec = executor.run(cfg, timeout_s)
        store.append(out, rec)
        new.append(rec)
        if on_done:
            on_done(cfg, rec)
    return new
