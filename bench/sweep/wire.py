"""What a worker says on its stdout, and how the parent reads it: a ``RECORD:`` line with the record's
JSON (the result), ``LOG:`` lines with progress of long work. Anything else (a library's print) is
ignored. Shared by :mod:`bench.sweep.worker` and :mod:`bench.sweep.executor`; imports nothing heavy."""

from __future__ import annotations

import json
from typing import Any

RECORD = "RECORD:"
LOG = "LOG:"


def record_line(record: dict[str, Any]) -> str:
    return RECORD + json.dumps(record, default=str) + "\n"


def log_line(message: str) -> str:
    return LOG + message.replace("\n", " ") + "\n"


def parse(line: str) -> tuple[str, Any] | None:
    """(``record``, dict) or (``log``, text) for a protocol line; None for any other line."""
    if line.startswith(RECORD):
        return "record", json.loads(line[len(RECORD):])
    if line.startswith(LOG):
        return "log", line[len(LOG):]
    return None
