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
    timeout: Annotated[float, typer.Option(help="seconds per configuration before it is recorded as timeout "
                                                "(Dice runs: 900 + 1.5 x the training budget)")] = 900,
    out: Annotated[Path, typer.Option(help="results directory")] = Path("reports"),
    force: Annotated[bool, typer.Option(help="re-run configurations already recorded")] = False,
    set_: Annotated[list[str], typer.Option("--set", help="architecture override key=value, repeatable")] = None,
    dice: Annotated[bool, typer.Option("--dice", help="also train on --data and record test Dice")] = False,
    data: Annotated[str, typer.Option(help="Dice data: phantom, phantom:DxHxW, an nnU-Net raw dataset or a "
                                           "TIFF folder (images/, labels/)")] = "phantom",
    train_minutes: Annotated[float | None, typer.Option(help="Dice training budget per stage in minutes "
                                                             "(default 6 on CPU, 60 on CUDA)")] = None,
    train_iterations: Annotated[int | None, typer.Option(help="Dice training budget per stage in iterations")] = None,
    weighting: Annotated[str, typer.Option(help="sliding-window vote: centre (paper), gaussian (nnU-Net), "
                                                "uniform")] = "centre",
) -> None:
    """Sweep sizes x batches x modes x precisions for architectures; one isolated process per run."""
    from . import sweep

    arch = arch or ["meunet"]
    dice_opts = None
    if dice:
        dice_opts = _dice_options(data, train_minutes, train_iterations, weighting)
    try:
        for a in arch:
            if a != "all":
                architectures.spec(a)
        dev = sweep.resolve_device(device)
        sizes = [sweep.parse_size(s) for s in (size or [])]
        configs = sweep.expand(arch, sizes, batch or [], mode or ["train"], precision or [], dev, checkpointing,
                               channels_last, parse_overrides(set_ or []), repeats, dice_opts)
    except ValueError as exc:
        fail(str(exc))
    if timeout <= 0:
        fail(f"timeout must be positive; got {timeout}")
    if dice_opts is not None and timeout == DEFAULT_TIMEOUT:
        from .evaluate import budget

        minutes, _ = budget(train_minutes, train_iterations, dev)
        stages = max(len(architectures.spec(c.arch).train_stages(**c.overrides_dict)) for c in configs)
        timeout = DEFAULT_TIMEOUT + 1.5 * 60 * stages * (minutes or 60)
        console.print(f"Dice runs: training {dice_opts['train_minutes'] or minutes or ''} min per stage; "
                      f"timeout per configuration {timeout / 60:.0f} min")
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

        def on_log(line: str) -> None:
            progress.console.print(f"    {line}", highlight=False)

        sweep.run_sweep(configs, out, timeout, force, executor=sweep.LocalExecutor(on_log=on_log),
                        on_start=start, on_done=done)
        progress.update(task, description="sweep done")
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    console.print(f"{len(configs)} configuration(s): {parts}. Results: {out / 'results.jsonl'}")
    if counts["skipped"]:
        console.print("(already recorded configurations were skipped; --force re-runs them)")


DEFAULT_TIMEOUT = 900


def _dice_options(data: str, minutes: float | None, iterations: int | None, weighting: str) -> dict:
    """Validate the Dice options (and the dataset itself, before anything trains)."""
    from .data.datasets import DatasetError
    from .evaluate import open_dataset, phantom_shape
    from .infer import WEIGHTINGS

    if weighting not in WEIGHTINGS:
        fail(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")
    if minutes is not None and minutes <= 0:
        fail(f"--train-minutes must be positive; got {minutes}")
    if iterations is not None and iterations < 1:
        fail(f"--train-iterations must be >= 1; got {iterations}")
    try:
        ds = None if phantom_shape(data) is not None else open_dataset(data)
    except DatasetError as exc:
        fail(f"data: {exc}")
    if ds is not None:
        console.print(f"data: {ds.name}: {len(ds.train)} train, {len(ds.val)} val, {len(ds.test)} test volumes, "
                      f"classes {ds.labels}")
    return {"data": data, "train_minutes": minutes, "train_iterations": iterations, "weighting": weighting}


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


Filter = Annotated[list[str], typer.Option(help="keep only these values; repeatable")]


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="results directory (its results.jsonl)")] = Path("reports"),
    to: Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")] = None,
    arch: Filter = None,
    device: Filter = None,
    mode: Filter = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="also draw the plots")] = True,
) -> None:
    """Markdown report and CSV tables (and the plots) from the results store."""
    from . import report as rep

    df = _results(out, arch, device, mode)
    dest = to or out
    written = rep.write(df, dest)
    console.print(f"report of {len(df)} records: " + ", ".join(str(p) for p in written), highlight=False)
    if plots:
        _plot(df, dest)


