"""Run configurations in isolated worker processes and store each record as it comes.

:class:`LocalExecutor` runs each configuration in a fresh ``python -m bench.sweep.worker`` process;
anything with the same ``run(config, timeout_s) -> record`` method (a SLURM launcher such as
submitit, Ray) can replace it without touching the worker. :func:`run_sweep` decides which
configurations still need a run (:func:`rerun_reason`), claims each one in the store so that two sweeps
on one directory never run it twice, and appends its record.

A worker's life is tied to the sweep's: it runs in a process group of its own (a timeout kills the
group), it is killed by the kernel when its parent dies (``PR_SET_PDEATHSIG`` on Linux) and it watches
its parent itself (elsewhere). A record received before the worker hangs at exit is kept. A worker
killed by SIGKILL that its parent did not send was, almost always, killed by the kernel's out-of-memory
killer: that is an ``oom`` record, as a CUDA or CPU allocation failure inside the worker is.

Imports no torch: the parent of a sweep never loads the measurement or prediction stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .. import record as R
from ..version import code_version
from . import store, wire
from .config import RunConfig

#: seconds a worker may take to exit after it sent its record, before it is killed (the record is kept)
EXIT_GRACE_S = 10.0
WORKER = ("-m", "bench.sweep.worker")


class Executor(Protocol):
    def run(self, cfg: RunConfig, timeout_s: float) -> dict[str, Any]: ...


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel kills the worker when the thread that started it dies (Linux)."""

    def set_pdeathsig() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return set_pdeathsig


@dataclass
class LocalExecutor:
    """One fresh worker process per configuration (see the module docstring).

    The worker's ``LOG:`` lines (progress of long work, e.g. a Dice run's validations) are passed to
    ``on_log`` as they come; its stderr goes to a temporary file, whose tail a failed record keeps.
    ``command`` is the worker's command line (tests put a misbehaving worker there).
    """

    command: Sequence[str] = field(default_factory=lambda: (sys.executable, *WORKER))
    on_log: Callable[[str], None] | None = None
    exit_grace_s: float = EXIT_GRACE_S

    def run(self, cfg: RunConfig, timeout_s: float) -> dict[str, Any]:
        envvars = dict(os.environ, PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parents[2])
        envvars["PYTHONPATH"] = root + os.pathsep + envvars.get("PYTHONPATH", "")
        got: dict[str, Any] = {}
        received = threading.Event()
        with tempfile.TemporaryFile("w+") as errfile:
            proc = subprocess.Popen(list(self.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=errfile, text=True, env=envvars, process_group=0,
                                    preexec_fn=_die_with_parent(os.getpid()))
            reader = threading.Thread(target=self._read, args=(proc, got, received), daemon=True)
            reader.start()
            killed = False
            try:
                try:
                    proc.stdin.write(cfg.to_json())  # type: ignore[union-attr]
                    proc.stdin.close()  # type: ignore[union-attr]
                except BrokenPipeError:  # the worker died before reading its configuration
                    pass
                killed = self._wait(proc, timeout_s, received)
            finally:
                if proc.poll() is None:  # interrupted (Ctrl-C): take the worker down with us
                    _kill_group(proc)
            reader.join(5)
            errfile.seek(0)
            stderr = errfile.read()
        if "record" in got:
            rec = got["record"]
        elif killed:
            rec = failed(cfg, R.TIMEOUT_STATUS, f"no result within {timeout_s:g} s", _tail(stderr))
        else:
            status, error = classify_exit(proc.returncode, stderr)
            rec = failed(cfg, status, error, _tail(stderr))
        rec[R.TIMEOUT] = timeout_s
        return rec

    def _wait(self, proc: subprocess.Popen, timeout_s: float, received: threading.Event) -> bool:
        """Wait for the worker; kill its group at the deadline, or ``exit_grace_s`` after its record.
        Returns whether it was killed before sending a record."""
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            if received.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                try:
                    proc.wait(self.exit_grace_s)
                except subprocess.TimeoutExpired:  # the result is in; a hang at exit does not lose it
                    _kill_group(proc)
                return False
            if time.monotonic() >= deadline:
                _kill_group(proc)
                return not received.is_set()
        return False

    def _read(self, proc: subprocess.Popen, got: dict[str, Any], received: threading.Event) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            try:
                msg = wire.parse(line.rstrip("\n"))
            except ValueError:  # a torn record line: the worker died writing it
                continue
            if msg is None:
                continue
            kind, payload = msg
            if kind == "record":
                got["record"] = payload
                received.set()
            elif self.on_log:
                self.on_log(payload)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def classify_exit(returncode: int | None, stderr: str) -> tuple[str, str]:
    """(status, one-line error) of a worker that exited without a record."""
    if returncode == -signal.SIGKILL:
        return R.OOM, "worker killed by SIGKILL, most likely by the kernel's out-of-memory killer"
    if returncode is not None and returncode < 0:
        return R.ERROR_STATUS, f"worker killed by signal {signal.Signals(-returncode).name}"
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    return R.ERROR_STATUS, f"worker exited with code {returncode}" + (f": {last[:500]}" if last else "")


def _tail(text: str, n: int = 2000) -> str:
    return text[-n:]


def failed(cfg: RunConfig, status: str, error: str, stderr_tail: str = "") -> dict[str, Any]:
    """The record of a configuration that produced none: its whole configuration, and why."""
    rec = R.config_columns(cfg)
    rec.update({R.TIMESTAMP: datetime.now(UTC).isoformat(timespec="seconds"), R.CODE_VERSION: code_version(),
                R.STATUS: status, R.ERROR: error, R.STDERR_TAIL: stderr_tail})
    return rec


def rerun_reason(rec: dict[str, Any], timeout_s: float, force: bool = False, retry_failed: bool = False) -> str | None:
    """Why a recorded configuration is run again, or None when its record stands."""
    if force:
        return "--force"
    version = rec.get(R.CODE_VERSION)
    if version != code_version():
        return f"recorded by code version {version or 'unknown'}"
    status = rec.get(R.STATUS)
    if status == R.TIMEOUT_STATUS and (rec.get(R.TIMEOUT) or 0) < timeout_s:
        return f"timed out under a shorter limit ({rec.get(R.TIMEOUT)} s)"
    if retry_failed and status in (*R.FAILED, R.OOM):
        return f"--retry-failed ({status})"
    return None


def run_sweep(
    configs: Iterable[RunConfig],
    out: str | Path,
    timeout_s: float = 600,
    force: bool = False,
    retry_failed: bool = False,
    executor: Executor | None = None,
    on_start: Callable[[RunConfig], None] | None = None,
    on_done: Callable[[RunConfig, dict[str, Any]], None] | None = None,
    on_skip: Callable[[RunConfig, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every configuration whose record is missing or must be re-run (:func:`rerun_reason`);
    append each record as it comes. Returns the new records. ``on_skip(cfg, why)`` reports a
    configuration left alone: already recorded, or being run by another process."""
    executor = executor or LocalExecutor()
    new = []
    for cfg in configs:
        key = cfg.key()
        with store.claim(out, key) as mine:
            if not mine:
                if on_skip:
                    on_skip(cfg, "running in another process")
                continue
            rec = store.latest(out).get(key)  # read under the claim: another sweep may just have finished it
            if rec is not None and rerun_reason(rec, timeout_s, force, retry_failed) is None:
                if on_skip:
                    on_skip(cfg, "recorded")
                continue
            if on_start:
                on_start(cfg)
            rec = executor.run(cfg, timeout_s)
            store.append(out, rec)
        new.append(rec)
        if on_done:
            on_done(cfg, rec)
    return new
