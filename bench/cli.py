"""The ``bench`` command line (Typer + rich). Parsing, validation and progress only: measurement
lives in :mod:`bench.sweep` and :mod:`bench.worker`, comparison in :mod:`bench.compare`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import architectures

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="segmem: peak memory, throughput and Dice of 3D segmentation networks.")
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr, then exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs; values parsed as Python literals where they are (``1.5``, ``(8, 16)``)."""
    import ast

    out = {}
    for item in items:
        if "=" not in item:
            fail(f"--set expects key=value; got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


@app.command("list")
def list_() -> None:
    """Every architecture with its parameter count (1 input channel, 3 classes), divisibility, citation."""
    table = Table(title="segmem architectures (parameters for 1 input channel, 3 classes)")
    for col in ("name", "parameters", "divisible by", "default patch / batch", "summary"):
        table.add_column(col, overflow="fold")
    for name in architectures.names():
        s = architectures.spec(name)
        patch = "x".join(map(str, s.default_sizes[0]))
        table.add_row(name, f"{s.param_count():,}", str(s.divisor), f"{patch} / {s.default_batches[0]}", s.summary)
    console.print(table)
    for name in architectures.names():
        console.print(f"[bold]{name}[/]: {architectures.spec(name).citation}", highlight=False)


@app.command()
def run(
    arch: Annotated[list[str], typer.Option("--arch", "-a", help="architecture name, repeatable, or 'all'")] = None,
    size: Annotated[list[str], typer.Option(help="cube edge (160) or DxHxW; repeatable; default: the arch's")] = None,
    batch: Annotated[list[int], typer.Option(help="batch size; repeatable; default: the arch's")] = None,
    mode: Annotated[list[str], typer.Option(help="train or infer; repeatable")] = None,
    precision: Annotated[list[str], typer.Option(help="fp32, bf16 or fp16 (autocast); default: the arch's")] = None,
    checkpointing: Annotated[bool | None, typer.Option("--checkpointing/--no-checkpointing",
                                                       help="gradient checkpointing; default: the arch's")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last_3d memory format")] = False,
    device: Annotated[str, typer.Option(help="auto, cuda, cpu or predict (GPU-free CUDA prediction)")] = "auto",
    repeats: Annotated[int, typer.Option(help="timed steps after warm-up")] = 3,
    timeout: Annotated[float, typer.Option(help="seconds per configuration before it is recorded as timeout")] = 900,
    out: Annotated[Path, typer.Option(help="results directory")] = Path("reports"),
    force: Annotated[bool, typer.Option(help="re-run configurations already recorded")] = False,
    set_: Annotated[list[str], typer.Option("--set", help="architecture override key=value, repeatable")] = None,
) -> None:
    """Sweep sizes x batches x modes x precisions for architectures; one isolated process per run."""
    from . import sweep

    arch = arch or ["meunet"]
    try:
        for a in arch:
            if a != "all":
                architectures.spec(a)
        dev = sweep.resolve_device(device)
        sizes = [sweep.parse_size(s) for s in (size or [])]
        configs = sweep.expand(arch, sizes, batch or [], mode or ["train"], precision or [], dev, checkpointing,
                               channels_last, parse_overrides(set_ or []), repeats)
    except ValueError as exc:
        fail(str(exc))
    if timeout <= 0:
        fail(f"timeout must be positive; got {timeout}")
    if dev == "cpu":
        console.print("[yellow]No CUDA GPU: measuring on the CPU. CPU figures are not GPU figures; "
                      "each record also carries the predicted CUDA peak (pred_* columns).[/]")
    counts = {"ok": 0, "skipped": 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=len(configs))

        def start(cfg) -> None:
            progress.update(task, description=f"running {cfg.label()}")

        def done(cfg, rec) -> None:
            if rec is None:
                counts["skipped"] += 1
            else:
                status = rec.get("status", "error")
                counts[status] = counts.get(status, 0) + 1
                progress.console.print(_summary_line(cfg, rec), highlight=False)
            progress.advance(task)

        sweep.run_sweep(configs, out, timeout, force, on_start=start, on_done=done)
        progress.update(task, description="sweep done")
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    console.print(f"{len(configs)} configuration(s): {parts}. Results: {out / 'results.jsonl'}")
    if counts["skipped"]:
        console.print("(already recorded configurations were skipped; --force re-runs them)")


def _tolerance(text: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fail(f"tolerance must be like 0.5% or 0.005; got {text!r}")
        raise


def _print_comparison(result, tolerance: float) -> None:
    from rich.table import Table

    def table(title: str, rows: list[dict]) -> Table:
        t = Table(title=title)
        for col in ("configuration", "category", "baseline", "now", "change"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["config"], r["figure"], f"{r['baseline_bytes']:,}", f"{r['current_bytes']:,}",
                      f"{r['change']:+.2%}")
        return t

    if result.grown:
        console.print(table(f"[red]grew beyond {tolerance:.2%}[/]", result.grown))
    if result.missing:
        console.print("[red]configurations missing from the current grid:[/] " + "; ".join(result.missing))
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
    baseline: Annotated[Path, typer.Option(help="baseline CSV")] = Path("reports/baseline/memory.csv"),
    tolerance: Annotated[str, typer.Option(help="allowed relative growth, e.g. 0.5%")] = "0.5%",
    from_pytest_benchmark: Annotated[tuple[Path, Path] | None, typer.Option(
        "--from-pytest-benchmark", help="compare the memory in two saved pytest-benchmark JSON files instead")] = None,
) -> None:
    """Re-predict the baseline grid and fail (exit 1) on memory growth or missing configurations."""
    from . import compare

    tol = _tolerance(tolerance)
    if from_pytest_benchmark:
        for p in from_pytest_benchmark:
            if not p.exists():
                fail(f"no such pytest-benchmark file: {p}")
        result = compare.compare_pytest_benchmark(*from_pytest_benchmark, tolerance=tol)
    else:
        try:
            base = compare.read(baseline)
        except FileNotFoundError as exc:
            fail(str(exc))
        configs = compare.grid()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("predicting", total=len(configs))

            def step(cfg) -> None:
                progress.update(task, description=f"predicting {cfg.label()}", advance=1)

            current = compare.predict_grid(configs, progress=step)
        result = compare.compare(base, current, tol)
    _print_comparison(result, tol)
    if result.failed:
        raise typer.Exit(1)


@app.command("baseline")
def baseline_(
    update: Annotated[bool, typer.Option("--update", help="rewrite the baseline from current predictions")] = False,
    path: Annotated[Path, typer.Option(help="baseline CSV")] = Path("reports/baseline/memory.csv"),
) -> None:
    """Show or (with --update) rewrite the committed memory baseline."""
    from . import compare

    if not update:
        if not path.exists():
            fail(f"no baseline at {path}; create it with `bench baseline --update`")
        console.print(compare.read(path).to_string(index=False))
        return
    configs = compare.grid()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("predicting", total=len(configs))
        df = compare.predict_grid(configs, progress=lambda cfg: progress.update(
            task, description=f"predicting {cfg.label()}", advance=1))
    compare.write(df, path)
    console.print(f"wrote {len(df)} configurations to {path}; review `git diff {path}` and commit it")


def _gb(v) -> str:
    return "-" if v is None else f"{v / 2**30:.2f} GiB"


def _summary_line(cfg, rec: dict) -> str:
    status = rec.get("status")
    if status != "ok":
        return f"  {cfg.label()}: [red]{status}[/] {rec.get('error', '')}"
    if cfg.device == "cuda":
        meas = f"max allocated {_gb(rec.get('peak_allocated_bytes'))}, reserved {_gb(rec.get('peak_reserved_bytes'))}"
    elif cfg.device == "cpu":
        meas = f"CPU live peak {_gb(rec.get('cpu_live_peak_bytes'))}"
    else:
        meas = ""
    pred = f"predicted CUDA {_gb(rec.get('pred_peak_allocated_bytes'))}"
    t = rec.get("step_time_median_s")
    speed = f", {t:.3f} s/step" if t else ""
    return f"  {cfg.label()}: {', '.join(x for x in (meas, pred) if x)}{speed}"


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
