"""Run configurations in isolated worker processes and store each record as it comes.

:class:`LocalExecutor` runs each configuration in a fresh ``python -m bench.sweep.worker`` process;
anything with the same ``run(config, timeout_s) -> record`` method can replace it without touching
the worker. :func:`run_sweep` decides which configurations still need a run (:func:`rerun_reason`),
claims each one in the store so that two sweeps on one directory never run it twice, and appends its
record. Given several executors (``--jobs``: one per GPU, each pinned by ``CUDA_VISIBLE_DEVICES``, or
one per core), it runs that many configurations at once, each executor one at a time, so two
measurements never share a GPU (but for ``bench validate --share-gpu``, whose executors share one GPU's
memory through :mod:`bench.sweep.share`). A :class:`BatchExecutor` (SLURM through submitit,
:mod:`bench.sweep.slurm`) is given every configuration to run at once instead. A
:class:`ScreeningExecutor` predicts first and records ``predicted_oom`` for what cannot fit. A
:class:`PredictAheadExecutor` predicts on the CPU cores ahead of a GPU's measurements (``bench validate``).

A worker's life is tied to the sweep's: it runs in a process group of its own (a timeout kills the
group), it is killed by the kernel when its parent dies (``PR_SET_PDEATHSIG`` on Linux) and it watches
its parent itself (elsewhere). A record received before the worker hangs at exit is kept. A worker
killed by SIGKILL that its parent did not send was, almost always, killed by the kernel's out-of-memory
killer: that is an ``oom`` record, as a CUDA or CPU allocation failure inside the worker is.

Imports no torch: the parent of a sweep never loads the measurement or prediction stack.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .. import record as R
from ..options import Backend, GiB
from ..parallel import THREADS_ENV, call, process_pool
from ..version import code_version
from . import store, wire
from .config import RunConfig
from .share import GateClosed, MemoryGate

#: seconds a worker may take to exit after it sent its record, before it is killed (the record is kept)
EXIT_GRACE_S = 10.0
#: why :func:`run_sweep` left a configuration alone after its deadline (``on_skip``'s reason)
TIME_LIMIT = "time limit reached"
WORKER = ("-m", "bench.sweep.worker")


class Executor(Protocol):
    def run(self, cfg: RunConfig, timeout_s: float) -> dict[str, Any] | None: ...


@runtime_checkable
class BatchExecutor(Protocol):
    """Runs many configurations at once (a cluster): yields ``(config, record, stored)`` as each ends;
    ``stored`` says the job appended the record to ``out`` itself."""

    def run_all(self, cfgs: Sequence[RunConfig], timeout_s: float, out: str | Path,
                on_start: Callable[[RunConfig], None] | None = None) -> Iterator[tuple[RunConfig, dict[str, Any], bool]]: ...


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel kills the worker when the thread that started it dies (Linux).
    It loads and imports nothing (libc is opened beforehand), so it is safe in a thread pool's fork."""

    def set_pdeathsig() -> None:
        if _LIBC is not None:
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return set_pdeathsig


@dataclass
class _Started:
    """A worker process and what the parent keeps of it: its stderr file, the record it sent, its reader."""

    proc: subprocess.Popen
    errfile: Any
    got: dict[str, Any] = field(default_factory=dict)
    received: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    ahead: str | None = None  # the key of the configuration it was sent ahead of its turn

    def discard(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc)
        self.errfile.close()


