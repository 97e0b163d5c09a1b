"""How the parent and a worker talk. On the worker's stdin: its configuration's JSON on the first
line, optionally :class:`Instructions` on the second; where those say ``ahead`` (the configuration sent
before it is due), the instructions to go on, on a third line, once it is. On its stdout: a ``RECORD:`` line with the
record's JSON (the result), ``LOG:`` lines with progress of long work; anything else (a library's
print) is ignored. Shared by :mod:`bench.sweep.worker` and :mod:`bench.sweep.executor`; imports
nothing heavy."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class Instructions:
    """How a worker runs its configuration, beyond what the configuration is (so never in its key): the
    prediction and the measurement of one CUDA configuration made by two workers, as ``bench validate``
    does to predict on the CPU cores while the GPU measures (:class:`bench.sweep.executor.PredictAheadExecutor`).

    ``predict_only``: the prediction alone, touching no GPU; ``live_gpu`` names the device the
    configuration will be measured on (its catalogue entry predicts the step time, as the measuring worker
    would from the live device). ``prediction``: the prediction's columns, made by such a worker, which the
    measuring worker takes instead of predicting again. ``ahead``: the configuration comes before its turn (a
    GPU is busy with the one before): the worker makes its CPU-side parts, then waits for the instructions to go
    on (:func:`go_text`, :func:`read_go`)."""

    predict_only: bool = False
    live_gpu: str = ""
    prediction: dict[str, Any] | None = None
    ahead: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> Instructions:
        return cls(**json.loads(text))


def stdin_text(config_json: str, how: Instructions | None = None) -> str:
    """What the parent writes to a worker's stdin."""
    return config_json if how is None else config_json + "\n" + how.to_json()


def ahead_text(config_json: str) -> str:
    """What the parent writes to a worker's stdin before the configuration's turn (the stream stays open)."""
    return config_json + "\n" + Instructions(ahead=True).to_json() + "\n"


def go_text(how: Instructions | None = None) -> str:
    """What the parent writes to a worker sent :func:`ahead_text` once its configuration's turn comes."""
    return (how or Instructions()).to_json() + "\n"


def read_stdin(text: str) -> tuple[str, Instructions]:
    """(the configuration's JSON, the instructions) from what a worker read on its stdin."""
    first, _, rest = text.partition("\n")
    return first, Instructions.from_json(rest) if rest.strip() else Instructions()


def read_config(stream: Any) -> tuple[str, Instructions]:
    """(the configuration's JSON, the instructions) from a worker's stdin, reading no further than they go: a
    configuration sent ahead is followed, later, by :func:`read_go`'s line."""
    return read_stdin(stream.readline() + stream.readline())


def read_go(stream: Any) -> Instructions | None:
    """The instructions to go on, once the configuration sent ahead is due; None when the stream ended without
    them (the parent discarded the worker: a sweep stopped, or another configuration came)."""
    line = stream.readline()
    return Instructions.from_json(line) if line.strip() else None
