"""``bench compare`` and ``bench baseline``: the committed grid's predicted memory against its baseline (CI's
regression check)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..console import bar, console, fail
from ..options import (
    parse_size,
    signed_percent,
)
from .common import (
    BASELINE,
    JobsOption,
    app,
    prediction_jobs,
    validated,
    writable_file,
)


def _tolerance(text: str) -> float:
    """``0.5%`` or ``0.005`` as a fraction, or one clear line: a tolerance is a finite fraction, 0 or more."""
    try:
        tol = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        tol = math.nan
    if not 0 <= tol < math.inf:
        fail(f"--tolerance must be 0 or more, like 0.5% or 0.005; got {text!r}")
    if tol > 1 and not text.endswith("%"):  # 200 meant as 200%, or as a fraction (20,000%)? said, not guessed
        fail(f"--tolerance {text} is a fraction, {tol:.0%}: write {text}% for {text} percent, or a fraction below 1 "
             "like 0.005")
    return tol


def _predict_grid(configs, verb: str, jobs: int | None):
    from ..results import compare
    from ..sweep.expand import label

    with bar(len(configs), verb) as b:
        return compare.predict_grid(configs, progress=lambda cfg: (b.start(label(cfg)), b.advance()), jobs=jobs)


def _print_comparison(result, tolerance: float) -> None:
    def table(title: str, rows: list[dict]) -> Table:
        t = Table(title=title)
        for col in ("configuration", "category", "baseline", "now", "change"):
            t.add_column(col)
        for r in rows:
            t.add_row(escape(r["config"]), r["figure"], f"{r['baseline_bytes']:,}", f"{r['current_bytes']:,}",
                      signed_percent(r['change']))
        return t

    if result.grown:
        console.print(table(f"[red]grew beyond {tolerance:.2%}[/]", result.grown))
    if result.missing:
        console.print("[red]configurations missing from the current grid:[/] " + escape("; ".join(result.missing)))
    if result.shifted:
        console.print(table("moved between categories (totals did not grow)", result.shifted))
    if result.shrunk:
        console.print(table("[green]shrank (good news)[/]", result.shrunk))
    if result.added:
        console.print(f"new configurations (not in the baseline): {len(result.added)}")
    if result.failed:
        console.print("[red]memory regression[/]: if intended, run `bench baseline --update` and commit the diff")
    else:
        console.print(f"[green]no memory regression[/] (tolerance {tolerance:.2%})")


@app.command("compare")
def compare_(
    baseline: Annotated[Path, typer.Option(help="baseline CSV")] = BASELINE,
    tolerance: Annotated[str, typer.Option(help="allowed relative growth, e.g. 0.5%")] = "0.5%",
    from_pytest_benchmark: Annotated[tuple[Path, Path] | None, typer.Option(
        "--from-pytest-benchmark", help="compare the memory in two saved pytest-benchmark JSON files instead")] = None,
    jobs: JobsOption = None,
) -> None:
    """Re-predict the baseline grid and fail (exit 1) on memory growth or missing configurations."""
    from ..results import compare

    tol = _tolerance(tolerance)
    jobs = prediction_jobs(jobs)
    if from_pytest_benchmark:
        for p in from_pytest_benchmark:
            if not p.exists():
                fail(f"no such pytest-benchmark file: {p}")
        result = validated(compare.compare_pytest_benchmark, *from_pytest_benchmark, tolerance=tol)
    else:
        base = _read_baseline(baseline)
        result = compare.compare(base, _predict_grid(compare.grid(), "predicting", jobs), tol)
    _print_comparison(result, tol)
    if result.failed:
        raise typer.Exit(1)


@app.command("baseline")
def baseline_(
    update: Annotated[bool, typer.Option("--update", help="rewrite the baseline from current predictions")] = False,
    path: Annotated[Path, typer.Option(help="baseline CSV")] = BASELINE,
    jobs: JobsOption = None,
) -> None:
    """Show or (with --update) rewrite the committed memory baseline."""
    from ..results import compare

    jobs = prediction_jobs(jobs)
    if not update:
        base = _read_baseline(path)
        # as wide as the table needs: a squeezed column would cut figures (a narrow terminal wraps whole lines)
        from rich.console import Console

        table = _baseline_table(base, path)
        width = sum(c.min_width or 0 for c in table.columns) + 2 * len(table.columns)
        Console(width=max(console.width, width)).print(table)
        return
    writable_file(path)  # before minutes of predictions
    df = _predict_grid(compare.grid(), "predicting", jobs)
    compare.write(df, path)
    console.print(f"wrote {len(df)} configurations to {escape(str(path))}; review `git diff {escape(str(path))}` "
                  "and commit it", highlight=False)


def _read_baseline(path: Path):
    """The baseline CSV at ``path``, or one clear line (none there, or not a baseline)."""
    from ..results import compare

    try:
        return compare.read(path)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _baseline_table(df, path: Path) -> Table:
    """The baseline as a table a reader can scan: one row per configuration, figures in KiB/MiB/GiB, no
    column cut (each is as wide as its widest cell)."""
    from architectures.spec import format_patch

    from ..options import human_bytes
    from ..results import compare

    names = ["arch", "stage", "mode", "precision", "size", "batch", "options"]
    figures = [f for f in compare.FIGURES if f in df]
    heads = names + [f.removeprefix("pred_").removeprefix("peak_").removesuffix("_bytes") for f in figures]
    rows = []
    for r in df.to_dict("records"):
        opts = ",".join(f"{k}={v}" for k, v in json.loads(r["options"]).items()) if isinstance(r["options"], str) else ""
        rows.append([str(r["arch"]), r["stage"] if isinstance(r["stage"], str) else "", str(r["mode"]), str(r["precision"]),
                     format_patch(parse_size(str(r["size"]))), str(r["batch"]), opts, *(human_bytes(r[f]) for f in figures)])
    t = Table(title=f"{path}: predicted CUDA peaks, and the live bytes at the peak by category ({len(df)} configurations)",
              box=None, padding=(0, 1))
    for i, head in enumerate(heads):
        width = max([len(head)] + [len(row[i]) for row in rows])
        t.add_column(head, justify="left" if i < len(names) else "right", no_wrap=True, min_width=width)
    for row in rows:
        t.add_row(*map(escape, row))
    return t
