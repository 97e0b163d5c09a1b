"""The results store: one JSON object per line in ``<out>/results.jsonl``, read by pandas in one call
(``pandas.read_json(path, lines=True)``, or :func:`load`).

Appends are single ``write`` calls on an ``O_APPEND`` descriptor followed by ``fsync``, so a sweep
killed at any point (even ``kill -9``) loses at most the record being written; :func:`load` skips a
torn last line. Every number's unit is in its column name (``_bytes``, ``_s``, ``_per_s``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

FILENAME = "results.jsonl"


def path(out: str | Path) -> Path:
    return Path(out) / FILENAME


def append(out: str | Path, record: dict[str, Any]) -> None:
    p = path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str, allow_nan=True) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def records(out: str | Path) -> Iterator[dict[str, Any]]:
    p = path(out) if Path(out).is_dir() or not str(out).endswith(".jsonl") else Path(out)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                continue


def load(out: str | Path) -> pd.DataFrame:
    """All records as a DataFrame (empty if there are none)."""
    return pd.DataFrame.from_records(list(records(out)))


def done_keys(out: str | Path) -> set[str]:
    return {r["key"] for r in records(out) if "key" in r}
