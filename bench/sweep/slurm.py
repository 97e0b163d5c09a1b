"""``bench run --executor slurm``: one SLURM job per configuration (a job array), through submitit.

Why submitit: it writes the sbatch script, submits arrays, pickles the call, polls ``sacct`` and hands
back each job's result or its state; we add only what is ours. Each job runs the configuration the
way a local sweep does, through :class:`~bench.sweep.executor.LocalExecutor` (a fresh worker process
with its timeout, OOM and crash classification), adds its job id and node to the record and appends it
to the store itself (a shared file system; the store's lock serializes writers), so that a record a
finished job wrote is never lost, even when the submitting ``bench run`` is gone. A job that ends
without a result (SLURM's time limit, pre-emption, its memory limit, a node failure, a cancel) becomes
a record with that status from the job's state, unless the job stored its record before it died.

The cluster options (:class:`SlurmOptions`) come from flags and from a small TOML file
(``--slurm-config``); an unknown option is refused in one line before anything is submitted. Tests run
the same path through submitit's ``local`` (processes on this machine) and ``debug`` (in-process)
executors. Imports no torch.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import socket
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .. import record as R
from . import store
from .config import RunConfig
from .executor import LocalExecutor, failed

#: minutes a job is given beyond the configuration's timeout (start-up, prediction, writing the record)
SLACK_MIN = 10
#: SLURM job states (``sacct``) that end a job without a result -> the record's status
STATES = {"TIMEOUT": R.TIMEOUT_STATUS, "DEADLINE": R.TIMEOUT_STATUS, "PREEMPTED": R.PREEMPTED,
          "OUT_OF_MEMORY": R.OOM}
_MEM = re.compile(r"^\d+[KMGT]?$")
_SBATCH = re.compile(r"^--([a-z][a-z0-9-]*)(?:=(.+))?$")


@dataclass(frozen=True)
class SlurmOptions:
    """What a job asks the cluster for (``None``: the cluster's default)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_min: int | None = None  # default: the configuration's timeout + SLACK_MIN
    gpus_per_task: int = 1  # as ``--gres=gpu:N``; 0 for CPU or prediction sweeps
    cpus_per_task: int | None = None
    mem: str | None = None  # SLURM's --mem: 64G, 500M
    array_parallelism: int = 64  # array tasks running at once (the %N of --array)
    sbatch: tuple[str, ...] = ()  # further sbatch options, e.g. --exclusive, --mail-type=END
    setup: tuple[str, ...] = ()  # shell lines before the job starts (module load ..., source venv/bin/activate)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """The options of a TOML file (top level, or its ``[slurm]`` table); ValueError in one line."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except OSError as exc:
            raise ValueError(f"cannot read the SLURM config {p}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{p} is not TOML: {exc}") from None
        data = data.get("slurm", data)
        unknown = sorted(set(data) - set(cls.names()))
        if unknown:
            raise ValueError(f"{p}: unknown SLURM option(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}

    def merged(self, **flags: Any) -> SlurmOptions:
        """These options with every flag that was given (not None, not empty) put over them."""
        return replace(self, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in flags.items()
                                if v is not None and v != [] and v != ()}).checked()

    def checked(self) -> SlurmOptions:
        for name in ("time_min", "cpus_per_task", "array_parallelism"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"SLURM option {name} must be a whole number >= 1; got {v!r}")
        if not isinstance(self.gpus_per_task, int) or self.gpus_per_task < 0:
            raise ValueError(f"SLURM option gpus_per_task must be a whole number >= 0; got {self.gpus_per_task!r}")
        if self.mem is not None and not _MEM.match(str(self.mem)):
            raise ValueError(f"SLURM option mem must be like 64G or 500M; got {self.mem!r}")
        for line in self.sbatch:
            if not _SBATCH.match(line):
                raise ValueError(f"an sbatch option must be like --name or --name=value; got {line!r}")
        return self

    def describe(self) -> str:
        """One line of what the jobs ask for (shown before submitting)."""
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items() if v not in (None, ()))

    def parameters(self, timeout_s: float, root: Path) -> dict[str, Any]:
        """submitit ``AutoExecutor`` parameters (shared ones, and ``slurm_``-prefixed ones)."""
        minutes = self.time_min or math.ceil(timeout_s / 60) + SLACK_MIN
        extra = {m.group(1): (m.group(2) if m.group(2) is not None else True)
                 for m in map(_SBATCH.match, self.sbatch) if m}
        setup = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", *self.setup]
        params: dict[str, Any] = {
            "name": "segmem", "timeout_min": minutes, "cpus_per_task": self.cpus_per_task, "tasks_per_node": 1,
            "slurm_partition": self.partition, "slurm_account": self.account, "slurm_qos": self.qos,
            "slurm_constraint": self.constraint, "slurm_mem": self.mem,
            "slurm_gres": f"gpu:{self.gpus_per_task}" if self.gpus_per_task else None,
            "slurm_array_parallelism": self.array_parallelism, "slurm_setup": setup,
            "slurm_additional_parameters": extra or None, "local_setup": setup,
        }
        return {k: v for k, v in params.items() if v is not None}


