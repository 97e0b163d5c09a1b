"""What the CLI shows: one clear line for an error, one progress bar for long work, one summary line
per finished configuration. Labels and paths are printed as plain text (never rich markup: a path such
as ``/data/[ct]`` or a stage name in brackets must not be read as a style).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import record as R
from .options import human_bytes

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def error_line(message: str) -> None:
    """The one line on stderr that every error of the CLI is."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr, then exit (2: bad input; 1: the work itself failed)."""
    error_line(message)
    raise typer.Exit(code)


def _show_store_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def show_warnings() -> None:
    """Warnings (e.g. a skipped line of the results store) as one yellow line each, not a traceback frame."""
    warnings.showwarning = _show_store_warning


class Bar:
    """A progress bar over ``total`` items whose description names the current one."""

    def __init__(self, progress: Progress, total: int, verb: str) -> None:
        self.progress, self.verb = progress, verb
        self.task = progress.add_task(verb, total=total)

    def start(self, label: str) -> None:
        self.progress.update(self.task, description=f"{self.verb} {label}")

    def advance(self) -> None:
        self.progress.advance(self.task)

    def print(self, line: str, markup: bool = False) -> None:
        self.progress.console.print(line, highlight=False, markup=markup, soft_wrap=True)

    def done(self, text: str = "done") -> None:
        self.progress.update(self.task, description=text)


@contextlib.contextmanager
def bar(total: int, verb: str) -> Iterator[Bar]:
    """``with bar(len(items), "predicting") as b: b.start(label); ...; b.advance()``."""
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        yield Bar(progress, total, verb)


def step_time(rec: dict[str, Any]) -> str:
    """A step time with its spread, the only way a time is shown: ``0.612 s/step (IQR 0.018 s, 7 steps)``."""
    t, iqr, n = rec.get(R.STEP_TIME_MEDIAN), rec.get(R.STEP_TIME_IQR), rec.get(R.REPEATS)
    spread = f"IQR {iqr:.3f} s" if iqr is not None else "IQR unknown"
    return f"{t:.3f} s/step ({spread}{f', {n} steps' if n else ''})"


def summary_line(label: str, rec: dict[str, Any]) -> str:
    """One line for a finished configuration (rich markup; the label is escaped)."""
    label = escape(label)
    status = rec.get(R.STATUS)
    if status != R.OK:
        return f"  {label}: [red]{status}[/] {escape(str(rec.get(R.ERROR, '')))}"
    backend = rec.get(R.BACKEND)
    if backend == "cuda":
        meas = f"max allocated {human_bytes(rec.get(R.PEAK_ALLOCATED))}, reserved {human_bytes(rec.get(R.PEAK_RESERVED))}"
    elif backend == "cpu":
        meas = f"CPU live peak {human_bytes(rec.get(R.CPU_LIVE_PEAK))}"
    else:
        meas = ""
    # the three figures a user compares with a GPU: what torch allocates and what its cache reserves (cuDNN's
    # workspaces included, as max_memory_* count them) and what nvidia-smi would show (the context added)
    smi = rec.get(R.PRED_NVIDIA_SMI)
    pred = (f"predicted CUDA allocated {human_bytes(R.predicted_on_device(rec))}, "
            f"reserved {human_bytes(R.predicted_on_device(rec, reserved=True))}"
            + (f", nvidia-smi {human_bytes(smi)}" if smi else ""))
    speed = f", {step_time(rec)}" if rec.get(R.STEP_TIME_MEDIAN) else ""
    pt = rec.get(R.PRED_STEP_TIME)
    if pt:
        speed += f", predicted {pt:.3f} s/step on {rec.get(R.PRED_GPU)}"
    dice = ""
    if rec.get(R.DICE_STATUS) == R.OK:
        per = ", ".join(f"{k.removeprefix('dice_')} {rec[k]:.3f}" for k in R.class_columns(rec))
        dice = f"; Dice {per} (threshold baseline mean {rec.get(R.THRESHOLD_DICE_MEAN_FG, 0):.3f})"
    elif rec.get(R.DICE_STATUS):
        dice = f"; [red]Dice {rec[R.DICE_STATUS]}[/]: {escape(str(rec.get(R.DICE_ERROR, '')))}"
    return f"  {label}: {', '.join(x for x in (meas, pred) if x)}{speed}{dice}"
