"""The ``bench`` command line (Typer + rich). Parsing, one-line validation and progress only: the
sweep engine is :mod:`bench.sweep`, measurement :mod:`bench.measure`, training :mod:`bench.train`,
reading results :mod:`bench.results`. Option vocabularies come from :mod:`bench.options`.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from . import record as R
from .console import bar, console, fail, show_warnings, summary_line
from .options import Backend, BackendChoice, Figure, Mode, Precision, Weighting, parse_bytes, parse_overrides, parse_size

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="segmem: peak memory, throughput and Dice of 3D segmentation networks.")
show_warnings()

DEFAULT_TIMEOUT = 900.0
#: a Dice run's time limit per stage and training iteration, when its budget is a number of iterations
SECONDS_PER_ITERATION = 5.0
#: ``bench paper`` predicts, or measures on CUDA
PaperBackend = StrEnum("PaperBackend", {b.name: b.value for b in (Backend.PREDICT, Backend.CUDA)})
RESULTS = Path("reports")
BASELINE = Path("reports/baseline/memory.csv")

ArchOption = Annotated[list[str] | None, typer.Option("--arch", "-a", help="architecture name, repeatable, or 'all' "
                                                                           "[default: meunet]")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="architecture override key=value, repeatable")]
OutOption = Annotated[Path, typer.Option(help="results directory (its results.jsonl)")]
Filter = Annotated[list[str] | None, typer.Option(help="keep only these values; repeatable")]
DeviceAlias = Annotated[str | None, typer.Option("--device", hidden=True, help="old name of --backend")]
GpuOption = Annotated[str | None, typer.Option("--gpu", help="predict step and epoch time on this GPU of the catalogue "
                                                             "(e.g. A100-80GB, RTX-4090; an unknown name lists them)")]


def _gpu(name: str | None) -> str | None:
    """The catalogue name of ``--gpu``, or the one-line list of known GPUs (exit 2)."""
    from .measure.gpus import find, known

    if name is None:
        return None
    g = find(name)
    if g is None:
        fail(f"unknown GPU {name!r}; known: {known()}")
    return g.name


def _validated(fn, *args, **kwargs) -> Any:
    """``fn(...)``, or the one-line error of its ValueError (exit 2)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        fail(str(exc))


@app.command("list")
def list_() -> None:
    """Every architecture with its parameter count (1 input channel, 3 classes), divisibility, citation."""
    import architectures

    table = Table(title="segmem architectures (parameters for 1 input channel, 3 classes)")
    for col in ("name", "parameters", "divisible by", "default patch / batch", "summary"):
        table.add_column(col, overflow="fold")
    for name in architectures.names():
        s = architectures.spec(name)
        patch = "x".join(map(str, s.default_sizes[0]))
        table.add_row(name, f"{s.param_count():,}", str(s.divisor), f"{patch} / {s.default_batches[0]}", s.summary)
    console.print(table)
    for name in architectures.names():
        console.print(f"[bold]{name}[/]: {escape(architectures.spec(name).citation)}", highlight=False)


