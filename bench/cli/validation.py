"""The prediction held against real GPUs: ``bench replay`` (a real snapshot beside the allocator model),
``bench trace2events`` (a snapshot as a test fixture), ``bench validate`` (the fixed grid on CUDA, a recorded
run predicted again, or the published figures)."""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import record as R
from ..console import bar, console, fail, summary_line
from ..options import signed_percent
from ..sweep.config import RunConfig
from .common import (
    DEFAULT_TIMEOUT,
    app,
    check_writable_dir,
    positive,
    prediction_jobs,
    validated,
    writable_dir,
    writable_file,
)

#: where bench validate writes its CSV and summaries (and, under <gpu>-<torch>/, its records and snapshots)
VALIDATION = Path("reports/validation")
#: where bench validate's recorded snapshots become test fixtures (tests/measure/test_fixtures.py replays them)
FIXTURES = Path("tests/fixtures/traces/validation")


def _load_trace(path: Path, device: int):
    """A snapshot pickle or an event file (``.events.csv[.gz]``) as (trace, the snapshot dict or None), or one clear
    line."""
    from ..measure import traces

    if not path.is_file():
        fail(f"{'a folder, not a file' if path.is_dir() else 'no such file'}: {path}")
    try:
        if traces.is_event_file(path):
            return traces.read_events(path), None
        data = traces.load_snapshot(path)
        return traces.snapshot_trace(data, device), data
    except ValueError as exc:  # SnapshotError included
        if traces.holds_events(path):  # an event file under another name: say what name it needs
            fail(f"{path} holds an event file, not a snapshot: name it NAME{traces.EVENT_SUFFIXES[0]} (or "
                 f"{traces.EVENT_SUFFIXES[1]}, compressed) and give it again")
        fail(str(exc))


@app.command()
def replay(
    snapshot: Annotated[Path, typer.Argument(help="a torch.cuda.memory._snapshot() pickle, gzip-compressed or not "
                                                  "(or a .events.csv[.gz] fixture)")],
    device: Annotated[int, typer.Option(help="which device's trace")] = 0,
    gpu_memory: Annotated[str | None, typer.Option(help="the allocator's capacity (e.g. 80GB, or a GPU: A100-40GB), for "
                                                        "the model's free-and-retry; taken whole: give the GPU's "
                                                        "memory less the CUDA context to match a run")] = None,
    plot: Annotated[Path | None, typer.Option(help="also draw the snapshot's timeline (allocated and reserved over "
                                                   "its trace, the largest tensors live at the peak) into this PNG")] = None,
) -> None:
    """Your own snapshot's real peak allocated / reserved / fragmentation beside the allocator model's on
    the same events, and under expandable_segments. Read safely: no class is loaded from the pickle."""
    from ..measure import traces
    from ..sweep.expand import gpu_memory as detect_gpu_memory

    capacity = validated(detect_gpu_memory, gpu_memory) if gpu_memory is not None else None
    if plot is not None:
        if plot.suffix.lower() != ".png":
            fail(f"--plot writes a PNG: give a name ending in .png; got {plot.name}")
        if traces.is_event_file(snapshot):
            fail("--plot draws a snapshot pickle (its frames name the tensors); an event file has none")
        writable_file(plot)
    from ..measure.snapshot import is_prediction as snapshot_of_ours

    trace, data = _load_trace(snapshot, device)
    if not any(e.action == traces.ALLOC for e in trace.events):
        fail(f"{snapshot}: the trace holds no allocation to replay")
    rows = traces.compare_rows(trace, capacity)
    real = rows[0]
    if data is not None and snapshot_of_ours(data):  # a prediction's snapshot: its trace is the model's own, not a GPU's
        real["source"] = "the prediction's trace"
    start = "" if trace.whole_run else " (starts mid-run)" if not trace.starts_empty else " (starts with segments cached)"
    table = Table(title=f"{escape(snapshot.name)}: {sum(e.action == traces.ALLOC for e in trace.events):,} allocations"
                        f"{start}; settings: {trace.settings.conf() or 'default'}"
                        + (f"; the model's capacity: {capacity / 2**20:,.0f} MiB" if capacity is not None else ""))
    for col in ("", "peak allocated", "peak reserved", "reserved vs real", "fragmentation at peak", "segments at end"):
        table.add_column(col)
    for r in rows:
        frag = "-" if r["fragmentation"] is None else f"{r['fragmentation']:.1%}"
        err = ("" if r is real else signed_percent(r["peak_reserved"] / real["peak_reserved"] - 1) if real["peak_reserved"]
               else "-")
        table.add_row(escape(r["source"]), f"{r['peak_allocated'] / 2**20:,.1f} MiB", f"{r['peak_reserved'] / 2**20:,.1f} MiB",
                      err, frag, "-" if r["segments"] is None else str(r["segments"]))
    console.print(table)
    short = [r for r in rows if r["ooms"]]
    if short:
        console.print(f"[yellow]note:[/] at --gpu-memory {escape(str(gpu_memory))} the model ran out of memory: "
                      + "; ".join(f"{escape(r['source'])} on {r['ooms']:,} allocation(s)" for r in short)
                      + ". Its peaks stop short there (a real run would raise torch.OutOfMemoryError), so their "
                      "errors are not the model's error.", highlight=False)
    console.print("[dim]Allocated from a trace counts each request rounded to 512 B; the model's also counts the "
                  "remainders of blocks too small to split, as torch.cuda.max_memory_allocated does.[/]")
    if not trace.starts_empty:
        console.print("[yellow]The trace starts mid-run: the blocks live at its start are allocated first in the model "
                      "(in address order), which the real allocator may have laid out differently.[/]")
    elif not trace.whole_run:
        console.print(f"[yellow]The trace starts with nothing allocated but {trace.initial_reserved / 2**20:,.0f} MiB "
                      "reserved (cached segments, free): the model starts with none and makes its own.[/]")
    if plot is not None:
        from ..results import timeline

        timeline.draw(timeline.timeline(data, device, snapshot.name), plot)
        console.print(f"timeline: {escape(str(plot))}", highlight=False)