@app.command()
def plot(
    out: Annotated[Path, typer.Option(help="results directory (its results.jsonl)")] = Path("reports"),
    to: Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")] = None,
    arch: Filter = None,
    device: Filter = None,
    mode: Filter = None,
) -> None:
    """Comparison plots (seaborn, PNG and SVG) from the results store."""
    _plot(_results(out, arch, device, mode), to or out)


def _results(out: Path, arch: list[str] | None, device: list[str] | None, mode: list[str] | None):
    """The filtered store, or exit 1 saying why there is nothing to show."""
    from . import report as rep

    try:
        return rep.load(out, arch or [], device or [], mode or [])
    except rep.NothingToShow as exc:
        fail(str(exc), code=1)


def _plot(df, dest: Path) -> None:
    from .plots import plot_all

    files, notes = plot_all(df, dest)
    for n in notes:
        console.print(f"[yellow]skipped[/] {n}", highlight=False)
    if files:
        console.print(f"{len(files)} plot files in {dest}: " + ", ".join(sorted({p.stem for p in files})), highlight=False)
    else:
        console.print("[yellow]nothing to plot[/]")


@app.command("fit")
def fit_(
    arch: Annotated[list[str], typer.Option("--arch", "-a", help="architecture, repeatable, or 'all'")] = None,
    budget: Annotated[str, typer.Option(help="GPU memory, e.g. 16GB, 16GiB, 500MB")] = "16GB",
    batch: Annotated[int, typer.Option(help="batch for the largest cube/box")] = 4,
    mode: Annotated[str, typer.Option(help="train or infer")] = "train",
    precision: Annotated[str | None, typer.Option(help="fp32, bf16, fp16; default: the arch's")] = None,
    shape_ratio: Annotated[str | None, typer.Option(help="also the largest box of this aspect, e.g. 1072x470x470")] = None,
    size: Annotated[str | None, typer.Option(help="patch at which to find the largest batch; default: the arch's")] = None,
    overhead: Annotated[str, typer.Option(help="added to every prediction: CUDA context, workspaces")] = "0.5GB",
    figure: Annotated[str, typer.Option(help="reserved (what the allocator takes) or allocated")] = "reserved",
    confirm: Annotated[bool, typer.Option(help="confirm each answer by a real run on CUDA")] = False,
    out: Annotated[Path, typer.Option(help="results directory for the table (and confirmation runs)")] = Path("reports"),
    set_: Annotated[list[str], typer.Option("--set", help="architecture override key=value, repeatable")] = None,
) -> None:
    """The largest cube, box and batch each architecture fits in a memory budget (by prediction)."""
    import pandas as pd

    from . import fit as fitmod
    from . import sweep
    from .report import markdown_table

    try:
        budget_b = fitmod.parse_bytes(budget)
        overhead_b = fitmod.parse_bytes(overhead, allow_zero=True)
        wanted = arch or ["meunet"]
        names = architectures.names() if "all" in wanted else [architectures.spec(a).name for a in wanted]
        if mode not in sweep.MODES:
            raise ValueError(f"mode must be one of {', '.join(sweep.MODES)}; got {mode!r}")
        if precision is not None and precision not in sweep.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(sweep.PRECISIONS)}; got {precision!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1; got {batch}")
        ratio = sweep.parse_size(shape_ratio) if shape_ratio else None
        at = sweep.parse_size(size) if size else None
        ov = parse_overrides(set_ or [])
        if figure not in fitmod.FIGURES:
            raise ValueError(f"figure must be one of {', '.join(fitmod.FIGURES)}; got {figure!r}")
        if confirm:
            sweep.resolve_device("cuda")
    except ValueError as exc:
        fail(str(exc))
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("fitting", total=len(names))
        for name in names:
            progress.update(task, description=f"fitting {name}")
            try:
                r = fitmod.fit(name, budget_b, batch, mode, precision, ratio, at, overhead_b, figure,
                               {k: v for k, v in ov.items() if k in architectures.spec(name).parameters()})
                rows.append(r.row())
            except ValueError as exc:
                progress.console.print(f"  {name}: [red]{exc}[/]", highlight=False)
            progress.advance(task)
    if not rows:
        fail("no architecture could be fitted", code=1)
    df = pd.DataFrame(rows).dropna(axis=1, how="all")
    table = Table(title=f"largest {mode} configurations within {budget} (prediction {figure} + {overhead} overhead)")
    for col in df.columns:
        table.add_column(col)
    for r in df.itertuples(index=False):
        table.add_row(*("" if pd.isna(v) else str(v) for v in r))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "fit.csv", index=False)
    (out / "fit.md").write_text(f"# bench fit: {budget}, {mode}\n\n" + markdown_table(df) + "\n")
    console.print(f"written: {out / 'fit.csv'}, {out / 'fit.md'}")
    if confirm:
        configs = [c for r in rows if r["largest_cube"] for c in sweep.expand(
            [r["arch"]], [(r["largest_cube"],) * 3], [batch], [mode], [r["precision"]], "cuda")]
        sweep.run_sweep(configs, out, force=False,
                        on_done=lambda cfg, rec: rec and console.print(_summary_line(cfg, rec), highlight=False))