@app.command()
def run(
    arch: ArchOption = None,
    size: Annotated[list[str] | None, typer.Option(help="cube edge (160) or DxHxW; repeatable; default: the arch's")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="batch size; repeatable; default: the arch's")] = None,
    mode: Annotated[list[Mode] | None, typer.Option(help="repeatable [default: train]")] = None,
    precision: Annotated[list[Precision] | None, typer.Option(help="autocast precision, repeatable; "
                                                                   "default: the arch's")] = None,
    checkpointing: Annotated[bool | None, typer.Option("--checkpointing/--no-checkpointing",
                                                       help="gradient checkpointing; default: the arch's")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last_3d memory format")] = False,
    backend: Annotated[BackendChoice, typer.Option(help="cuda or cpu (measure, and predict), predict (GPU-free CUDA "
                                                   "prediction only), auto (cuda if present, else cpu)")] = "auto",
    device: DeviceAlias = None,
    repeats: Annotated[int, typer.Option(help="timed steps after warm-up")] = 3,
    timeout: Annotated[float, typer.Option(help="seconds per configuration before it is recorded as timeout "
                                                "(Dice runs: more, see the README)")] = DEFAULT_TIMEOUT,
    out: OutOption = RESULTS,
    force: Annotated[bool, typer.Option(help="re-run configurations already recorded")] = False,
    retry_failed: Annotated[bool, typer.Option(help="re-run configurations recorded as error, timeout or oom")] = False,
    set_: SetOption = None,
    dice: Annotated[bool, typer.Option("--dice", help="also train on --data and record test Dice")] = False,
    data: Annotated[str, typer.Option(help="Dice data: phantom, phantom:DxHxW, an nnU-Net raw dataset or a "
                                           "TIFF folder (images/, labels/)")] = "phantom",
    train_minutes: Annotated[float | None, typer.Option(help="Dice training budget per stage in minutes "
                                                             "(default 6 on CPU, 60 on CUDA)")] = None,
    train_iterations: Annotated[int | None, typer.Option(help="Dice training budget per stage in iterations")] = None,
    weighting: Annotated[Weighting, typer.Option(help="sliding-window vote: centre (paper), gaussian (nnU-Net), "
                                                      "uniform")] = Weighting.CENTRE,
    gpu: GpuOption = None,
) -> None:
    """Sweep sizes x batches x modes x precisions for architectures; one isolated process per run."""
    from .sweep import executor
    from .sweep.expand import expand, resolve_backend
    from .sweep.store import check_writable

    be = _validated(resolve_backend, device or backend)
    dice_opts = _dice_options(data, train_minutes, train_iterations, weighting) if dice else None
    configs = _validated(lambda: expand(
        arch or ["meunet"], [parse_size(s) for s in size or []], batch or [], mode or [Mode.TRAIN], precision or [],
        be, checkpointing, channels_last, parse_overrides(set_ or []), repeats, dice_opts))
    if gpu is not None:
        from dataclasses import replace

        gpu_name = _gpu(gpu)
        configs = [replace(c, gpu=gpu_name) for c in configs]
    if timeout <= 0:
        fail(f"timeout must be positive; got {timeout:g}")
    try:
        check_writable(out)
    except OSError as exc:
        fail(str(exc))
    if dice_opts is not None and timeout == DEFAULT_TIMEOUT:
        timeout = _dice_timeout(configs, be)
    if be is Backend.CPU:
        console.print("[yellow]No CUDA GPU: measuring on the CPU. CPU figures are not GPU figures; "
                      "each record also carries the predicted CUDA peak (pred_* columns).[/]")
    counts: dict[str, int] = {}
    with bar(len(configs), "running") as b:
        def done(cfg, rec) -> None:
            counts[rec[R.STATUS]] = counts.get(rec[R.STATUS], 0) + 1
            b.print(summary_line(cfg.label(), rec), markup=True)
            b.advance()

        def skip(cfg, why: str) -> None:
            counts[f"skipped ({why})"] = counts.get(f"skipped ({why})", 0) + 1
            b.advance()

        executor.run_sweep(configs, out, timeout, force, retry_failed,
                           executor.LocalExecutor(on_log=lambda line: b.print(f"    {line}")),
                           on_start=lambda cfg: b.start(cfg.label()), on_done=done, on_skip=skip)
        b.done("sweep done")
    parts = ", ".join(f"{v} {k}" for k, v in counts.items())
    console.print(f"{len(configs)} configuration(s): {parts}. Results: {escape(str(out / 'results.jsonl'))}",
                  highlight=False)
    if any(k.startswith("skipped (recorded") for k in counts):
        console.print("(recorded configurations were skipped; --force re-runs them, --retry-failed the failed ones)")
    failures = sum(counts.get(s, 0) for s in R.FAILED)
    if failures:
        fail(f"{failures} configuration(s) failed (error or timeout); see their rows' error column", code=1)


def _dice_options(data: str, minutes: float | None, iterations: int | None, weighting: Weighting) -> dict:
    """Validate the Dice options (and the dataset itself, before anything trains)."""
    from .train.data.datasets import DatasetError
    from .train.dice_run import open_dataset, phantom_shape

    if minutes is not None and minutes <= 0:
        fail(f"--train-minutes must be positive; got {minutes:g}")
    if iterations is not None and iterations < 1:
        fail(f"--train-iterations must be >= 1; got {iterations}")
    try:
        ds = None if phantom_shape(data) is not None else open_dataset(data)
    except DatasetError as exc:
        fail(f"data: {exc}")
    if ds is not None:
        console.print(f"data: {escape(ds.name)}: {len(ds.train)} train, {len(ds.val)} val, {len(ds.test)} test "
                      f"volumes, classes {escape(str(ds.labels))}", highlight=False)
    return {"data": data, "train_minutes": minutes, "train_iterations": iterations, "weighting": weighting.value}