@app.command("trace2events")
def trace2events(
    snapshot: Annotated[Path, typer.Argument(help="a torch.cuda.memory._snapshot() pickle, gzip-compressed or not")],
    dest: Annotated[Path, typer.Argument(help="the event file to write (NAME.events.csv, or "
                                                  "NAME.events.csv.gz gzip-compressed)")],
    source: Annotated[str, typer.Option(help="where the snapshot comes from (URL)")] = "",
    commit: Annotated[str, typer.Option(help="the source repository's commit")] = "",
    license_: Annotated[str, typer.Option("--license", help="the source's licence")] = "",
    device: Annotated[int, typer.Option(help="which device's trace")] = 0,
) -> None:
    """Convert a snapshot into a small event file (a test fixture: tests replay every one in tests/fixtures/traces)."""
    from ..measure import traces

    if not traces.is_event_file(dest):
        fail(f"the event file's name must end in {' or '.join(traces.EVENT_SUFFIXES)}; got {dest.name}")
    if not snapshot.exists():
        fail(f"no such file: {snapshot}")
    writable_file(dest)
    try:
        trace = traces.convert(snapshot, dest, {"source": source, "commit": commit, "license": license_}, device)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"{len(trace.events):,} events written to {escape(str(dest))}", highlight=False)


@app.command()
def validate(
    arch: Annotated[list[str] | None, typer.Option("--arch", "-a", help="narrow the grid to these architectures "
                                                                         "[default: all]")] = None,
    out: Annotated[Path | None, typer.Option(help="where the CSV and Markdown summary go [default: "
                                                  "reports/validation; with --recorded: beside the recorded folder]")] = None,
    fixtures: Annotated[Path, typer.Option(help="where the recorded snapshots become event-file fixtures")] = FIXTURES,
    timeout: Annotated[float, typer.Option(help="seconds per configuration")] = DEFAULT_TIMEOUT,
    time_limit: Annotated[float | None, typer.Option(
        "--time-limit", help="seconds from the command's start, for a GPU lent for a while: start no configuration "
                             "after them, write the summary of those measured; the same command later measures "
                             "the rest (--timeout bounds each configuration)")] = None,
    published: Annotated[bool, typer.Option("--published", help="no GPU needed: predict every published GPU figure "
                                            "(memory: reports/validation/published_memory.csv; nnU-Net's epoch times: "
                                            "published_epoch_times.csv) and print the errors by fit / held-out split")] = False,
    fit: Annotated[bool, typer.Option("--fit", help="with --published: re-fit the fitted constants on the fit rows "
                                                    "(else: those in bench/measure/device.py and roofline.py)")] = False,
    recorded: Annotated[Path | None, typer.Option(
        "--recorded", help="no GPU needed: predict again, with this code, the configurations measured in a folder "
                           "bench validate wrote (e.g. reports/validation/nvidia-h200-2.11.0+cu130), and write the "
                           "errors beside it (NAME.repredicted.csv/.md)")] = None,
    jobs: Annotated[int | None, typer.Option(help="with --recorded: prediction processes [default: one per core]")] = None,
    keep_measured: Annotated[bool, typer.Option(
        "--keep-measured", help="measure only configurations with no CUDA measurement yet, keeping those another code "
                                "version measured (GPU time is the scarce part), and predict those again with this code "
                                "for the summary, as --recorded does")] = False,
    share_gpu: Annotated[int, typer.Option(
        "--share-gpu", help="measure up to this many configurations at once on the GPU, each started when its "
                            "predicted memory fits beside the others' (one that runs out of memory beside another is "
                            "measured again alone): the allocator's figures stay each process's own, the step times "
                            "and NVML figures of those that shared are left empty (gpu_shared)")] = 1,
) -> None:
    """Measure the fixed grid on this CUDA GPU beside its prediction (every architecture, two sizes, train/infer,
    fp32/AMP, cudnn.benchmark off/on), a memory snapshot each; exit 1 when the median error of peak allocated
    exceeds 2% or any exceeds 5%. Interrupted: run it again, measured configurations are kept (those another code
    version measured are measured again, unless --keep-measured).

    With --published: the prediction against every published GPU figure instead (no GPU needed).
    With --recorded DIR: a recorded run's configurations predicted again by this code (no GPU needed)."""
    # the command's start (its imports are lazy: the interpreter's start is a second before)
    entered, when = time.monotonic(), datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if fit and not published:
        fail("--fit re-fits the constants on the published figures: add --published")
    if recorded is not None and (published or arch or time_limit is not None or keep_measured):
        fail("--recorded predicts a recorded run again: no --published, --arch, --time-limit or --keep-measured with it")
    gpu_only = [n for n, v in (("--fixtures", fixtures != FIXTURES), ("--timeout", timeout != DEFAULT_TIMEOUT),
                               ("--share-gpu", share_gpu != 1)) if v]
    if (recorded is not None or published) and gpu_only:
        fail(f"{gpu_only[0]} is for the grid measured on a GPU; --{'recorded' if recorded else 'published'} measures "
             "nothing")
    if jobs is not None and recorded is None:
        fail("--jobs applies only with --recorded (its prediction processes)")
    positive("--time-limit", time_limit, "seconds")
    positive("--timeout", timeout, "seconds")
    if share_gpu < 1:
        fail(f"--share-gpu must be a whole number >= 1 (configurations measured at once); got {share_gpu}")
    if recorded is not None:
        _validate_recorded(recorded, prediction_jobs(jobs), out)
        return
    out = out or VALIDATION
    if published:
        if arch:
            fail("--arch narrows the GPU grid; --published predicts every published figure")
        if keep_measured:
            fail("--keep-measured keeps the GPU grid's measurements; --published measures nothing")
        if time_limit is not None:
            fail("--time-limit bounds the GPU grid's measurements; --published measures nothing")
        check_writable_dir(out)  # made by the first table written (interrupted before it: nothing left behind)
        _validate_published(fit, out)
        return
    import torch

    from ..parallel import cores
    from ..results import validate as V
    from ..sweep import executor, store
    from ..version import code_version

    configs = validated(V.grid, arch)
    if not torch.cuda.is_available():
        fail("bench validate measures on a CUDA GPU and this machine has none (without one: bench validate --published "
             "holds the prediction against published GPU figures, --recorded DIR against a run recorded on a GPU)")
    gpu_name = torch.cuda.get_device_name(0)
    name = V.report_name(gpu_name, torch.__version__)
    runs = out / name
    try:
        store.check_writable(runs)
    except OSError as exc:
        fail(str(exc))
    check_writable_dir(fixtures)
    snaps = writable_dir(runs / "snapshots")
    whole = [dataclasses.replace(c, snapshot_dir=str(snaps)) for c in configs]
    # a step is measured once (V.same_step): the configurations that run the same step take the measurement of the
    # first of them as it comes, and one made earlier is theirs from the start (with --keep-measured one of any code
    # version, else one of this, as a resumed sweep counts it)
    this = code_version()
    usable = V.measured_on_cuda if keep_measured else (lambda r: V.measured_on_cuda(r) and r.get(R.CODE_VERSION) == this)
    latest = store.latest(runs)
    measured_before = [c for c in whole if (r := latest.get(c.key())) is not None and usable(r)]
    shared = _share(runs, V.shares(latest, whole, usable))
    done_keys = {c.key() for c in measured_before} | {r[R.KEY] for r in shared}
    # the first configuration of each step not measured yet (one measured by another code version is measured again)
    groups = V.same_step([c for c in whole if c.key() not in done_keys])
    others = {g[0].key(): g[1:] for g in groups}
    configs = [g[0] for g in groups]
    # the GPU measures one configuration at a time (or --share-gpu at once) while the other cores predict ahead
    predictions = executor.Predictions(executor.ahead_jobs(cores(), share_gpu))
    gate = None
    if share_gpu > 1:
        from ..sweep.share import MemoryGate

        gate = MemoryGate.for_gpu(torch.cuda.get_device_properties(0).total_memory, share_gpu)
    spares = executor.spares_ahead(cores(), share_gpu)  # (one executor: in order, each sent its next ones ahead)
    pool = [executor.PredictAheadExecutor(executor.LocalExecutor(prestart=spares), predictions, live_gpu=gpu_name,
                                          gate=gate) for _ in range(share_gpu)]
    busy: list[str] = []  # running in another process
    left: list[str] = []  # not started: the time limit
    done: list[str] = []
    first: list[float] = []  # seconds from the command's start to its first record

    def on_measured(cfg: RunConfig, rec: dict) -> None:
        if not done:  # the command's start-up seen from the GPU's side: its first record
            first.append(time.monotonic() - entered)
        b.print(summary_line(cfg.label(), rec), markup=True)
        b.advance()
        done.append(cfg.key())
        # its step's other configurations take its record; a failure too (out of memory, an error: the same step fails
        # alike), which the next run measures again with the first
        made = _share(runs, [V.shared_record(rec, c) for c in others[cfg.key()]])
        if V.measured_on_cuda(rec):
            shared.extend(made)

    def on_skipped(cfg: RunConfig, why: str) -> None:
        if why == executor.TIME_LIMIT:
            left.extend([cfg.key(), *(c.key() for c in others[cfg.key()])])
        elif why != "recorded":
            busy.append(cfg.key())
        b.advance()

    started = time.monotonic()
    deadline = entered + time_limit if time_limit is not None else None  # from the command's start, as its help says
    if configs:  # (none left: no empty bar)
        with bar(len(configs), "validating") as b:
            executor.run_sweep(configs, runs, timeout, False, True, pool, on_start=lambda cfg: b.start(cfg.label()),
                               on_done=on_measured, on_skip=on_skipped, deadline=deadline)
    swept = time.monotonic() - started
    if done:
        console.print(f"{len(done)} configuration(s) measured in {swept / 60:.1f} min of wall time, up to {share_gpu} at "
                      "once", highlight=False)
    if shared:
        console.print(f"{len(shared)} configuration(s) took the measurement of one that runs the same step (the same "
                      "network, batch and settings: measured_as)", highlight=False)
    V.compress_snapshots(snaps)  # (the records name them uncompressed: V.table finds either)
    if done:  # the call's wall times beside its records: the summary holds the command's against the target
        V.note_call(runs, started=when, command_s=round(time.monotonic() - entered, 1),
                    measuring_s=round(swept, 1), sweep_start_s=round(started - entered, 1),
                    first_record_s=round(first[0], 1), measured=len(done), took_another=len(shared), share_gpu=share_gpu,
                    spares=spares, prediction_jobs=predictions.jobs, cores=cores(), time_limit_s=time_limit,
                    code_version=this, gpu=gpu_name)
    if measured_before or busy:
        console.print(f"{len(measured_before) + len(busy)} configuration(s) already measured in {escape(str(runs))}: "
                      "kept", highlight=False)
    if left:
        console.print(f"[yellow]{len(left)} configuration(s) not started[/]: --time-limit reached; the same command "
                      "measures them, keeping those measured", highlight=False)
    noted = V.calls(runs)
    if keep_measured:  # records of several code versions: those of another predicted again by this code
        df = _repredicted(runs, prediction_jobs(None), whole, keep_from=code_version())
        csv, md = V.write(df, out, name, whole, title=f"{name}, predicted by segmem {code_version()}", made=noted)
    else:
        records = store.load(runs)
        keys = {c.key() for c in whole}
        if records.empty or not records[R.KEY].isin(keys).any():
            fail(f"no configuration of the grid has a record in {runs}: nothing to summarise"
                 + (" (--time-limit was reached before the first started)" if left else ""), code=1)
        df = V.table(records[records[R.KEY].isin(keys)], snaps)  # store.load: the latest record per configuration
        csv, md = V.write(df, out, name, whole, made=noted)
    made = V.fixtures(snaps, fixtures / name, {"source": f"bench validate on {gpu_name}",
                                                "commit": code_version(), "license": "segmem's own recording"})
    console.print(f"{escape(str(csv))}, {escape(str(md))}; {len(made)} fixture(s) in {escape(str(fixtures / name))}",
                  highlight=False)
    for line in V.run_time_lines(df, whole, noted):  # the summary's wall and run time, as it says them
        if line:
            console.print(escape(line), highlight=False)
    _exit_on_verdict(df)


