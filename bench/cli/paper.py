"""``bench paper``: the paper's tables, predicted (or measured on CUDA) beside its figures, and its Dice run."""

from __future__ import annotations

import math
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..console import bar, console, fail
from ..options import (
    Backend,
    CascadeReading,
    ExecutorKind,
    Mode,
    Precision,
    signed_percent,
)
from .common import (
    DEFAULT_TIMEOUT,
    RESULTS,
    DeviceAlias,
    JobsOption,
    app,
    backend_or_alias,
    dice_timeout,
    named,
    positive,
    prediction_jobs,
    recorder,
    validated,
    writable_dir,
)

#: ``bench paper`` predicts, or measures on CUDA
PaperBackend = StrEnum("PaperBackend", {b.name: b.value for b in (Backend.PREDICT, Backend.CUDA)})


@app.command()
def paper(
    backend: Annotated[PaperBackend, typer.Option(help="predict (any machine) or cuda (also measure)")] = "predict",
    device: DeviceAlias = None,
    out: Annotated[Path, typer.Option(help="results directory")] = RESULTS,
    timeout: Annotated[float, typer.Option(help="seconds per measured configuration")] = DEFAULT_TIMEOUT,
    jobs: JobsOption = None,
    cascade_reading: Annotated[list[CascadeReading] | None, typer.Option(
        help="Table 3's nnU-Net cascade, stage 1: the paper's reading (whole x2-downsampled volume, batch 1) or as "
             "nnU-Net plans it (3d_lowres's planned patch and batch); repeatable [default: both]")] = None,
    dice: Annotated[bool, typer.Option("--dice", help="instead: the paper's Dice ranking, U-net, meU-net and the cascade "
                                                      "trained on the phantom at equal memory over seeds (CPU; into "
                                                      "--out's results.jsonl, ranking.csv, ranking.md)")] = False,
    size: Annotated[int | None, typer.Option(help="--dice: standard patch edge (paper 160) [default: 16]")] = None,
    batch: Annotated[int | None, typer.Option(help="--dice: batch (paper 4) [default: 2]")] = None,
    train_iterations: Annotated[int | None, typer.Option(help="--dice: iterations per stage [default: 200]")] = None,
    data: Annotated[str | None, typer.Option(help="--dice: phantom or phantom:DxHxW [default: phantom:64x48x48]")] = None,
    seed: Annotated[list[int] | None, typer.Option(min=0, help="--dice: seeds, repeatable [default: 0 1 2]")] = None,
    precision: Annotated[Precision, typer.Option(help="precision of the readings (the paper: AMP, fp16)")] = Precision.FP16,
) -> None:
    """The paper's Tables 1-4 (training memory) beside its own GB figures, with the ratios; with --dice its
    Dice ranking (cascade >= meU-net >= U-net) re-measured on the phantom."""
    import pandas as pd

    from ..results import paper as pp
    from ..sweep import store
    from ..sweep.executor import run_sweep
    from ..sweep.expand import label, resolve_backend

    jobs = prediction_jobs(jobs)
    positive("--timeout", timeout, "seconds")
    backend = backend_or_alias(backend, device, "predict")
    if dice:
        other = [n for n, v in (("--backend", backend != "predict"), ("--cascade-reading", cascade_reading),
                                ("--precision", precision is not Precision.FP16)) if v]
        if other:
            fail(f"{other[0]} is for the memory tables; --dice trains on the CPU in fp32")
        return _paper_dice(out, timeout if timeout != DEFAULT_TIMEOUT else None, jobs, size, batch, train_iterations, seed,
                           data)
    given = [n for n, v in (("--size", size), ("--batch", batch), ("--train-iterations", train_iterations),
                            ("--seed", seed), ("--data", data)) if v]
    if given:
        fail(f"{given[0]} is a --dice option: add --dice")
    be = Backend(validated(resolve_backend, backend, "predict"))
    if be not in (Backend.PREDICT, Backend.CUDA):
        fail(f"backend must be predict or cuda; got {be.value!r}")
    rows = validated(pp.paper_rows, list(dict.fromkeys(cascade_reading or CascadeReading)))
    writable_dir(out)  # before the measurements and predictions whose tables go there
    measured = None
    if be is Backend.CUDA:
        configs = list(dict.fromkeys(c for r in rows for p in r.parts for c in pp.part_configs(p, Backend.CUDA)))
        with bar(len(configs), "measuring") as b:
            run_sweep(configs, out, timeout, on_start=lambda c: b.start(label(c)), on_done=lambda c, r: b.advance(),
                      on_skip=lambda c, why: b.advance())
        measured = store.load(out)
    reads = list(dict.fromkeys([pp.Reading(), *pp.readings(precision.value)]))
    with bar(len(pp.reading_jobs(rows, reads)), "predicting every reading") as b:
        peaks = pp.predict_readings(rows, reads, jobs,
                                    progress=lambda job: (b.start(_job_label(job)), b.advance()))
    df = pp.table(rows, measured=measured, peaks=pp.as_built_peaks(rows, peaks))
    verdict = pp.cascade_verdict(df, rows)
    long = pp.readings_table(rows, reads, peaks)
    scores = pp.reading_scores(long)
    note = "Measured on CUDA and predicted." if measured is not None else "Predicted (no GPU used)."
    df.to_csv(out / "paper.csv", index=False)
    long.to_csv(out / "paper_readings.csv", index=False)
    (out / "paper.md").write_text(pp.markdown(df, note) + (f"\n{verdict}\n" if verdict else "") + "\n\n"
                                  + pp.readings_markdown(long, scores))
    show = df.round(2)
    table = Table(title="the paper's training memory (GB) and ours (GiB)")
    for col in show.columns:
        # a figure's header whole (predicted_reserved_gib), the words of the text columns folded
        table.add_column(col, overflow="fold", max_width=48 if col == "note" else None,
                         min_width=None if col in ("configuration", "note") else len(col))
    for r in show.itertuples(index=False):
        table.add_row(*("" if (not isinstance(v, str) and pd.isna(v)) else escape(str(v)) for v in r))
    console.print(table)
    if verdict:
        console.print(escape(verdict), highlight=False)
    _print_readings(long, scores, pp.workspace_model_available())
    console.print(f"written: {escape(str(out / 'paper.csv'))}, {escape(str(out / 'paper_readings.csv'))}, "
                  f"{escape(str(out / 'paper.md'))}", highlight=False)