@dataclass
class LocalExecutor:
    """One fresh worker process per configuration (see the module docstring).

    The worker's ``LOG:`` lines (progress of long work, e.g. a Dice run's validations) are passed to
    ``on_log`` as they come; its stderr goes to a temporary file, whose tail a failed record keeps.
    ``command`` is the worker's command line (tests put a misbehaving worker there); ``env`` is added
    to the worker's environment (a ``--jobs`` slot's ``CUDA_VISIBLE_DEVICES``, its share of threads).

    ``prestart``: how many workers to keep started ahead (0: none), so that their imports (about 4 s of torch
    and segmem on a small CPU) are done while this one runs; each then waits for its configuration on stdin,
    still a fresh process. Told which configurations come next (:meth:`run`'s ``upcoming``, or
    :meth:`ahead_of`), a spare is sent each of the first ``prestart`` at once, ahead of its turn, and makes its
    CPU-side parts (the network built and initialised, the batch drawn: seconds that the GPU would otherwise
    wait) before it is told to go on. More than one where configurations take less time on the GPU than a
    worker takes to import and prepare (on an H100 most of bench validate's took 0.5 to 2 s, the preparing
    about 6.5 s: one spare left the GPU waiting). For a GPU measurement, whose worker mostly waits on the GPU;
    not for a CPU one, whose times the importing processes would disturb. :meth:`close` stops the spares.
    """

    command: Sequence[str] = field(default_factory=lambda: (sys.executable, *WORKER))
    on_log: Callable[[str], None] | None = None
    exit_grace_s: float = EXIT_GRACE_S
    env: Mapping[str, str] = field(default_factory=dict)
    prestart: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _spares: list[_Started] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def cancel(self) -> None:
        """Kill the running worker (the sweep was interrupted in another thread), and the spare."""
        self._stop.set()
        self.close()

    def close(self) -> None:
        """Stop the spare workers started ahead."""
        with self._lock:
            spares, self._spares = self._spares, []
        for spare in spares:
            spare.discard()

    def ahead_of(self, upcoming: Sequence[RunConfig]) -> None:
        """Keep a spare worker sent each of the first ``prestart`` of ``upcoming`` (the configurations this executor
        runs next, in order); stop those sent another (no longer coming here: another executor took it, or the sweep
        skipped it). A spare that has only imported is sent the first one that has none, rather than a new worker
        started. With none upcoming, one spare that has only imported. Nothing without ``prestart``."""
        if not self.prestart or self._stop.is_set():  # (cancelled: no new worker)
            return
        want = list(upcoming)[: self.prestart]
        keys = {c.key() for c in want}
        with self._lock:
            stale = [w for w in self._spares if w.proc.poll() is not None or (w.ahead is not None and w.ahead not in keys)]
            self._spares = [w for w in self._spares if w not in stale]
            have = {w.ahead for w in self._spares}
            idle = [w for w in self._spares if w.ahead is None]
            for c in want:
                if c.key() in have:
                    continue
                if idle:
                    self._send_ahead(idle.pop(0), c)
                else:
                    self._spares.append(self._start(c))
            if not self._spares:
                self._spares.append(self._start())
        for w in stale:
            w.discard()

    def _take_spare(self, cfg: RunConfig) -> _Started | None:
        """The spare sent ``cfg`` ahead, else one sent nothing yet (it is sent ``cfg`` whole), else None."""
        with self._lock:
            alive = [w for w in self._spares if w.proc.poll() is None]
            for w in self._spares:
                if w not in alive:  # it died waiting
                    w.discard()
            w = next((w for w in alive if w.ahead == cfg.key()), None) or next((w for w in alive if w.ahead is None), None)
            self._spares = [s for s in alive if s is not w]
            return w

    def _environment(self) -> dict[str, str]:
        """The worker's environment: this process's, with ``env`` and the path to segmem added."""
        envvars = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        root = str(Path(__file__).resolve().parents[2])
        envvars["PYTHONPATH"] = root + os.pathsep + envvars.get("PYTHONPATH", "")
        return envvars

    def _start(self, ahead: RunConfig | None = None) -> _Started:
        """A fresh worker, waiting for its configuration; ``ahead``: sent this one at once (:func:`wire.ahead_text`)."""
        envvars = self._environment()
        errfile = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(list(self.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errfile, text=True, env=envvars, process_group=0,
                                preexec_fn=_die_with_parent(os.getpid()))
        w = _Started(proc, errfile)
        w.reader = threading.Thread(target=self._read, args=(proc, w.got, w.received), daemon=True)
        w.reader.start()
        if ahead is not None:
            self._send_ahead(w, ahead)
        return w

    @staticmethod
    def _send_ahead(w: _Started, cfg: RunConfig) -> None:
        """Send the waiting worker ``w`` its configuration ahead of its turn (:func:`wire.ahead_text`)."""
        try:
            w.proc.stdin.write(wire.ahead_text(cfg.to_json()))  # type: ignore[union-attr]
            w.proc.stdin.flush()  # type: ignore[union-attr]
            w.ahead = cfg.key()
        except BrokenPipeError:  # it died: a dead spare is dropped, and run() starts another
            pass

    def run(self, cfg: RunConfig, timeout_s: float, how: wire.Instructions | None = None,
            upcoming: Sequence[RunConfig] = ()) -> dict[str, Any] | None:
        """``cfg``'s record from a fresh worker; ``how``: instructions beyond the configuration (:mod:`.wire`);
        ``upcoming``: the configurations that come next, in order, sent ahead to spare workers (:meth:`ahead_of`).
        None when the sweep was interrupted (:meth:`cancel`) before the record came: nothing is recorded, so
        that the next sweep runs the configuration again."""
        w = self._take_spare(cfg) or self._start()
        self.ahead_of(upcoming)
        proc = w.proc
        killed = False
        try:
            try:
                text = wire.go_text(how) if w.ahead is not None else wire.stdin_text(cfg.to_json(), how)
                proc.stdin.write(text)  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:  # the worker died before reading its configuration
                pass
            killed = self._wait(proc, timeout_s, w.received)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): take the worker down with us
                _kill_group(proc)
        w.reader.join(5)  # type: ignore[union-attr]
        w.errfile.seek(0)
        stderr = w.errfile.read()
        w.errfile.close()
        if "record" in w.got:
            rec = w.got["record"]
        elif self._stop.is_set():
            return None
        elif killed:
            rec = failed(cfg, R.TIMEOUT_STATUS, f"no result within {timeout_s:g} s", _tail(stderr))
        else:
            status, error = classify_exit(proc.returncode, stderr)
            rec = failed(cfg, status, error, _tail(stderr))
        rec[R.TIMEOUT] = timeout_s
        rec[R.NODE] = socket.gethostname()
        cuda_devices = self._environment().get("CUDA_VISIBLE_DEVICES")
        if cuda_devices is not None and cfg.backend == Backend.CUDA:
            rec[R.CUDA_DEVICES] = cuda_devices
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
            if time.monotonic() >= deadline or self._stop.is_set():
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