def _share(runs: Path, records: list[dict]) -> list[dict]:
    """``records`` (:func:`bench.results.validate.shares`) appended to the results store of ``runs``; returns them."""
    from ..sweep import store

    for rec in records:
        store.append(runs, rec)
    return records


def _exit_on_verdict(df: Any) -> None:
    """Exit 1 where the errors of peak allocated exceed the validation's limits (a GPU run, or one predicted again by
    --recorded), else say it passed."""
    from ..results import validate as V

    passed, med, worst = V.verdict(df["allocated_error"])
    if not passed:
        fail(f"validation failed: median |error| of peak allocated {med:.2%} (limit {V.MEDIAN_LIMIT:.0%}), "
             f"max {worst:.2%} (limit {V.MAX_LIMIT:.0%})", code=1)
    console.print(f"[green]validation passed[/]: median |error| {med:.2%}, max {worst:.2%}")


@app.command("validate-published", hidden=True)
def validate_published(
    fit: Annotated[bool, typer.Option("--fit", help="re-fit the fitted constants on the fit rows")] = False,
    to: Annotated[Path, typer.Option(help="where the validation tables go")] = VALIDATION,
) -> None:
    """The old name of ``bench validate --published``."""
    _validate_published(fit, to)


def _validate_recorded(runs: Path, jobs: int | None, out: Path | None) -> None:
    """``bench validate --recorded RUNS``: the measured configurations of a recorded run predicted again here,
    the summary written into ``out`` (default: beside ``runs``)."""
    from ..results import validate as V
    from ..sweep import store
    from ..version import code_version

    if runs.is_file():
        fail(f"--recorded takes the folder bench validate wrote (holding results.jsonl), not a file; got {runs}")
    if not runs.exists():
        fail(f"--recorded: no such folder: {runs}")
    if not store.path(runs).exists():
        fail(store.missing(runs, "bench validate records"))
    dest = out or runs.parent
    check_writable_dir(dest)  # made only once there is something to write: a run with no CUDA record leaves none
    df = _repredicted(runs, jobs)
    writable_dir(dest)
    csv, md = V.write(df, dest, f"{runs.name}.repredicted", V.grid(),
                      title=f"{runs.name}, predicted again by segmem {code_version()}", recorded=True,
                      made=V.calls(runs))
    from rich.markdown import Markdown

    console.print(Markdown(md.read_text()))  # rendered: its tables as tables, not pipes
    console.print(f"{escape(str(csv))}, {escape(str(md))}", highlight=False)
    _exit_on_verdict(df)