def _dice_timeout(configs, backend: Backend) -> float:
    """A Dice run's time limit: the default plus 1.5 x the training budget of all its stages (a budget
    of iterations: :data:`SECONDS_PER_ITERATION` each)."""
    import architectures

    from .train.dice_run import budget

    dice = [c for c in configs if c.dice]
    stages = max(len(architectures.spec(c.arch).train_stages(**c.overrides_dict)) for c in dice)
    minutes, iterations = budget(dice[0].train_minutes, dice[0].train_iterations, backend.torch_device)
    per_stage = 60 * minutes if minutes else iterations * SECONDS_PER_ITERATION
    timeout = DEFAULT_TIMEOUT + 1.5 * stages * per_stage
    what = dice[0].train_budget() if (dice[0].train_minutes or dice[0].train_iterations) else f"{minutes:g} min per stage"
    console.print(f"Dice runs: training {what}; timeout per configuration {timeout / 60:.0f} min (--timeout to change)",
                  highlight=False)
    return timeout


@app.command()
def repair(out: OutOption = RESULTS) -> None:
    """Move lines of the results store that are not records (torn by a kill, foreign) aside, into
    results.rejected.jsonl, so that the store reads as JSON Lines again."""
    from .sweep import store

    if not store.path(out).exists():
        fail(f"no results store at {store.path(out)}")
    moved = store.repair(out)
    where = escape(str(store.path(out).parent / store.REJECTED))
    console.print(f"{moved} line(s) moved aside into {where}" if moved else "the store is whole: nothing to repair",
                  highlight=False)


def _tolerance(text: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fail(f"tolerance must be like 0.5% or 0.005; got {text!r}")
        raise


def _predict_grid(configs, verb: str):
    from .results import compare

    with bar(len(configs), verb) as b:
        return compare.predict_grid(configs, progress=lambda cfg: (b.start(cfg.label()), b.advance()))


def _print_comparison(result, tolerance: float) -> None:
    def table(title: str, rows: list[dict]) -> Table:
        t = Table(title=title)
        for col in ("configuration", "category", "baseline", "now", "change"):
            t.add_column(col)
        for r in rows:
            t.add_row(escape(r["config"]), r["figure"], f"{r['baseline_bytes']:,}", f"{r['current_bytes']:,}",
                      f"{r['change']:+.2%}")
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
) -> None:
    """Re-predict the baseline grid and fail (exit 1) on memory growth or missing configurations."""
    from .results import compare

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
        result = compare.compare(base, _predict_grid(compare.grid(), "predicting"), tol)
    _print_comparison(result, tol)
    if result.failed:
        raise typer.Exit(1)


@app.command("baseline")
def baseline_(
    update: Annotated[bool, typer.Option("--update", help="rewrite the baseline from current predictions")] = False,
    path: Annotated[Path, typer.Option(help="baseline CSV")] = BASELINE,
) -> None:
    """Show or (with --update) rewrite the committed memory baseline."""
    from .results import compare

    if not update:
        if not path.exists():
            fail(f"no baseline at {path}; create it with `bench baseline --update`")
        console.print(compare.read(path).to_string(index=False), highlight=False)
        return
    df = _predict_grid(compare.grid(), "predicting")
    compare.write(df, path)
    console.print(f"wrote {len(df)} configurations to {escape(str(path))}; review `git diff {escape(str(path))}` "
                  "and commit it", highlight=False)


@app.command()
def report(
    out: OutOption = RESULTS,
    to: Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")] = None,
    arch: Filter = None,
    backend: Filter = None,
    device: Annotated[list[str] | None, typer.Option("--device", hidden=True, help="old name of --backend")] = None,
    mode: Filter = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="also draw the plots")] = True,
    gpu: GpuOption = None,
) -> None:
    """Markdown report and CSV tables (and the plots) from the results store."""
    from .results import report as rep

    gpu = _gpu(gpu)
    df = _results(out, arch, backend or device, mode)
    if gpu is not None:
        from .results.throughput import retime

        df = retime(df, gpu)
        if R.PRED_STEP_TIME not in df or df[R.PRED_STEP_TIME].isna().all():
            console.print(f"[yellow]no record has its step's work (pred_work): recorded before step-time prediction; "
                          f"re-run them with --force to predict their time on {gpu}[/]")
    dest = to or out
    written = rep.write(df, dest)
    console.print(f"report of {len(df)} records: " + escape(", ".join(str(p) for p in written)), highlight=False)
    if plots:
        _plot(df, dest)


@app.command()
def plot(
    out: OutOption = RESULTS,
    to: Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")] = None,
    arch: Filter = None,
    backend: Filter = None,
    device: Annotated[list[str] | None, typer.Option("--device", hidden=True, help="old name of --backend")] = None,
    mode: Filter = None,
) -> None:
    """Comparison plots (seaborn, PNG and SVG) from the results store."""
    _plot(_results(out, arch, backend or device, mode), to or out)