@dataclass
class ScreeningExecutor:
    """Predicts a configuration first (in a worker, backend ``predict``: on the CPU, no GPU time) at the GPU's
    memory, by the rule of ``bench run --backend predict --gpu-memory`` (the device model:
    :func:`bench.measure.device.run_device`, with the CUDA context of ``gpu``'s family where the
    configuration names none), and returns a ``predicted_oom`` record where that prediction runs out of
    memory, i.e. where its ``pred_nvidia_smi_bytes`` exceeds ``budget_bytes``; None when it fits, or when the
    prediction itself failed (the measurement then says what happens)."""

    budget_bytes: int
    inner: LocalExecutor = field(default_factory=LocalExecutor)
    gpu: str = ""  # a catalogue GPU name: its family's context (the configuration's own --gpu wins)

    def cancel(self) -> None:
        self.inner.cancel()

    def run(self, cfg: RunConfig, timeout_s: float) -> dict[str, Any] | None:
        pred = self.inner.run(replace(cfg, backend=Backend.PREDICT, gpu_memory=self.budget_bytes,
                                      gpu=cfg.gpu or self.gpu), timeout_s)
        if pred is None or pred.get(R.STATUS) != R.OOM or pred.get(R.PRED_NVIDIA_SMI) is None:
            return None
        need = int(pred[R.PRED_NVIDIA_SMI])
        rec = failed(cfg, R.PREDICTED_OOM,
                     f"predicted {need / GiB:.2f} GiB as nvidia-smi shows it (peak reserved with workspaces + "
                     f"{int(pred.get(R.PRED_CONTEXT) or 0) / GiB:.2f} GiB CUDA context) > GPU memory "
                     f"{self.budget_bytes / GiB:.2f} GiB; not run (--no-skip measures it)")
        derived = {R.SIZE_MEANING, R.INPUT_SHAPE, R.INPUT_SHAPES, R.PARAMS, R.VOXELS_PER_STEP}
        rec.update({k: v for k, v in pred.items() if k in derived})
        rec.update(R.prediction_columns(pred))
        rec.update({R.GPU_BUDGET: self.budget_bytes, R.TIMEOUT: timeout_s, R.NODE: pred.get(R.NODE)})
        return rec