def _repredicted(runs: Path, jobs: int | None, configs: list | None = None, keep_from: str | None = None) -> Any:
    """The configurations measured on CUDA in ``runs`` (of ``configs``, default the whole grid) predicted again by
    this code on ``jobs`` processes, with a progress bar (:func:`bench.results.validate.repredict`; ``keep_from``:
    those this code version recorded keep their prediction)."""
    from ..results import validate as V

    rows = validated(V.measured, runs, configs=configs)
    # and those that run a step measured there, with its measurement (V.shares; a GPU run stored them already)
    rows += V.shares({r[R.KEY]: r for r in rows}, configs if configs is not None else V.grid())
    steps = len(V.prediction_steps(rows, keep_from, configs))
    done = 0

    def advance(_job: Any) -> None:
        nonlocal done
        done += 1
        b.advance()

    try:
        with bar(steps, f"predicting again the configurations measured in {runs.name}") as b:
            return V.repredict(runs, rows, jobs, progress=advance, configs=configs, keep_from=keep_from)
    except KeyboardInterrupt:  # the predictions are kept in memory until the summary: none is written
        console.print(f"[yellow]interrupted[/]: {done} of {steps} prediction(s) made, none written (the summary is "
                      "written once all are made); the same command starts again", highlight=False)
        raise typer.Exit(130) from None


