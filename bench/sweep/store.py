"""The results store: one JSON object per line in ``<out>/results.jsonl``, that loses nothing.

- **Appends** are serialized across processes by a lock file (``results.jsonl.lock``, a
  :class:`filelock.FileLock`, released by the OS if its holder dies), written in one ``write`` call
  whose byte count is checked (a short write on a full disk is undone and raised), and ``fsync``-ed.
- **Healing**: before each append, and by :func:`repair` (``bench repair``), lines that are not JSON
  objects (a line torn by a killed writer, a foreign line) are moved aside into
  ``results.rejected.jsonl`` and the store is rewritten without them (atomically, by rename). So the
  store is always a valid JSON Lines file: ``pandas.read_json(path, lines=True)`` reads it.
- **Reading** never fails on a bad line: it is skipped with a :class:`StoreWarning` naming its line.
- **Latest wins**: a configuration re-run (``--force``, ``--retry-failed``) appends a new record; every
  reader (:func:`load`, :func:`latest`) sees the latest record per key. ``load(history=True)`` keeps all.
- **Claims**: :func:`claim` takes a per-configuration lock (``.running/<key>.lock``) while a process
  runs that configuration, so two sweeps on the same directory never run it twice at once. Beside the
  lock, a note (``.running/<key>.json``: host, pid, since, a SLURM job id) says who holds it, for
  :func:`running` (``bench status``); a note whose process is gone is stale and ignored.
- **Sweeps**: :func:`begin_sweep` writes the keys and labels a ``bench run`` set out to do
  (``.sweeps/<time>-<host>-<pid>.json``), so that ``bench status`` can tell pending from never asked for.

Imports no torch (nor pandas until a DataFrame is asked for).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .. import record as R

FILENAME = "results.jsonl"
REJECTED = "results.rejected.jsonl"
RUNNING = ".running"
SWEEPS = ".sweeps"


class StoreWarning(UserWarning):
    """A line of the store that is not a record (skipped, and moved aside at the next write)."""


def path(out: str | Path) -> Path:
    """The store of a results directory (or the given ``.jsonl`` file itself)."""
    p = Path(out)
    return p if p.suffix == ".jsonl" and not p.is_dir() else p / FILENAME


def missing(out: str | Path, what: str = "records") -> str:
    """What to say where ``out`` holds no store: the folder it expected, and the runs inside it where ``out`` is
    their parent (``reports/validation`` given for ``reports/validation/<run>``)."""
    out = Path(out)
    inside = sorted(d.name for d in out.iterdir() if path(d).exists()) if out.is_dir() else []
    return f"no {what} in {out} (expected {path(out)})" + (f"; the runs in it: {', '.join(inside)}" if inside else "")


def _lock(p: Path) -> FileLock:
    return FileLock(str(p) + ".lock")


def nearest_existing(folder: str | Path) -> Path:
    """``folder`` or its nearest ancestor that exists: what decides whether the folder can be made (a file
    there cannot hold one)."""
    target = Path(folder).absolute()
    return next(a for a in (target, *target.parents) if a.exists())


def check_writable(out: str | Path) -> None:
    """Raise OSError (one line) unless records can be written under ``out``: checked before any work."""
    p = path(out)
    try:
        existing = nearest_existing(p.parent)
        if not existing.is_dir():  # a file in the way: say so, not mkdir's "File exists"
            raise NotADirectoryError(f"{existing} is a file")
        p.parent.mkdir(parents=True, exist_ok=True)
        with _lock(p), tempfile.TemporaryFile(dir=p.parent):
            pass
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(f"{p} is not writable")
    except OSError as exc:
        raise OSError(f"cannot write results under {p.parent}: {exc.strerror or exc}") from None


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on a line, or None when the line is not one (not a JSON object, or one without a key:
    foreign to the store)."""
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) and R.KEY in rec else None


def _heal(p: Path) -> int:
    """Move lines that are not records (and a torn last line) aside; the caller holds the lock."""
    if not p.exists():
        return 0
    data = p.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty unless the last line was torn
    good, bad = [], []
    for line in lines:
        if not line.strip():
            continue
        (good if _parse(line) is not None else bad).append(line)
    if tail.strip():
        (good if _parse(tail) is not None else bad).append(tail)
    if not bad and not tail:
        return 0
    if bad:
        with open(p.parent / REJECTED, "ab") as fh:
            fh.write(b"".join(b + b"\n" for b in bad))
            fh.flush()
            os.fsync(fh.fileno())
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".results.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(g + b"\n" for g in good))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(bad)


def append(out: str | Path, record: dict[str, Any]) -> None:
    """Append one record: locked, on a fresh line, byte count checked, fsync-ed."""
    p = path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, default=str, allow_nan=True) + "\n").encode()
    with _lock(p):
        _heal(p)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            written = os.write(fd, data)
            if written != len(data):
                os.ftruncate(fd, before)
                raise OSError(f"short write to {p}: {written} of {len(data)} bytes (disk full?); record not stored")
            os.fsync(fd)
        finally:
            os.close(fd)


def repair(out: str | Path) -> int:
    """Move every line that is not a record aside into ``results.rejected.jsonl``; returns how many."""
    p = path(out)
    if not p.exists():
        return 0
    with _lock(p):
        return _heal(p)