#: processes predicting ahead, at most, per GPU measuring: a prediction takes a few seconds of one core
#: (median 2.7 s over bench validate's grid on this repository's CPU), about as long as a measurement, and
#: a predicting process holds about 0.4 GB; more would hold memory without keeping further ahead
AHEAD_PER_GPU = 8


def ahead_jobs(cores: int, gpus: int) -> int:
    """How many processes predict ahead of ``gpus`` GPU executors: the cores that their workers, each measuring one
    and its spares (:func:`spares_ahead`), leave, at most :data:`AHEAD_PER_GPU` per executor, at least one per
    executor. The spares' cores first: on the H100's sixth run (reports/validation/README.md), while the pool's 13
    processes imported and predicted beside 6 spares and 3 measuring workers on 16 cores, in the first 90 s, a
    prediction took a median 6.2 s (2.0 s after) and a spare's imports and preparing 7.1 s and 7.2 s (4.9 s and 6.0 s
    after), and the measurements waited on both; a prediction is about a fifth of the CPU a spare spends on a
    configuration."""
    workers = gpus * (1 + spares_ahead(cores, gpus))
    return max(gpus, min(cores - workers, AHEAD_PER_GPU * gpus))


#: spare workers, at most, that a GPU's executor keeps sent its next configurations ahead (:class:`LocalExecutor`'s
#: ``prestart``). On an H100 (reports/validation/nvidia-h100-80gb-hbm3-2.11.0+cu130-2026-11-27T2234: three executors
#: on 16 cores, two spares each by the rule before :func:`spares_ahead`'s) a spare took a median 5.1 s to import and
#: 6.1 s to prepare, the median configuration 2.3 s on the GPU: the slots waited on their spares. Replayed from that
#: run's records (scripts/ahead_depth.py: its order, phases and workers' times), the workers' span is 9.1 min with
#: two spares (9.2 min measured: the two calls' spans), 7.9 with three, 7.4 with four. With three (the next run,
#: ...-2026-11-28T0032) the span measured 8.5 min, the whole grid 9.3 min over two calls: within the 10-minute target
SPARES_AHEAD = 3