@app.command()
def paper(
    device: Annotated[str, typer.Option(help="predict (any machine) or cuda (also measure)")] = "predict",
    out: Annotated[Path, typer.Option(help="results directory")] = Path("reports"),
    timeout: Annotated[float, typer.Option(help="seconds per measured configuration")] = 900,
) -> None:
    """The paper's Tables 1-4 (training memory) beside its own GB figures, with the ratios."""
    import pandas as pd

    from . import paper as pp
    from . import store, sweep

    if device not in ("predict", "cuda"):
        fail(f"device must be predict or cuda; got {device!r}")
    measured = None
    if device == "cuda":
        try:
            sweep.resolve_device("cuda")
        except ValueError as exc:
            fail(str(exc))
        configs = list(dict.fromkeys(c for r in pp.ROWS for p in r.parts for c in pp.part_configs(p, "cuda")))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("measuring", total=len(configs))
            sweep.run_sweep(configs, out, timeout, on_start=lambda c: progress.update(task, description=f"measuring {c.label()}"),
                            on_done=lambda c, r: progress.advance(task))
        measured = store.load(out)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("predicting", total=len(pp.ROWS))
        df = pp.table(progress=lambda r: progress.update(task, description=f"predicting {r.label}", advance=1),
                      measured=measured)
    note = "Measured on CUDA and predicted." if measured is not None else "Predicted (no GPU used)."
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "paper.csv", index=False)
    (out / "paper.md").write_text(pp.markdown(df, note) + "\n")
    show = df.drop(columns=["note"]).round(2)
    table = Table(title="the paper's training memory (GB) and ours (GiB)")
    for col in show.columns:
        table.add_column(col)
    for r in show.itertuples(index=False):
        table.add_row(*("" if (not isinstance(v, str) and pd.isna(v)) else str(v) for v in r))
    console.print(table)
    console.print(f"written: {out / 'paper.csv'}, {out / 'paper.md'}")


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
    dice = ""
    if rec.get("dice_status") == "ok":
        per = ", ".join(f"{k[5:]} {v:.3f}" for k, v in rec.items() if k.startswith("dice_") and k not in
                        ("dice_status", "dice_mean_fg", "dice_per_volume", "dice_error"))
        dice = f"; Dice {per} (threshold baseline mean {rec.get('threshold_dice_mean_fg', 0):.3f})"
    elif rec.get("dice_status"):
        dice = f"; [red]Dice {rec['dice_status']}[/]: {rec.get('dice_error', '')}"
    return f"  {cfg.label()}: {', '.join(x for x in (meas, pred) if x)}{speed}{dice}"


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