def records(out: str | Path) -> Iterator[dict[str, Any]]:
    """Every record in order (all of them, re-runs included); bad lines skipped with a warning."""
    p = path(out)
    if not p.exists():
        return
    with open(p, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = _parse(line)
            if rec is None:
                what = "torn (no end of line)" if not line.endswith(b"\n") else "not a record (a JSON object with a key)"
                warnings.warn(f"{p}:{n}: skipped a line that is {what}; `bench repair` moves it aside",
                              StoreWarning, stacklevel=2)
                continue
            if R.BACKEND not in rec and "device" in rec:  # records written before backends had their name
                rec[R.BACKEND] = rec.pop("device")
            yield rec


def latest(out: str | Path) -> dict[str, dict[str, Any]]:
    """The latest record of each configuration, by key."""
    return {r[R.KEY]: r for r in records(out) if R.KEY in r}


def load(out: str | Path, history: bool = False):
    """The records as a DataFrame: the latest per configuration (all, in order, with ``history``)."""
    import pandas as pd

    rows = list(records(out)) if history else list(latest(out).values())
    return pd.DataFrame.from_records(rows)


@contextlib.contextmanager
def claim(out: str | Path, key: str) -> Iterator[bool]:
    """Hold the configuration ``key`` for this process while the block runs; yields False (and holds
    nothing) when another process is running it."""
    d = path(out).parent / RUNNING
    d.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(d / f"{key}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        note_claim(out, key)
        yield True
    finally:
        with contextlib.suppress(OSError):
            (d / f"{key}.json").unlink()
        lock.release()


def note_claim(out: str | Path, key: str, **info: Any) -> None:
    """Write (or extend, e.g. with ``job_id``) the note of a configuration this process holds."""
    note = path(out).parent / RUNNING / f"{key}.json"
    note.parent.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        old = json.loads(note.read_text())
    if old.get("pid") != os.getpid() or old.get("host") != socket.gethostname():
        old = {"host": socket.gethostname(), "pid": os.getpid(),
               "since": datetime.now(UTC).isoformat(timespec="seconds")}
    tmp = note.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**old, **info}))
    os.replace(tmp, note)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(out: str | Path) -> dict[str, dict[str, Any]]:
    """The configurations held by a live process, by key, with their notes (host, pid, since, job_id).
    A note left by a process of this host that is gone is stale: skipped (notes of other hosts are
    trusted, as their processes cannot be checked from here)."""
    d = path(out).parent / RUNNING
    found = {}
    for note in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            info = json.loads(note.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", 0))):
            continue
        found[note.stem] = info
    return found


def begin_sweep(out: str | Path, configs: Iterable[Any], label: Callable[[Any], str] | None = None, **about: Any) -> Path:
    """Note what a sweep set out to do: each configuration's key and label (``bench status``), the label
    as the console shows it (``label``: :func:`bench.sweep.expand.label`, the patch named by its spec)."""
    label = label or (lambda c: c.label())
    d = path(out).parent / SWEEPS
    d.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    p = d / f"{stamp}-{socket.gethostname()}-{os.getpid()}.json"
    p.write_text(json.dumps({**about, "configs": [{"key": c.key(), "label": label(c)} for c in configs]}))
    return p


def sweeps(out: str | Path) -> dict[str, str]:
    """Every configuration any sweep on ``out`` set out to do: key -> label (the latest sweep's label)."""
    d = path(out).parent / SWEEPS
    asked: dict[str, str] = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
            asked.update({c["key"]: c["label"] for c in json.loads(p.read_text())["configs"]})
    return asked


#: what ``bench status`` says of a configuration
PENDING, RUNNING_STATE, DONE_STATE, FAILED_STATE = "pending", "running", "done", "failed"
STATES = (PENDING, RUNNING_STATE, DONE_STATE, FAILED_STATE)


def _label(rec: dict[str, Any]) -> str:
    """A recorded configuration's label, as :meth:`RunConfig.label` writes it (records of a sweep that
    left no note under ``.sweeps/``)."""
    stage = f"[{rec[R.STAGE]}]" if rec.get(R.STAGE) else ""
    return (f"{rec.get(R.ARCH)}{stage} {rec.get(R.MODE)} {rec.get(R.SIZE)} b{rec.get(R.BATCH)} "
            f"{rec.get(R.PRECISION)} {rec.get(R.BACKEND)}")


def progress(out: str | Path) -> list[dict[str, str]]:
    """Each configuration a sweep on ``out`` set out to do (and each recorded one) with its state:
    running (held by a live process; on SLURM, submitted), pending (asked for, no record yet), done (a
    result: ok, oom, predicted_oom) or failed (error, timeout, preempted), and a detail."""
    asked, recs, held = sweeps(out), latest(out), running(out)
    rows = []
    for key in list(asked) + [k for k in recs if k not in asked]:
        rec = recs.get(key)
        label = asked.get(key) or _label(rec or {})
        if key in held:
            h = held[key]
            where = f"job {h['job_id']}" if h.get("job_id") else f"pid {h.get('pid')}"
            state, detail = RUNNING_STATE, f"{where} on {h.get('host')} since {h.get('since')}"
        elif rec is None:
            state, detail = PENDING, ""
        else:
            status = str(rec.get(R.STATUS))
            state = DONE_STATE if status in R.DONE else FAILED_STATE
            detail = status if state == DONE_STATE else f"{status}: {rec.get(R.ERROR) or ''}"
        rows.append({"key": key, "label": label, "state": state, "detail": detail})
    return rows