def _results(out: Path, arch: list[str] | None, backend: list[str] | None, mode: list[str] | None):
    """The filtered store, or exit 1 saying why there is nothing to show."""
    from .results import report as rep

    try:
        return rep.load(out, arch or [], backend or [], mode or [])
    except rep.NothingToShow as exc:
        fail(str(exc), code=1)


def _plot(df, dest: Path) -> None:
    from .results.plots import plot_all

    files, notes = plot_all(df, dest)
    for n in notes:
        console.print(f"[yellow]skipped[/] {escape(n)}", highlight=False)
    if files:
        console.print(f"{len(files)} plot files in {escape(str(dest))}: " + ", ".join(sorted({p.stem for p in files})),
                      highlight=False)
    else:
        console.print("[yellow]nothing to plot[/]")


@app.command("fit")
def fit_(
    arch: ArchOption = None,
    budget: Annotated[str, typer.Option(help="GPU memory, e.g. 16GB, 16GiB, 500MB")] = "16GB",
    batch: Annotated[int, typer.Option(help="batch for the largest cube/box")] = 4,
    mode: Annotated[Mode, typer.Option(help="what to fit")] = Mode.TRAIN,
    precision: Annotated[Precision | None, typer.Option(help="default: the arch's")] = None,
    shape_ratio: Annotated[str | None, typer.Option(help="also the largest box of this aspect, e.g. 1072x470x470")] = None,
    size: Annotated[str | None, typer.Option(help="patch at which to find the largest batch; default: the arch's")] = None,
    overhead: Annotated[str, typer.Option(help="added to every prediction: CUDA context, workspaces")] = "0.5GB",
    figure: Annotated[Figure, typer.Option(help="reserved (what the allocator takes) or allocated")] = Figure.RESERVED,
    confirm: Annotated[bool, typer.Option(help="confirm each answer by a real run on CUDA")] = False,
    out: Annotated[Path, typer.Option(help="results directory for the table (and confirmation runs)")] = RESULTS,
    set_: SetOption = None,
    gpu: GpuOption = None,
) -> None:
    """The largest cube, box and batch each architecture fits in a memory budget (by prediction)."""
    import pandas as pd

    import architectures

    from .results import fit as fitmod
    from .results.report import markdown_table

    gpu = _gpu(gpu)
    budget_b = _validated(parse_bytes, budget)
    overhead_b = _validated(parse_bytes, overhead, allow_zero=True)
    wanted = arch or ["meunet"]
    names = architectures.names() if "all" in wanted else [_validated(architectures.spec, a).name for a in wanted]
    if batch < 1:
        fail(f"batch must be >= 1; got {batch}")
    ratio = _validated(parse_size, shape_ratio) if shape_ratio else None
    at = _validated(parse_size, size) if size else None
    ov = _validated(parse_overrides, set_ or [])
    if confirm:
        from .sweep.expand import resolve_backend

        _validated(resolve_backend, Backend.CUDA)
    rows = []
    with bar(len(names), "fitting") as b:
        for name in names:
            b.start(name)
            try:
                r = fitmod.fit(name, budget_b, batch, mode, precision, ratio, at, overhead_b, figure,
                               {k: v for k, v in ov.items() if k in architectures.spec(name).parameters()})
                rows.append(r.row())
                if gpu is not None:
                    rows[-1].update(_fit_epochs(r, gpu, ov))
            except ValueError as exc:
                b.print(f"  {name}: {exc}")
            b.advance()
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
    console.print(f"written: {escape(str(out / 'fit.csv'))}, {escape(str(out / 'fit.md'))}", highlight=False)
    if confirm:
        from .sweep.executor import run_sweep
        from .sweep.expand import expand

        configs = [c for r in rows if r["largest_cube"] for c in expand(
            [r["arch"]], [(r["largest_cube"],) * 3], [batch], [mode], [r["precision"]], Backend.CUDA)]
        run_sweep(configs, out, on_done=lambda cfg, rec: console.print(summary_line(cfg.label(), rec), highlight=False))


def _fit_epochs(r, gpu: str, overrides: dict) -> dict[str, Any]:
    """Predicted seconds per epoch on ``gpu`` of a fit's largest cube and largest batch."""
    import architectures

    from .results.throughput import EPOCH_STEPS, predicted_epoch

    ov = {k: v for k, v in overrides.items() if k in architectures.spec(r.arch).parameters()}
    cube = predicted_epoch(r.arch, ov, (r.edge,) * 3, r.batch, r.mode, r.precision, gpu) if r.edge else None
    big = (predicted_epoch(r.arch, ov, tuple(r.batch_size), r.max_batch, r.mode, r.precision, gpu)
           if r.max_batch else None)
    return {"gpu": gpu, f"cube_epoch_s ({EPOCH_STEPS} steps)": cube and round(cube, 1),
            f"batch_epoch_s ({EPOCH_STEPS} steps)": big and round(big, 1)}