def _validate_published(fit: bool, to: Path) -> None:
    """``bench validate --published``: the memory figures, then nnU-Net's epoch times; tables written to ``to``."""
    _validate_published_memory(fit, to)
    _validate_published_times(fit, to)


def _validate_published_memory(fit: bool, to: Path) -> None:
    """Predicted against published GPU memory figures (bench/results/published_memory.py); errors by split."""

    from ..measure import device
    from ..results import published_memory as M

    factor, kernels = None, None
    if fit:
        with console.status("fitting the workspace factor and the context's kernels on the fit rows"):
            factor, kernels = M.fit()
        console.print(f"fitted on the fit rows: workspace factor {factor:g} (benchmark on), training kernels "
                      f"{kernels // 2**20} MiB; put them in bench/measure/device.py (WORKSPACE_FACTOR, TRAINING_KERNELS) "
                      "to use them", highlight=False)
    with bar(len(M.FIGURES), "predicting published GPU memory figures") as b:
        pred = M.predict_rows(factor=factor, kernels=kernels, progress=lambda i: (b.start(i), b.advance()))
    used = factor if factor is not None else device.WORKSPACE_FACTOR
    shown = pred[["id", "gpu", "measured", "split", "network", "patch", "batch", "precision", "published_gib", "pred_gib",
                  "error", "verdict"]].astype({"error": object})
    shown.loc[shown["measured"] == "oom", "error"] = "-"  # an oom row's figure is the capacity: the verdict says
    _errors_table(f"predicted vs published GPU memory (GiB): each row predicted for what its source states (the nnU-Net "
                  f"rows train by nnU-Net's recipe, {M.NNUNET_RECIPE}), what it does not state assumed (the CSV's "
                  f"plans column says which); cuDNN benchmark candidates' workspace {used:g} x a convolution's largest "
                  "operand", shown, "{:.2f}")
    console.print(escape(M.summary(pred).to_string(index=False, float_format="{:.1%}".format)), highlight=False)
    if (line := M.oom_line(pred)) is not None:
        console.print(escape(line), highlight=False)
    _write_table(pred.round({"pred_gib": 3, "error": 4}), to / M.TABLE.name)