def check_available(cluster: str = "slurm") -> None:
    """ValueError (one line: what to install or set) unless submitit, and for SLURM ``sbatch``, are here."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ValueError("--executor slurm needs submitit: pip install 'segmem[slurm]' (or pip install submitit)") from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("--executor slurm needs SLURM's sbatch on PATH: run bench on the cluster's login node "
                         "(or module load slurm)")


def run_job(cfg_json: str, timeout_s: float, out: str, command: Sequence[str] | None = None) -> dict[str, Any]:
    """What a job runs: the configuration in a worker process, its record stored by the job itself."""
    import submitit

    cfg = RunConfig.from_json(cfg_json)
    rec = LocalExecutor(**({"command": tuple(command)} if command else {})).run(cfg, timeout_s)
    assert rec is not None  # only a cancelled executor returns none, and nothing cancels a job's
    try:
        rec[R.JOB_ID] = submitit.JobEnvironment().job_id
    except RuntimeError:  # submitit's debug executor runs the call in-process, outside a job
        rec[R.JOB_ID] = "debug"
    rec[R.NODE] = socket.gethostname()
    store.append(out, rec)
    return rec


@dataclass
class SlurmExecutor:
    """Submits configurations as one job array (a single job for one configuration) and yields each
    record as its job ends (see the module docstring). ``cluster`` is submitit's: ``slurm``, or
    ``local``/``debug`` to run the same path without a cluster; ``command`` replaces the worker inside
    the job (tests)."""

    options: SlurmOptions
    folder: Path
    cluster: str = "slurm"
    command: Sequence[str] | None = None
    poll_s: float = 15.0
    root: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2])

    def executor(self, timeout_s: float):
        import submitit

        ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
        ex.update_parameters(**self.options.parameters(timeout_s, self.root))
        return ex

    def submit(self, cfgs: Sequence[RunConfig], timeout_s: float, out: str | Path) -> list:
        """Submit every configuration (an array where there are several); returns submitit's jobs."""
        ex = self.executor(timeout_s)
        command = list(self.command) if self.command else None
        dest = str(Path(out).resolve())
        with ex.batch():
            jobs = [ex.submit(run_job, c.to_json(), timeout_s, dest, command) for c in cfgs]
        return jobs

    def run_all(self, cfgs: Sequence[RunConfig], timeout_s: float, out: str | Path,
                on_start: Callable[[RunConfig], None] | None = None) -> Iterator[tuple[RunConfig, dict[str, Any], bool]]:
        import submitit
        from submitit.core.utils import UncompletedJobError

        jobs = self.submit(cfgs, timeout_s, out)
        by_job = {}
        for cfg, job in zip(cfgs, jobs):
            by_job[id(job)] = cfg
            store.note_claim(out, cfg.key(), job_id=str(job.job_id))
            if on_start:
                on_start(cfg)
        ended: set[int] = set()
        try:
            for job in submitit.helpers.as_completed(jobs, poll_frequency=self.poll_s):
                ended.add(id(job))
                cfg = by_job[id(job)]
                try:
                    rec, stored = job.result(), True
                except UncompletedJobError as exc:
                    rec, stored = self._lost(cfg, job, exc, timeout_s, out)
                yield cfg, rec, stored
        finally:  # interrupted (Ctrl-C): the claims go with us, so the jobs must too (a re-run submits them again)
            for job in jobs:
                if id(job) not in ended:
                    with contextlib.suppress(Exception):
                        job.cancel(check=False)

    def _lost(self, cfg: RunConfig, job, exc: Exception, timeout_s: float, out: str | Path) -> tuple[dict[str, Any], bool]:
        """The record of a job that returned none: the one it stored before it died, else its state's."""
        mine = store.latest(out).get(cfg.key())
        if mine is not None and str(mine.get(R.JOB_ID)) == str(job.job_id):
            return mine, True
        state = str(job.state).split()[0].upper() if job.state else "UNKNOWN"
        status = STATES.get(state, R.ERROR_STATUS)
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        try:
            stderr = job.stderr() or ""
        except OSError:
            stderr = ""
        rec = failed(cfg, status, f"job {job.job_id} ended {state} without a record: {first}"[:500], stderr[-2000:])
        info = {}
        try:
            info = job.get_info() if self.cluster == "slurm" else {}
        except Exception:  # sacct may be gone or slow; the node is then unknown
            pass
        rec.update({R.JOB_ID: str(job.job_id), R.NODE: info.get("NodeList") or (socket.gethostname() if self.cluster != "slurm"
                                                                                   else None),
                    R.TIMEOUT: timeout_s})
        return rec, False
