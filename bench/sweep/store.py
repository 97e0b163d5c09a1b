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
  runs that configuration, so two sweeps on the same directory never run it twice at once.

Imports no torch (nor pandas until a DataFrame is asked for).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .. import record as R

FILENAME = "results.jsonl"
REJECTED = "results.rejected.jsonl"
RUNNING = ".running"


class StoreWarning(UserWarning):
    """A line of the store that is not a record (skipped, and moved aside at the next write)."""


def path(out: str | Path) -> Path:
    """The store of a results directory (or the given ``.jsonl`` file itself)."""
    p = Path(out)
    return p if p.suffix == ".jsonl" and not p.is_dir() else p / FILENAME


def _lock(p: Path) -> FileLock:
    return FileLock(str(p) + ".lock")


def check_writable(out: str | Path) -> None:
    """Raise OSError (one line) unless records can be written under ``out``: checked before any work."""
    p = path(out)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with _lock(p), tempfile.TemporaryFile(dir=p.parent):
            pass
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(f"{p} is not writable")
    except OSError as exc:
        raise OSError(f"cannot write results under {p.parent}: {exc.strerror or exc}") from None


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on a line, or None when the line is not a JSON object."""
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


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
                what = "torn (no end of line)" if not line.endswith(b"\n") else "not a JSON object"
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
        yield True
    finally:
        lock.release()