def _errors_table(title: str, shown, number: str) -> None:
    """A validation table on the console: errors as signed percentages, other numbers as ``number`` formats
    them, a missing prediction (the model ran out of memory) as OOM."""
    import pandas as pd

    table = Table(title=title)
    for col in shown.columns:  # folded, not cut: a narrow console (160 columns when piped) keeps every cell whole
        table.add_column(col, overflow="fold")
    for r in shown.itertuples(index=False):
        table.add_row(*("OOM" if isinstance(v, float) and pd.isna(v)
                        else signed_percent(v, 1) if k == "error" and isinstance(v, float)
                        else number.format(v) if isinstance(v, float) else escape(str(v))
                        for k, v in zip(shown.columns, r, strict=True)))
    console.print(table)


def _write_table(df, dest: Path) -> None:
    """A validation table's CSV, and a line saying where it went."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest, index=False)
    console.print(f"written: {escape(str(dest))}", highlight=False)


def _validate_published_times(fit: bool, to: Path) -> None:
    """Predicted epoch times against nnU-Net's published ones (7 GPUs x 3 tasks); errors by split."""
    import pandas as pd

    from ..results import published as P

    with bar(len(P.TASKS), "tracing nnU-Net v1 3d_fullres steps") as b:
        pred, scales = P.validate(fit, progress=lambda t: (b.start(t), b.advance()))
    if scales:
        console.print(f"fitted scales (tensor-core compute, CUDA-core compute, bandwidth, launch s): {scales}; "
                      "put them in bench/measure/roofline.py FITTED_SCALES to use them", highlight=False)
    _errors_table("predicted vs published nnU-Net v1 epoch times (3d_fullres dummy, s)",
                  pred[["task", "gpu", "split", "published_epoch_s", "pred_epoch_s", "error"]], "{:.1f}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        console.print(escape(P.summary(pred).to_string(index=False, float_format="{:.1%}".format)), highlight=False)
        console.print(escape(P.ranking(pred)[["task", "pairs", "misordered", "which"]].to_string(index=False)),
                      highlight=False)
    _write_table(pred.round({"pred_epoch_s": 2, "error": 4}), to / P.TABLE.name)