def _print_readings(long, scores, workspace: bool) -> None:
    """Every row's error under each reading (one column per reading, best first), the readings' legend and
    the best one's figures."""
    # as many reading columns as the terminal shows whole (best first); every reading is in paper_readings.csv
    shown = list(scores["reading"])[:max(1, (console.width - 36) // 8)]
    cut = f"; the best {len(shown)} of {len(scores)}, all in paper_readings.csv" if len(shown) < len(scores) else ""
    matrix = Table(title=f"error of every row under each reading (predicted GiB / paper GB - 1; best reading first{cut})")
    matrix.add_column("row", overflow="fold", min_width=24, max_width=34)
    matrix.add_column("GB")
    for r in shown:
        matrix.add_column(f"R{r}", justify="right", no_wrap=True)
    for (t, conf, gb), part in long.groupby(["table", "configuration", "paper_gb"], sort=False):
        err = dict(zip(part["reading"], part["error"]))
        mark = "" if part["measured_by_paper"].iloc[0] else " (estimated)"
        matrix.add_row(escape(f"T{t} {conf}{mark}"), f"{gb:g}", *(_error(err[r], "OOM") for r in shown))
    console.print(matrix)
    console.print("  (OOM: under that reading the step runs out of the paper's P100 memory)")
    for r in scores.itertuples():
        console.print(f"  R{r.reading}: {escape(r.reading_label)}: worst "
                      f"{_error(r.worst_abs_error_own_rows, OUT_OF_P100)} "
                      f"({escape(r.worst_row)}), {r.rows_within_10pct} rows within 10%, median "
                      f"{r.median_abs_error_own_rows:.0%}", highlight=False)
    best = scores.iloc[0]
    rows = long[long["reading"] == best.reading]
    console.print(f"best single reading R{best.reading} ({escape(best.reading_label)}): "
                  + "; ".join(f"T{r.table} {escape(r.configuration)} {r.predicted_gib:.2f} vs {r.paper_gb:g} "
                              f"({signed_percent(r.error, 0)})" for r in rows.itertuples()), highlight=False)
    if not workspace:
        console.print("[yellow]cuDNN's benchmark workspaces are not predicted here (no device model): those readings "
                      "are left out[/]")


OUT_OF_P100 = "out of the P100's memory"


def _job_label(job) -> str:
    """A reading's prediction job on the progress bar: ``cascade stage1_k1.75 stage1_checkpointing=False ...``."""
    return " ".join([job[0], job[1], *(f"{k}={v}" for k, v in dict(job[2]).items())])


def _error(error: float, out_of_memory: str) -> str:
    """A reading's relative error, or what an infinite one means (the step ran out of the P100's memory)."""
    return out_of_memory if math.isinf(error) else signed_percent(error, 0)


def _paper_dice(out: Path, timeout: float | None, jobs: int | None, size: int | None, batch: int | None,
                iterations: int | None, seeds: list[int] | None, data: str | None) -> None:
    """``bench paper --dice``: the equal-memory plan by prediction, the Dice runs through the sweep engine
    (resumable: recorded seeds are skipped), then the ranking table (:mod:`bench.results.ranking`)."""

    import architectures

    from ..parallel import cores
    from ..results import ranking as rk
    from ..sweep import executor, store
    from ..sweep.expand import label
    from ..sweep.store import check_writable
    from ..train.dice_run import phantom_shape

    defaults = rk.Scale()
    if iterations is not None and iterations < 1:
        fail(f"--train-iterations must be >= 1; got {iterations}")
    if batch is not None and batch < 1:
        fail(f"--batch must be >= 1; got {batch}")
    if seeds and len(set(seeds)) != len(seeds):
        fail(f"--seed repeats a seed: {seeds}")
    if data is not None and validated(named, "--data", phantom_shape, data) is None:
        fail(f"--data must be phantom or phantom:DxHxW (the paper's ranking is measured on the phantom); got {data!r}")
    scale = rk.Scale(edge=defaults.edge if size is None else size, batch=batch or defaults.batch,
                     iterations=iterations or defaults.iterations, seeds=tuple(seeds or defaults.seeds),
                     data=data or defaults.data)
    validated(architectures.spec("meunet").check_size, (scale.edge,) * 3, Mode.TRAIN)
    try:
        check_writable(out)
    except OSError as exc:
        fail(str(exc))
    console.print(f"scale: {escape(scale.describe())}", highlight=False)
    with console.status("equal memory by prediction (meU-net's peak is the U-net box's budget)"):
        the_plan = validated(rk.plan, scale)
    for arch, sz in the_plan.sizes.items():
        console.print(f"  {arch}: {escape(architectures.spec(arch).patch_label(sz))} b{scale.batch}, "
                      f"predicted {the_plan.peaks[arch] / 2**30:.3f} GiB", highlight=False)
    configs = rk.configs(scale, the_plan)
    timeout = timeout or dice_timeout(configs)
    n_jobs = jobs or cores()
    store.begin_sweep(out, configs, label, executor=ExecutorKind.LOCAL.value, backend=Backend.CPU.value)
    counts: dict[str, int] = {}
    log = None
    pool = validated(executor.local_pool, Backend.CPU, n_jobs, [], cores(), lambda line: log and log(line))
    with bar(len(configs), "training") as b:
        log = lambda line: b.print(f"    {line}")  # noqa: E731
        executor.run_sweep(configs, out, timeout, executor=pool, on_start=lambda cfg: b.start(label(cfg)),
                           on_done=recorder(b, counts, label), on_skip=lambda cfg, why: b.advance())
        b.done("runs done")
    seeds_df = rk.per_seed(store.load(out), configs, the_plan)
    summ = rk.summary(seeds_df)
    budget = os.environ.get("SEGMEM_CPU_TIME_BUDGET_S")
    command = (f"SEGMEM_CPU_TIME_BUDGET_S={budget} " if budget else "") + "bench paper --dice " + " ".join(
        a for a in sys.argv[1:] if a not in ("paper", "--dice"))
    seeds_df.to_csv(out / "ranking_seeds.csv", index=False)
    summ.to_csv(out / "ranking.csv", index=False)
    (out / "ranking.md").write_text(rk.markdown(summ, seeds_df, scale, command.strip()))
    for line in rk.verdict(summ, seeds_df):
        console.print(escape(line), highlight=False)
    console.print(f"written: {escape(str(out / 'ranking.csv'))}, ranking_seeds.csv, ranking.md", highlight=False)
    if (seeds_df["status"] != "ok").any():
        fail("some Dice runs did not finish ok; see ranking_seeds.csv's status column", code=1)