def spares_ahead(cores: int, executors: int) -> int:
    """Spare workers per GPU executor: a core for each of the executor's workers, the one measuring (feeding the GPU)
    and its spares (a spare's imports run on one thread, and most of its preparing: the weights' and the batch's
    random draws), at most :data:`SPARES_AHEAD`, at least one. (Two cores per spare before: on the 16-core H100
    machine above, 9 workers for three executors; 12 now. On its next run a spare's imports and preparing took a
    median 5.4 s and 6.8 s, against 5.1 s and 6.1 s with two: the cores kept up, a little slower.)"""
    return max(1, min(SPARES_AHEAD, cores // executors - 1))


@dataclass
class Predictions:
    """Predictions of CUDA configurations made ahead of their measurements, in a pool of ``jobs`` processes
    that see no GPU (:func:`bench.parallel.process_pool`), each predicting many configurations, as ``bench
    compare`` does: a prediction is deterministic CPU work that leaves nothing behind that the next one
    reads, and an import per prediction would cost as much as the prediction. One per sweep, shared by its
    :class:`PredictAheadExecutor` (one per GPU); a configuration is predicted once per GPU name.

    ``pool``: the pool's factory; ``predictor``: ``module:function`` called in its processes
    (:func:`bench.parallel.call`), or a function (tests give both, with a thread pool)."""

    jobs: int = 1
    pool: Callable[[int], Any] = partial(process_pool, hide_gpus=True)
    predictor: str | Callable[[str, str], dict[str, Any]] = "bench.sweep.worker:prediction"
    _futures: dict[tuple[str, str], Future] = field(default_factory=dict, repr=False)
    _pool: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def submit(self, cfg: RunConfig, live_gpu: str) -> Future:
        """The prediction of ``cfg`` for the GPU named ``live_gpu``, started now unless it already was."""
        with self._lock:
            if self._pool is None:
                self._pool = self.pool(max(1, self.jobs))
            key = (cfg.key(), live_gpu)
            if key not in self._futures:
                fn, args = (call, (self.predictor,)) if isinstance(self.predictor, str) else (self.predictor, ())
                try:
                    self._futures[key] = self._pool.submit(fn, *args, cfg.to_json(), live_gpu)
                except Exception as exc:  # a broken pool (a process killed) refuses new work: no head start
                    self._futures[key] = Future()
                    self._futures[key].set_exception(exc)
            return self._futures[key]

    def take(self, cfg: RunConfig, live_gpu: str, timeout_s: float) -> dict[str, Any] | None:
        """The prediction's columns, or None where it failed, broke its pool or is not done in ``timeout_s``."""
        try:
            pred = self.submit(cfg, live_gpu).result(timeout=timeout_s)
        except Exception:
            pred = {}
        with self._lock:
            self._futures.pop((cfg.key(), live_gpu), None)
        return R.prediction_columns(pred) if pred.get(R.STATUS) == R.OK else None

    def cancel(self) -> None:
        """Drop the predictions not started; those running finish (a few seconds) as their processes exit."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Drop the predictions not asked for (configurations another sweep ran) and stop the pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class PredictAheadExecutor:
    """Measures each configuration in a fresh worker (``measure``) while :class:`Predictions` are made ahead
    of it on the CPU cores: the prediction and the measurement of a configuration in two processes
    (:class:`wire.Instructions`), the measuring worker taking the prediction's columns instead of predicting
    again. The record is the one a single worker would have written. For a GPU measured one configuration
    at a time (``bench validate``, ``bench run`` on CUDA): its worker would otherwise spend seconds of CPU
    on each prediction while the GPU waits. ``live_gpu``: the GPU's name, whose catalogue entry the
    prediction uses as the measuring worker would. Predicting ahead is only a head start: a prediction
    that is not ready and sound within the configuration's time limit is not passed on, and the measuring
    worker predicts itself, its record saying what went wrong.

    ``gate``: the GPU is shared by several such executors (``bench validate --share-gpu``), each measurement
    admitted by its predicted memory (:class:`bench.sweep.share.MemoryGate`); one that ran beside another is
    marked so (:func:`bench.record.shared`), and one that ran out of memory beside another is measured again
    alone.

    :func:`run_sweep` calls :meth:`plan` with the configurations it will run, so that their predictions start
    at once, in that order; a configuration it was not told of is predicted when it comes."""

    measure: LocalExecutor
    ahead: Predictions = field(default_factory=Predictions)
    live_gpu: str = ""
    gate: MemoryGate | None = None

    @property
    def depth(self) -> int:
        """How many configurations ahead of its turn this executor is told of (its measuring workers' ``prestart``)."""
        return max(1, self.measure.prestart)

    def plan(self, cfgs: Iterable[RunConfig], timeout_s: float) -> None:
        """Start the predictions of ``cfgs``, in that order."""
        for cfg in cfgs:
            self.ahead.submit(cfg, self.live_gpu)

    def run(self, cfg: RunConfig, timeout_s: float, upcoming: Sequence[RunConfig] = ()) -> dict[str, Any] | None:
        """``upcoming``: the configurations this executor runs next (:func:`run_sweep` knows them), whose measuring
        workers are sent them ahead of their turn (:class:`LocalExecutor`'s ``upcoming``). ``cfg``'s own worker is
        sent it first, where none was (the sweep's first, or one taken from another executor's queue): it imports and
        prepares while the prediction is made and the gate waits."""
        ahead_of = getattr(self.measure, "ahead_of", None)
        if ahead_of is not None:
            ahead_of([cfg, *upcoming])
        pred = self.ahead.take(cfg, self.live_gpu, timeout_s)
        how = None if pred is None else wire.Instructions(prediction=pred)
        if self.gate is None:
            return self.measure.run(cfg, timeout_s, how, upcoming=upcoming)
        try:
            with self.gate.hold(self.gate.need(pred)) as held:
                rec = self.measure.run(cfg, timeout_s, how, upcoming=upcoming)
            if held.shared and rec is not None and rec.get(R.STATUS) == R.OOM:  # the others' memory, maybe: alone now
                with self.gate.hold(self.gate.capacity) as held:
                    rec = self.measure.run(cfg, timeout_s, how, upcoming=upcoming)
        except GateClosed:  # interrupted while waiting for its turn: nothing recorded (run again next time)
            return None
        return R.shared(rec) if held.shared and rec is not None else rec

    def cancel(self) -> None:
        if self.gate is not None:  # before the workers are killed: nothing waiting may start one
            self.gate.close()
        self.ahead.cancel()
        self.measure.cancel()

    def close(self) -> None:
        self.ahead.close()
        self.measure.close()


def local_pool(backend: str, jobs: int, gpus: Sequence[str], cores: int,
               on_log: Callable[[str], None] | None = None) -> list[LocalExecutor]:
    """``jobs`` executors for :func:`run_sweep`: on CUDA each pinned to its own GPU
    (``CUDA_VISIBLE_DEVICES``; more jobs than GPUs is a ValueError, as two measurements must never share
    one) and starting its next worker ahead (``prestart``); otherwise each given its share of the ``cores``
    as threads."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1; got {jobs}")
    if backend == Backend.CUDA:
        if jobs > len(gpus):
            raise ValueError(f"--jobs {jobs} but {len(gpus)} GPU(s) visible: one measurement per GPU at a time; "
                             f"use --jobs {len(gpus)} or fewer")
        return [LocalExecutor(on_log=on_log, env={"CUDA_VISIBLE_DEVICES": g}, prestart=spares_ahead(cores, jobs))
                for g in gpus[:jobs]]
    share = str(max(1, cores // jobs))  # the measurement pins its threads by THREADS_ENV (a user's value stands)
    env = {"OMP_NUM_THREADS": share, THREADS_ENV: os.environ.get(THREADS_ENV) or share,
           "CUDA_VISIBLE_DEVICES": ""} if jobs > 1 else {}
    return [LocalExecutor(on_log=on_log, env=env) for _ in range(jobs)]


def rerun_reason(rec: dict[str, Any], timeout_s: float, force: bool = False, retry_failed: bool = False,
                 no_skip: bool = False, budget_bytes: int | None = None) -> str | None:
    """Why a recorded configuration is run again, or None when its record stands. A ``predicted_oom``
    record is run with ``no_skip`` (measure anyway), or screened again against a larger GPU."""
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
    if status == R.PREDICTED_OOM:
        if no_skip:
            return "--no-skip"
        if budget_bytes is not None and (rec.get(R.GPU_BUDGET) or 0) < budget_bytes:
            return "predicted against a smaller GPU memory"
    return None


def run_sweep(
    configs: Iterable[RunConfig],
    out: str | Path,
    timeout_s: float = 600,
    force: bool = False,
    retry_failed: bool = False,
    executor: Executor | BatchExecutor | Sequence[Executor] | None = None,
    on_start: Callable[[RunConfig], None] | None = None,
    on_done: Callable[[RunConfig, dict[str, Any]], None] | None = None,
    on_skip: Callable[[RunConfig, str], None] | None = None,
    no_skip: bool = False,
    budget_bytes: int | None = None,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Run every configuration whose record is missing or must be re-run (:func:`rerun_reason`);
    append each record as it comes. Returns the new records. ``on_skip(cfg, why)`` reports a
    configuration left alone: already recorded, or being run by another process.

    ``executor``: one executor (one configuration at a time), a sequence of them (as many at once,
    each executor busy with one configuration at a time: a GPU each), or a :class:`BatchExecutor`.
    An executor that returns None for a configuration (a screen that lets it through) stores nothing.

    ``deadline`` (a :func:`time.monotonic` time; executors that run one configuration at a time): no
    configuration starts after it, and each one left is reported to ``on_skip`` as :data:`TIME_LIMIT`
    (a GPU lent for a while: what was measured is stored, a later sweep goes on from there).
    """
    if isinstance(executor, BatchExecutor):
        if deadline is not None:
            raise ValueError("a batch executor hands every configuration over at once: no deadline")
        return _run_batch(executor, list(configs), out, timeout_s, force, retry_failed, on_start, on_done, on_skip,
                          no_skip, budget_bytes)
    pool = list(executor) if isinstance(executor, Sequence) else [executor or LocalExecutor()]
    if not pool:
        raise ValueError("run_sweep needs at least one executor")
    configs = list(configs)
    try:
        return _run_pool(pool, configs, out, timeout_s, force, retry_failed, on_start, on_done, on_skip, no_skip,
                         budget_bytes, deadline)
    except BaseException:  # Ctrl-C or a store error: take running workers down (work ahead included)
        for ex in pool:
            if hasattr(ex, "cancel"):
                ex.cancel()
        raise
    finally:
        for ex in pool:
            if hasattr(ex, "close"):
                ex.close()


def _run_pool(pool: list[Executor], configs: list[RunConfig], out: str | Path, timeout_s: float, force: bool,
              retry_failed: bool, on_start, on_done, on_skip, no_skip: bool, budget_bytes: int | None,
              deadline: float | None = None) -> list[dict[str, Any]]:
    """:func:`run_sweep` on executors that run one configuration at a time each."""
    planners = [ex for ex in pool if hasattr(ex, "plan")]
    if planners:  # what will be run, so that work ahead of it (predictions) can start
        recorded = store.latest(out)
        todo = [c for c in configs if (rec := recorded.get(c.key())) is None
                or rerun_reason(rec, timeout_s, force, retry_failed, no_skip, budget_bytes) is not None]
        for ex in planners:
            ex.plan(todo, timeout_s)
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for ex in pool:
        idle.put(ex)
    new: list[dict[str, Any]] = []

    def one(cfg: RunConfig, lane: Any = None, upcoming: Sequence[RunConfig] = ()) -> None:
        """``lane``: the executor that runs ``cfg`` (else the first idle one), told its ``upcoming`` ones."""
        key = cfg.key()
        with store.claim(out, key) as mine:
            if not mine:
                if on_skip:
                    on_skip(cfg, "running in another process")
                return
            rec = store.latest(out).get(key)  # read under the claim: another sweep may just have finished it
            if rec is not None and rerun_reason(rec, timeout_s, force, retry_failed, no_skip, budget_bytes) is None:
                if on_skip:
                    on_skip(cfg, "recorded")
                return
            ex = lane or idle.get()  # (waiting for an idle one may take until after the deadline)
            if deadline is not None and time.monotonic() >= deadline:
                if lane is None:
                    idle.put(ex)
                if on_skip:
                    on_skip(cfg, TIME_LIMIT)
                return
            try:
                if on_start:
                    on_start(cfg)
                rec = ex.run(cfg, timeout_s) if lane is None else ex.run(cfg, timeout_s, upcoming=upcoming)
            finally:
                if lane is None:
                    idle.put(ex)
            if rec is None:
                return
            store.append(out, rec)
        new.append(rec)
        if on_done:
            on_done(cfg, rec)

    # executors that each know their next configurations (their workers are sent them ahead) take them in turn
    lanes = _Lanes(configs, max(ex.depth for ex in planners)) if planners and len(planners) == len(pool) else None
    if lanes is None and len(pool) == 1:
        for cfg in configs:
            one(cfg)
        return new
    work, jobs = (partial(lanes.drive, one=one), pool) if lanes is not None else (one, configs)
    threads = ThreadPoolExecutor(len(pool), thread_name_prefix="sweep")
    try:
        for fut in [threads.submit(work, job) for job in jobs]:
            fut.result()
    except BaseException:  # Ctrl-C or a store error: stop the queue, take running workers down
        if lanes is not None:
            lanes.stop()
        threads.shutdown(wait=False, cancel_futures=True)
        for ex in pool:
            if hasattr(ex, "cancel"):
                ex.cancel()
        raise
    finally:
        threads.shutdown(wait=True)
    return new


class _Lanes:
    """The configurations of a sweep dealt to executors that each run one at a time and know their next ``depth``
    (:class:`PredictAheadExecutor`: its measuring workers for those are sent them ahead, and do their CPU-side part
    while this one measures). An executor takes its next configurations when it starts one, in the sweep's order.
    One that finds nothing left takes the last of the longest queue of another (whose head start is lost) rather
    than stand idle while that one measures."""

    def __init__(self, configs: list[RunConfig], depth: int = 1) -> None:
        if depth < 1:  # (PredictAheadExecutor.depth is 1 or more)
            raise ValueError(f"an executor knows at least its next configuration; got depth {depth}")
        self._todo = list(reversed(configs))  # popped from the end: the sweep's order
        self._next: dict[int, list[RunConfig]] = {}
        self._depth = depth
        self._lock = threading.Lock()
        self._stopped = False

    def take(self, lane: int) -> tuple[RunConfig | None, tuple[RunConfig, ...]]:
        """The configuration ``lane`` runs now (None: the sweep is done or stopped) and those it runs next."""
        with self._lock:
            if self._stopped:
                return None, ()
            mine = self._next.setdefault(lane, [])
            cfg = mine.pop(0) if mine else self._todo.pop() if self._todo else None
            if cfg is None:  # the last ones, held by busy executors: one more runs at once
                longest = max(self._next.values(), key=len)
                cfg = longest.pop() if longest else None
            while cfg is not None and self._todo and len(mine) < self._depth:
                mine.append(self._todo.pop())
            return cfg, tuple(mine)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def drive(self, ex: Any, one: Callable[..., None]) -> None:
        """Run configurations on ``ex`` until none is left (``one``: a configuration's run and record)."""
        while True:
            cfg, upcoming = self.take(id(ex))
            if cfg is None:
                return
            try:
                one(cfg, ex, upcoming)
            except BaseException:  # a store error: the other executors take nothing more
                self.stop()
                raise


def _run_batch(executor: BatchExecutor, configs: list[RunConfig], out: str | Path, timeout_s: float, force: bool,
               retry_failed: bool, on_start, on_done, on_skip, no_skip: bool, budget_bytes: int | None) -> list[dict[str, Any]]:
    """Claim every configuration to run, hand them all to the batch executor, store each record as its
    job ends (a job that stored its record itself is not stored twice). The claims are held until the
    whole batch has ended, so a second ``bench run`` on ``out`` submits none of them again."""
    new = []
    with contextlib.ExitStack() as held:
        claimed = []
        for cfg in configs:
            if held.enter_context(store.claim(out, cfg.key())):
                claimed.append(cfg)
            elif on_skip:
                on_skip(cfg, "running in another process")
        recorded = store.latest(out)
        todo = []
        for cfg in claimed:
            rec = recorded.get(cfg.key())
            if rec is not None and rerun_reason(rec, timeout_s, force, retry_failed, no_skip, budget_bytes) is None:
                if on_skip:
                    on_skip(cfg, "recorded")
            else:
                todo.append(cfg)
        if todo:
            for cfg, rec, stored in executor.run_all(todo, timeout_s, out, on_start):
                if not stored:
                    store.append(out, rec)
                new.append(rec)
                if on_done:
                    on_done(cfg, rec)
    return new