@app.command()
def paper(
    backend: Annotated[PaperBackend, typer.Option(help="predict (any machine) or cuda (also measure)")] = "predict",
    device: DeviceAlias = None,
    out: Annotated[Path, typer.Option(help="results directory")] = RESULTS,
    timeout: Annotated[float, typer.Option(help="seconds per measured configuration")] = DEFAULT_TIMEOUT,
) -> None:
    """The paper's Tables 1-4 (training memory) beside its own GB figures, with the ratios."""
    import pandas as pd

    from .results import paper as pp
    from .sweep import store
    from .sweep.executor import run_sweep
    from .sweep.expand import resolve_backend

    be = Backend(_validated(resolve_backend, device or backend))
    if be not in (Backend.PREDICT, Backend.CUDA):
        fail(f"backend must be predict or cuda; got {be.value!r}")
    measured = None
    if be is Backend.CUDA:
        configs = list(dict.fromkeys(c for r in pp.ROWS for p in r.parts for c in pp.part_configs(p, Backend.CUDA)))
        with bar(len(configs), "measuring") as b:
            run_sweep(configs, out, timeout, on_start=lambda c: b.start(c.label()), on_done=lambda c, r: b.advance(),
                      on_skip=lambda c, why: b.advance())
        measured = store.load(out)
    with bar(len(pp.ROWS), "predicting") as b:
        df = pp.table(progress=lambda r: (b.start(r.label), b.advance()), measured=measured)
    note = "Measured on CUDA and predicted." if measured is not None else "Predicted (no GPU used)."
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "paper.csv", index=False)
    (out / "paper.md").write_text(pp.markdown(df, note) + "\n")
    show = df.drop(columns=["note"]).round(2)
    table = Table(title="the paper's training memory (GB) and ours (GiB)")
    for col in show.columns:
        table.add_column(col)
    for r in show.itertuples(index=False):
        table.add_row(*("" if (not isinstance(v, str) and pd.isna(v)) else escape(str(v)) for v in r))
    console.print(table)
    console.print(f"written: {escape(str(out / 'paper.csv'))}, {escape(str(out / 'paper.md'))}", highlight=False)


@app.command("validate-published")
def validate_published(
    fit: Annotated[bool, typer.Option("--fit", help="re-fit the efficiency scales on the fit rows (else: the "
                                                    "scales in bench/measure/roofline.py)")] = False,
    to: Annotated[Path, typer.Option(help="the validation table to write")] = Path("reports/validation"),
) -> None:
    """Predicted epoch times against nnU-Net's published ones (7 GPUs x 3 tasks); errors by split.

    (``bench validate`` is for GPU runs; this one needs no GPU.)"""
    import pandas as pd

    from .results import published as P

    with bar(len(P.TASKS), "tracing nnU-Net v1 3d_fullres steps") as b:
        pred, scales = P.validate(fit, progress=lambda t: (b.start(t), b.advance()))
    if scales:
        console.print(f"fitted scales (tensor-core compute, CUDA-core compute, bandwidth, launch s): {scales}; "
                      "put them in bench/measure/roofline.py FITTED_SCALES to use them", highlight=False)
    table = Table(title="predicted vs published nnU-Net v1 epoch times (3d_fullres dummy, s)")
    shown = pred[["task", "gpu", "split", "published_epoch_s", "pred_epoch_s", "error"]]
    for col in shown.columns:
        table.add_column(col)
    for r in shown.itertuples(index=False):
        table.add_row(*(f"{v:+.1%}" if k == "error" else f"{v:.1f}" if isinstance(v, float) else str(v)
                        for k, v in zip(shown.columns, r, strict=True)))
    console.print(table)
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        console.print(escape(P.summary(pred).to_string(index=False, float_format="{:.1%}".format)), highlight=False)
        console.print(escape(P.ranking(pred)[["task", "pairs", "misordered", "which"]].to_string(index=False)),
                      highlight=False)
    to.mkdir(parents=True, exist_ok=True)
    pred.round({"pred_epoch_s": 2, "error": 4}).to_csv(to / P.TABLE.name, index=False)
    console.print(f"written: {escape(str(to / P.TABLE.name))}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
