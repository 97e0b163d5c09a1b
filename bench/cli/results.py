"""Reading results: ``bench report``, ``bench plot``, and ``bench fit`` (the largest patch and batch that fit a
GPU's memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import record as R
from ..console import bar, console, fail, summary_line
from ..options import (
    Backend,
    Mode,
    Precision,
    parse_bytes,
    parse_overrides,
    parse_size,
)
from .common import (
    RESULTS,
    ArchOption,
    Classes,
    Filter,
    GpuOption,
    InChannels,
    JobsOption,
    OutOption,
    SetOption,
    app,
    backend_or_alias,
    catalogue_gpu,
    data_shape,
    is_gpu_name,
    named,
    prediction_jobs,
    validated,
    writable_dir,
)

#: report's and plot's: where they write, and the old name of --backend as a filter
ToOption = Annotated[Path | None, typer.Option(help="where to write (default: the results directory)")]
DeviceFilter = Annotated[list[str] | None, typer.Option("--device", hidden=True, help="old name of --backend")]


@app.command()
def report(
    out: OutOption = RESULTS,
    to: ToOption = None,
    arch: Filter = None,
    backend: Filter = None,
    device: DeviceFilter = None,
    mode: Filter = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="also draw the plots")] = True,
    gpu: GpuOption = None,
) -> None:
    """Markdown report and CSV tables (and the plots) from the results store."""
    from ..results import report as rep

    gpu = catalogue_gpu(gpu)
    df = _results(out, arch, backend_or_alias(backend, device), mode)
    dest = writable_dir(to or out)  # before the report, whose files go there
    if gpu is not None:
        from ..results.throughput import retime

        df = retime(df, gpu)
        if R.PRED_STEP_TIME not in df or df[R.PRED_STEP_TIME].isna().all():
            console.print(f"[yellow]no record has its step's work (pred_work): recorded before step-time prediction; "
                          f"re-run them with --force to predict their time on {gpu}[/]")
    written = rep.write(df, dest)
    console.print(f"report of {len(df)} records: " + escape(", ".join(str(p) for p in written)), highlight=False)
    if plots:
        _plot(df, dest)


@app.command()
def plot(
    out: OutOption = RESULTS,
    to: ToOption = None,
    arch: Filter = None,
    backend: Filter = None,
    device: DeviceFilter = None,
    mode: Filter = None,
) -> None:
    """Comparison plots (seaborn, PNG and SVG) from the results store."""
    df = _results(out, arch, backend_or_alias(backend, device), mode)
    _plot(df, writable_dir(to or out))


def _results(out: Path, arch: list[str] | None, backend: list[str] | None, mode: list[str] | None):
    """The filtered store, or one line saying why there is nothing to show: exit 2 for a value no record could
    match (a backend or mode that is none, an architecture the store has no record of, a file for ``out``), 1 for
    filters that leave nothing."""
    from ..results import report as rep

    try:
        return rep.load(out, arch or [], backend or [], mode or [])
    except rep.NothingToShow as exc:
        fail(str(exc), code=2 if isinstance(exc, rep.BadFilter) else 1)


def _plot(df, dest: Path) -> None:
    from ..results.plots import plot_all

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
    budget: Annotated[str, typer.Option(help="GPU memory, e.g. 16GB, 16GiB, 500MB, a GPU of the catalogue "
                                             "(A100-40GB: its memory and CUDA context), or auto: the smallest "
                                             "visible GPU's")] = "16GB",
    batch: Annotated[int, typer.Option(help="batch for the largest cube/box")] = 4,
    mode: Annotated[Mode, typer.Option(help="what to fit")] = Mode.TRAIN,
    precision: Annotated[Precision | None, typer.Option(help="default: the arch's")] = None,
    shape_ratio: Annotated[str | None, typer.Option(help="also the largest box of this aspect, e.g. 1072x470x470")] = None,
    size: Annotated[str | None, typer.Option(help="patch at which to find the largest batch; default: the arch's")] = None,
    margin: Annotated[str, typer.Option("--margin", "--overhead", help="extra memory to keep free beyond the device "
                                        "model's figure (the CUDA context and cuDNN's workspaces are in it already): "
                                        "fit within the budget less this; --overhead is its old name")] = "0",
    figure: Annotated[str | None, typer.Option(hidden=True)] = None,
    confirm: Annotated[bool, typer.Option(help="confirm each answer by a real run on CUDA")] = False,
    out: Annotated[Path, typer.Option(help="results directory for the table (and confirmation runs)")] = RESULTS,
    set_: SetOption = None,
    jobs: JobsOption = None,
    in_channels: InChannels = None,
    classes: Classes = None,
    gpu: GpuOption = None,
) -> None:
    """The largest cube, box and batch each architecture fits in a memory budget, by prediction (meunet
    unless --arch names others). Fits: as bench run --backend predict --gpu-memory BUDGET decides, the
    allocator model at the budget less the CUDA context of --gpu's family (without --gpu: the generic
    context); the GiB shown are the nvidia-smi figure."""
    import pandas as pd

    import architectures

    from ..results import fit as fitmod
    from ..results.report import markdown_table

    jobs = prediction_jobs(jobs)
    gpu = catalogue_gpu(gpu)
    if figure is not None:
        fail("bench fit --figure is gone: fit decides by the device model's nvidia-smi figure at the budget, as "
             "bench run --backend predict --gpu-memory does (--margin keeps extra memory free)")
    from ..sweep.expand import gpu_memory as detect_gpu_memory

    budget_b = validated(detect_gpu_memory, budget, option="--budget")
    if is_gpu_name(budget):  # a GPU of the catalogue: its context too, unless --gpu names another
        gpu = gpu or catalogue_gpu(budget)
    margin_b = validated(named, "--margin", parse_bytes, margin, allow_zero=True)
    if margin_b >= budget_b:
        fail(f"--margin {margin} leaves nothing of --budget {budget}")
    wanted = arch or ["meunet"]
    names = architectures.names() if "all" in wanted else [a for a in wanted if validated(architectures.spec, a)]
    if batch < 1:
        fail(f"batch must be >= 1; got {batch}")
    ratio = validated(named, "--shape-ratio", parse_size, shape_ratio) if shape_ratio else None
    at = validated(parse_size, size) if size else None
    ov = validated(parse_overrides, set_ or [])
    if any(k.startswith("recipe.") for k in ov):
        fail("bench fit predicts each architecture with its own training recipe; --set recipe.KEY is for bench run")
    shape = data_shape(in_channels, classes)
    if shape[0] < 1 or shape[1] < 2:
        fail(f"--in-channels must be >= 1 and --classes >= 2; got {shape[0]} and {shape[1]}")
    per_arch = _fit_overrides(names, ov, at, mode, shape)
    if confirm:
        import torch

        if not torch.cuda.is_available():
            fail("--confirm measures the fitted configurations on a CUDA GPU, and this machine has none; "
                 "without --confirm, fit predicts only")
    writable_dir(out)  # before the fitting, whose table goes there
    with bar(len(names), "fitting") as b:
        fitted = fitmod.fit_many(
            names, progress=lambda name: (b.start(name), b.advance()),
            overrides=per_arch,
            budget_bytes=budget_b, batch=batch, mode=mode, precision=precision, ratio=ratio, size=at,
            margin_bytes=margin_b, gpu=gpu, jobs=jobs, in_channels=shape[0], num_classes=shape[1])
    for name, r in zip(names, fitted):
        if isinstance(r, str):
            console.print(f"  {escape(r)}", highlight=False)
        elif note := architectures.spec(name).divisor_note(**{k: v for k, v in ov.items()
                                                              if k in architectures.spec(name).parameters()}):
            console.print(f"  {escape(note)}", highlight=False)
    rows = []
    for r in fitted:
        if not isinstance(r, str):
            rows.append(r.row())
            if gpu is not None:
                rows[-1].update(_fit_epochs(r, gpu, ov))
    if not rows:
        fail("no architecture could be fitted", code=1)
    df = pd.DataFrame(rows).dropna(axis=1, how="all").convert_dtypes()  # whole numbers stay integers
    on = f"{gpu}'s" if gpu else "the generic (no --gpu)"
    given = f", with {', '.join(f'{k}={v}' for k, v in ov.items())}" if ov else ""  # --set: the answer depends on it
    # the console's table leaves out what the command fixed for every row (said in its title; the files keep them),
    # and its headers wrap between words: 18 columns broke "precision" into "precisi / on"
    fixed = ["mode", "budget_gib", "gpu", "in_channels", "num_classes"]
    table = Table(title=f"largest {mode} configurations within {budget}{given}, {shape[0]} input channel(s), {shape[1]} "
                        f"classes (predicted nvidia-smi figure, {on} CUDA context"
                        + (f", {margin} margin)" if margin_b else ")"))
    shown = df.drop(columns=[c for c in fixed if c in df])
    for col in shown.columns:
        table.add_column(col.replace("_", " "), overflow="fold")
    for r in shown.itertuples(index=False):
        table.add_row(*("" if pd.isna(v) else escape(str(v)) for v in r))
    console.print(table)
    df.to_csv(out / "fit.csv", index=False)
    (out / "fit.md").write_text(f"# bench fit: {budget}, {mode}{given}\n\n" + markdown_table(df) + "\n")
    console.print(f"written: {escape(str(out / 'fit.csv'))}, {escape(str(out / 'fit.md'))}", highlight=False)
    if confirm:
        from ..sweep.executor import run_sweep
        from ..sweep.expand import expand, label

        configs = [c for r in rows if r["largest_cube"] for c in expand(
            [r["arch"]], [(r["largest_cube"],) * 3], [batch], [mode], [r["precision"]], Backend.CUDA,
            in_channels=shape[0], num_classes=shape[1])]
        run_sweep(configs, out, on_done=lambda cfg, rec: console.print(summary_line(label(cfg), rec), highlight=False))


def _fit_overrides(names: list[str], overrides: dict[str, Any], size, mode: Mode,
                   shape: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """Each architecture's share of ``--set`` (the keys its constructor takes), checked before any fitting:
    a key none of them takes, a value one cannot be built with, or a ``--size`` one does not accept is one
    clear line."""
    import architectures

    from ..sweep.expand import validated_overrides

    per_arch = {n: {k: v for k, v in overrides.items() if k in architectures.spec(n).parameters()} for n in names}
    unused = sorted(set(overrides) - {k for o in per_arch.values() for k in o})
    if unused:
        fail(f"--set {unused[0]}: no architecture of this fit ({', '.join(names)}) takes it; "
             f"valid: {', '.join(sorted({k for n in names for k in architectures.spec(n).parameters()})) or 'none'}")
    for n in names:
        spec = architectures.spec(n)
        per_arch[n] = validated(validated_overrides, spec, per_arch[n], *shape)
        if size is not None:
            validated(spec.check_size, size, mode, **per_arch[n])
    return per_arch


def _fit_epochs(r, gpu: str, overrides: dict) -> dict[str, Any]:
    """Predicted seconds per epoch on ``gpu`` of a fit's largest cube and largest batch."""
    import architectures

    from ..results.throughput import EPOCH_STEPS, predicted_epoch

    ov = {k: v for k, v in overrides.items() if k in architectures.spec(r.arch).parameters()}
    cube = predicted_epoch(r.arch, ov, (r.edge,) * 3, r.batch, r.mode, r.precision, gpu) if r.edge else None
    big = (predicted_epoch(r.arch, ov, tuple(r.batch_size), r.max_batch, r.mode, r.precision, gpu)
           if r.max_batch else None)
    return {"gpu": gpu, f"cube_epoch_s ({EPOCH_STEPS} steps)": cube and round(cube, 1),
            f"batch_epoch_s ({EPOCH_STEPS} steps)": big and round(big, 1)}
