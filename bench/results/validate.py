"""``bench validate``: the prediction against a real GPU on a fixed grid, in one command.

The grid: every architecture, two sizes (its default patch and half of it), train and infer, fp32
and AMP (fp16 autocast), cudnn.benchmark off and on, at the architecture's default batch. Each
configuration is measured on CUDA beside its prediction (the ordinary ``bench run`` worker), with the
recorded and the predicted memory snapshot written beside the results. The verdict: the prediction's
error on peak allocated bytes, median within 2% and every one within 5%.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

import architectures
from architectures import Shape

from .. import record as R
from ..options import Backend, Mode, Precision, signed_percent
from ..sweep.config import RunConfig
from ..sweep.expand import expand

MEDIAN_LIMIT = 0.02
MAX_LIMIT = 0.05
#: the whole grid's run time the validation aims at, on one H100 (the summary projects the grid's time against it)
TARGET_S = 600
#: beside a run's results.jsonl: one line per ``bench validate`` call that measured, with its wall times (the records
#: give each worker's time; the command's start-up, its prediction and the gaps between workers are in none of them)
CALLS = "calls.jsonl"
PRECISIONS = (Precision.FP32, Precision.FP16)
#: (architecture, mode) whose recorded traces a rule of the model was read from or led to one (bench.measure.device's
#: workspaces of benchmark off, read off the H200's; the 64-channel fp32 exception, which the H100's 3D U-Net
#: inference led to; bench.measure.autocast's casts under inference_mode): :func:`repredict` reports their rows apart
#: from the held-out ones, which no rule was taken from
READ_FROM = frozenset({("unet", "infer"), ("vnet", "infer"), ("nnunet", "infer"), ("unet3d", "train"),
                       ("unet3d", "infer")})


def two_sizes(spec: architectures.ArchSpec) -> list[Shape]:
    """The default patch and half of it (each edge rounded down to the divisor, at least one divisor)."""
    full = spec.default_sizes[0]
    half = tuple(max(spec.divisor, (e // 2) // spec.divisor * spec.divisor) for e in full)
    return [full, half] if half != full else [full]


def grid(archs: list[str] | None = None) -> list[RunConfig]:
    """The fixed validation grid (see the module docstring); ``archs`` narrows it (default: all)."""
    configs: list[RunConfig] = []
    for name in archs or architectures.names():
        spec = architectures.spec(name)
        base = expand([name], two_sizes(spec), [spec.default_batches[0]], [Mode.TRAIN, Mode.INFER], list(PRECISIONS),
                      Backend.CUDA, repeats=1)
        # "off" must be off: a recipe that turns cudnn.benchmark on (nnU-Net's) is told not to
        off = (("cudnn_benchmark", False),) if spec.recipe.cudnn_benchmark else ()
        configs += [dataclasses.replace(c, cudnn_benchmark=b, recipe=() if b else off) for c in base for b in (False, True)]
    return configs


def same_step(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """``configs`` grouped by the step a worker runs for them (:func:`bench.sweep.worker.measured_step`), the groups
    and each group's members in the given order: one measurement serves a group. The grid's 184 configurations are
    160 steps: the meU-net's training is the training of each cascade's stage 1 with k = 1.5, and the two cascades
    share their stage 1 with k = 1.75 (the H100 measured both cascades' alike to the byte)."""
    from ..sweep.worker import measured_step

    groups: dict[str, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault(measured_step(c), []).append(c)
    return list(groups.values())


def shared_record(measured: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """``cfg``'s record made from ``measured``, the record of a configuration that runs the same step: its
    measurement and prediction, with ``cfg``'s own configuration columns and throughputs (per its own voxels),
    ``measured_as`` naming the measured one, and neither worker time nor phases (no worker ran for it)."""
    from ..measure import timing
    from ..measure.predict import throughput_columns
    from ..sweep.worker import spec_columns

    own = {k: v for k, v in R.config_columns(cfg).items()
           if k != R.CUDNN_BENCHMARK}  # (the worker's: the configuration's or its recipe's, the same step's)
    rec = {**measured, **own, **spec_columns(cfg), R.MEASURED_AS: measured.get(R.MEASURED_AS) or measured[R.KEY],
           R.WORKER_TIME: None, R.CUDA_PHASES: None}
    voxels = rec[R.LABELLED_VOXELS_PER_STEP]
    if measured.get(R.STEP_TIME_MEDIAN):
        rec.update(timing.throughputs(measured[R.STEP_TIME_MEDIAN], voxels, rec[R.VOXELS_PER_STEP], cfg.batch,
                                      rec.get(R.FLOPS_PER_STEP), measured.get(R.PEAK_FLOPS)))
    if measured.get(R.PRED_STEP_TIME):
        rec.update(throughput_columns(measured[R.PRED_STEP_TIME], cfg.batch, voxels))
    return rec


def shares(latest: dict[str, dict[str, Any]], configs: list[RunConfig],
           usable: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[dict[str, Any]]:
    """The :func:`shared_record` of each configuration of ``configs`` that has no usable record in ``latest`` (key
    -> record; ``usable(record)``: what counts as measured) from one of its :func:`same_step` group that has one (a
    record measured by its own worker first)."""
    made = []
    for group in same_step(configs):
        have = {c.key(): r for c in group if (r := latest.get(c.key())) is not None and usable(r)}
        if not have:
            continue
        source = next((r for r in have.values() if not r.get(R.MEASURED_AS)), next(iter(have.values())))
        made += [shared_record(source, c) for c in group if c.key() not in have]
    return made


def report_name(gpu: str, torch_version: str) -> str:
    """``NVIDIA H100 80GB HBM3``, ``2.13.0+cu128`` -> ``nvidia-h100-80gb-hbm3-2.13.0+cu128``."""
    return f"{re.sub(r'[^a-z0-9]+', '-', gpu.lower()).strip('-')}-{torch_version}"


def _here(path: Any, snapshots: Path | None) -> str | None:
    """A recorded snapshot's path as found in ``snapshots`` (a run measured on another machine records that
    machine's paths), or None where the file is not there."""
    from ..measure.traces import GZ

    if not isinstance(path, str) or not path:
        return None
    found = snapshots / Path(path).name if snapshots is not None else Path(path)
    for p in (found, found.with_name(found.name + GZ)):  # compressed after the run (:func:`compress_snapshots`)
        if p.exists():
            return str(p)
    return None


def table(records: pd.DataFrame, snapshots: Path | None = None) -> pd.DataFrame:
    """One row per configuration: measured and predicted peaks (workspaces included, as measured), the
    prediction's relative errors, and the snapshots' paths where they are (in ``snapshots``, the run's
    snapshot folder, when given); ``key`` and ``measured_as`` as in the record (the key of the configuration whose
    measurement a row took: another row's ``key``)."""
    rows = []
    for _, r in records.iterrows():
        ok = r.get(R.STATUS) == R.OK
        took = r.get(R.MEASURED_AS)
        meas_a, meas_r = r.get(R.PEAK_ALLOCATED), r.get(R.PEAK_RESERVED)
        pred_a, pred_r = R.predicted_on_device(r), R.predicted_on_device(r, reserved=True)
        rows.append({
            "arch": r[R.ARCH], "stage": r.get(R.STAGE) or "", "size": r[R.SIZE], "batch": r[R.BATCH], "mode": r[R.MODE],
            "precision": r[R.PRECISION], "cudnn_benchmark": bool(r.get(R.CUDNN_BENCHMARK, False)),
            "status": r.get(R.STATUS),
            "measured_allocated_bytes": meas_a if ok else None, "predicted_allocated_bytes": pred_a,
            "allocated_error": pred_a / meas_a - 1 if ok and meas_a else None,
            "measured_reserved_bytes": meas_r if ok else None, "predicted_reserved_bytes": pred_r,
            "reserved_error": pred_r / meas_r - 1 if ok and meas_r else None,
            "snapshot": _here(r.get(R.SNAPSHOT_PATH), snapshots),
            "measured_snapshot": _here(r.get(R.CUDA_SNAPSHOT_PATH), snapshots),
            "worker_time_s": r.get(R.WORKER_TIME), "cuda_phase_times_s": r.get(R.CUDA_PHASES),
            "measuring_time_s": measuring_time(r), "gpu_shared": r.get(R.GPU_SHARED) is True,
            "started": r.get(R.TIMESTAMP), "key": r[R.KEY],
            "measured_as": took if isinstance(took, str) and took else None,
        })
    return pd.DataFrame(rows)


def measuring_time(record: Any) -> float | None:
    """The seconds a configuration held the GPU's worker, a prediction it made itself left out: the sum of its
    ``cuda_phase_times_s`` where recorded (bar the work done ahead of its turn), else its worker time less its
    prediction and MemTracker times (records made before the phases were, when every worker predicted for itself)."""
    phases = record.get(R.CUDA_PHASES)
    if isinstance(phases, str):
        return float(sum(v for k, v in json.loads(phases).items() if k not in R.BEFORE_TURN_PHASES))
    worker = record.get(R.WORKER_TIME)
    if not isinstance(worker, int | float) or pd.isna(worker):
        return None
    inside = sum(v for v in (record.get(R.PRED_TIME), record.get(R.MEMTRACKER_TIME))
                 if isinstance(v, int | float) and not pd.isna(v))
    return float(worker) - inside


def verdict(errors: pd.Series) -> tuple[bool, float, float]:
    """(passed, median |error|, max |error|) of the allocated errors; no error at all fails."""
    e = errors.dropna().abs()
    if e.empty:
        return False, float("nan"), float("nan")
    med, worst = float(e.median()), float(e.max())
    return med <= MEDIAN_LIMIT and worst <= MAX_LIMIT, med, worst


def markdown(df: pd.DataFrame, title: str, configs: list[RunConfig] | None = None, recorded: bool = False,
             made: pd.DataFrame | None = None) -> str:
    """The summary: verdict, error statistics per architecture (and per split where ``df`` has one), run time,
    failures. ``configs``: the grid's configurations (default: the rows of ``df``). ``recorded``: ``df`` is a
    recorded GPU run predicted again (``bench validate --recorded``), whose times are that run's, not this one's.
    ``made``: the run's calls (:func:`calls`): their wall time is what the target is held against; without it, the
    grid's time projected from the records."""
    grid_size = len(configs) if configs is not None else None
    passed, med, worst = verdict(df["allocated_error"])
    ok = df[df["status"] == R.OK]
    lines = [f"# Validation: {title}", "",
             f"**{'passed' if passed else 'FAILED'}**: median |error| of peak allocated {med:.2%} "
             f"(limit {MEDIAN_LIMIT:.0%}), max {worst:.2%} (limit {MAX_LIMIT:.0%}); "
             f"{len(ok)} of {grid_size or len(df)} configurations measured.", ""]
    took, shared = _took_and_shared(ok)
    if took.any():
        lines += [f"{int(took.sum())} of these {len(ok)} took the measurement of another configuration that runs the same "
                  "step (the same network on the same batch under the same settings, under another name; column "
                  f"`measured_as`, the key of the one measured): {int((~took).sum())} measurements. "
                  "Each configuration counts in the figures below.", ""]
    lines += [f"Largest |error| of peak allocated: {worst_rows}.", ""] if (worst_rows := _largest(ok)) else []
    if "split" in df:
        lines += [_errors_line(split, g) for split, g in ok.groupby("split", sort=False)]
        lines += ["", "(read: configurations of an architecture and mode whose recorded traces a rule of the model was "
                  "read from, or led to one; held out: all the others.)", ""]
    if shared.any():  # whether measuring side by side (--share-gpu) moved the figures: the errors of each apart, over
        # the measurements (a configuration that took another's is that one's)
        lines += [_errors_line(said_of, g, "measurements") for said_of, g in (("measured alone", ok[~shared & ~took]),
                                                                              ("measured sharing the GPU (--share-gpu)",
                                                                               ok[shared & ~took])) if len(g)] + [""]
    times = _time_lines(ok)
    wall, run_time = run_time_lines(df, configs, made)
    if recorded and (times or run_time or wall):
        lines += ["Times as the GPU run recorded them (this command measured nothing):", ""]
    lines += [wall, ""] if wall else []
    lines += times
    lines += [run_time, ""] if run_time else []
    lines += ["The verdict holds peak allocated (`max_memory_allocated`); peak reserved, which the caching allocator "
              "holds from the device, is given beside it.", ""]
    lines += ["| architecture | configurations | median allocated error | max abs allocated error | median reserved error "
              "| max abs reserved error |", "|---|---|---|---|---|---|"]
    for arch, g in ok.groupby("arch"):
        lines.append(f"| {arch} | {len(g)} | {signed_percent(g['allocated_error'].median())} | "
                     f"{g['allocated_error'].abs().max():.2%} | {signed_percent(g['reserved_error'].median())} | "
                     f"{g['reserved_error'].abs().max():.2%} |")
    bad = df[df["status"] != R.OK]
    if len(bad):
        lines += ["", "Not measured:", ""]
        lines += [f"- {r.arch} {r.stage} {r.mode} {r.size} b{r.batch} {r.precision}: {r.status}" for r in bad.itertuples()]
    return "\n".join(lines) + "\n"


def run_time_lines(df: pd.DataFrame, configs: list[RunConfig] | None,
                   made: pd.DataFrame | None = None) -> tuple[str | None, str | None]:
    """The summary's "Wall time" line (where ``made``, the run's calls, say) and its "Run time" line (where the records
    say; see :func:`_run_time_line`). The target is held against one figure: the calls' wall time, else the grid's time
    projected at the overlap of the measurements that shared the GPU, else the sum of the workers' times."""
    ok = df[df["status"] == R.OK]
    took, shared = _took_and_shared(ok)
    overlapped = bool((shared & ~took).any())  # (of the workers: one that took another's measurement ran none)
    est = _estimate(df, configs)
    walled = made is not None and len(made) > 0 and {"command_s", "measuring_s", "measured"} <= set(made)
    wall = _wall_line(made, est is not None and not est.missing) if walled else None
    run_time = _run_time_line(est, judged=not (wall or overlapped)) if est is not None else None
    if run_time and overlapped:
        run_time += side_by_side(ok, shared & ~took, est.whole, judged=not wall, alone=~shared & ~took)
    if run_time and not wall:
        run_time += (f" No call of this run noted its wall time ({CALLS}, which bench validate writes since "
                     "2026-11-27): this projection is all the summary knows of it.")
    return wall, run_time


def _took_and_shared(ok: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Masks of ``ok``: the configurations that took another's measurement (``measured_as``), and those measured
    sharing the GPU (``gpu_shared``); columns a run's records lack are all False."""
    took = ok["measured_as"].notna() if "measured_as" in ok else pd.Series(False, index=ok.index)
    shared = ok["gpu_shared"].fillna(False).astype(bool) if "gpu_shared" in ok else pd.Series(False, index=ok.index)
    return took, shared


def _largest(ok: pd.DataFrame, n: int = 3) -> str:
    """The ``n`` configurations whose peak allocated the prediction missed most, named, with their errors."""
    e = ok["allocated_error"].dropna()
    if e.empty:
        return ""
    rows = ok.loc[e.abs().sort_values(ascending=False).index[:n]]
    return "; ".join(f"{r.arch}{' ' + r.stage if isinstance(r.stage, str) and r.stage else ''} {r.mode} {r.size} "
                     f"b{r.batch} {r.precision}{' cudnn.benchmark' if r.cudnn_benchmark else ''} "
                     f"{signed_percent(r.allocated_error)}" for r in rows.itertuples())


def _errors_line(label: str, g: pd.DataFrame, unit: str = "configurations") -> str:
    """A part of the measured configurations (a split), or of the measurements (those that shared the GPU), and its
    allocated errors."""
    _, m, w = verdict(g["allocated_error"])
    return f"- {label} ({len(g)} {unit}): median |error| {m:.2%}, max {w:.2%}"


def note_call(runs: Path, **times: Any) -> None:
    """Add a ``bench validate`` call's wall times to ``runs``'s :data:`CALLS` (``command_s``: from the command's start
    to the end of measuring, its summary and fixtures not included; ``measuring_s``: the sweep's, from its start to
    its last record; ``sweep_start_s``: from the command's start to the sweep's, the grid made and the kept records
    read; ``first_record_s``: to its first record, the first workers' imports and preparing and the first predictions
    besides; ``measured``: how many configurations it measured; and what else the call says of itself: its
    ``share_gpu``, ``spares`` per slot, ``prediction_jobs`` and ``cores``, the settings its times were made under)."""
    with (runs / CALLS).open("a") as f:
        f.write(json.dumps(times) + "\n")


def calls(runs: Path) -> pd.DataFrame | None:
    """The calls :func:`note_call` noted in ``runs``, in order (None where none was: a run recorded before)."""
    p = runs / CALLS
    if not p.is_file():
        return None
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows) if rows else None


def _wall_line(made: pd.DataFrame, whole_grid: bool) -> str:
    """The summary's "Wall time" line: what ``bench validate``'s calls (:func:`calls`) took by their own clock, the
    figure the target names where they measured the whole grid."""
    n = len(made)
    each = " + ".join(f"{t / 60:.1f}" for t in made["command_s"])
    total = float(made["command_s"].sum())
    line = (f"Wall time: {n} call{'s' * (n != 1)} of bench validate measured {int(made['measured'].sum())} "
            f"configurations in {total / 60:.1f} min from the command's start to the end of its measuring"
            + (f" ({each} min)" if n > 1 else "")
            + f", {float(made['measuring_s'].sum()) / 60:.1f} min of it in the sweep (from its start to its last "
            "record)")
    if "source" in made and made["source"].notna().any():  # noted afterwards, from what the calls printed
        line += " (noted afterwards: calls.jsonl's source says from what)"
    if whole_grid:
        verdict = _against_target(total)
        split = "" if n == 1 else (" (the target's: one call on one GPU)" if verdict.startswith("over") else
                                   " (the target's is one call on one GPU: the calls' sum counts the start-up of each, "
                                   "which one call makes once)")
        return line + f": the whole grid, {verdict}{split}."
    return line + ": part of the grid (see Run time for the rest)."


def _time_lines(ok: pd.DataFrame) -> list[str]:
    """Where the measuring workers' time went (the grid's run time is what to speed up): medians over the
    configurations whose records say (``cuda_phase_times_s``, recorded since it was added)."""
    total = ok["worker_time_s"].dropna() if "worker_time_s" in ok else pd.Series(dtype=float)
    head = (f"worker_time_s, each worker process from its start to its record: median {total.median():.1f} s, total "
            f"{total.sum():.0f} s" if len(total) else "")
    if "cuda_phase_times_s" not in ok or ok["cuda_phase_times_s"].isna().all():
        return [f"Worker time ({head}, each worker's own prediction included): not by phase, as these records predate "
                "cuda_phase_times_s.", ""] if head else []
    phases = pd.DataFrame([json.loads(p) for p in ok["cuda_phase_times_s"].dropna()])
    parts = ", ".join(f"{name} {phases[name].median():.2f}" for name in R.CUDA_PHASE_NAMES
                      if name in phases and name not in R.BEFORE_TURN_PHASES)
    line = f"Worker time ({head + '; ' if head else ''}median seconds by phase over {len(phases)} configurations): {parts}."
    if R.AHEAD_PHASE in phases:  # off the GPU's clock: made while the configuration before was measured
        ahead = phases[R.AHEAD_PHASE].dropna()
        imports = phases[R.IMPORTS_PHASE].dropna() if R.IMPORTS_PHASE in phases else pd.Series(dtype=float)
        line += (f" Before their turn, while the GPU measured the configuration before (or, for an executor's first, "
                 f"while its prediction was made), {len(ahead)} workers made "
                 f"their network and batch on the CPU in a median {ahead.median():.2f} s"
                 + (f", after imports of a median {imports.median():.2f} s" if len(imports) else "")
                 + " (not counted above).")
    return [line, ""]


@dataclasses.dataclass(frozen=True)
class _Estimate:
    """The grid's measuring time from the measured rates (:func:`_run_time_line`)."""

    measured: int  # configurations measured, with a time
    done: float  # their measuring time, s
    missing: dict[tuple[str, bool], int]  # (mode, cudnn.benchmark) -> steps not measured (one per same_step group)
    rest: float  # the not measured at their class's mean, s
    unknown: list[str]  # classes none of which was measured

    @property
    def whole(self) -> float | None:
        """The whole grid's measuring time, s (None where a class has no measured rate)."""
        return None if self.unknown else self.done + self.rest


def _estimate(df: pd.DataFrame, configs: list[RunConfig] | None) -> _Estimate | None:
    ok = df[df["status"] == R.OK]
    if configs is None or "measuring_time_s" not in ok or ok["measuring_time_s"].isna().all():
        return None
    timed = ok.dropna(subset=["measuring_time_s"])
    means = timed.groupby(["mode", "cudnn_benchmark"])["measuring_time_s"].mean()
    # a step none of whose configurations has a record is one measurement to make (the others take it)
    have = set(ok["key"])
    missing = Counter((str(g[0].mode), bool(g[0].cudnn_benchmark)) for g in same_step(configs)
                      if not any(c.key() in have for c in g))
    unknown = sorted(f"{m} (cudnn.benchmark {'on' if b else 'off'})" for m, b in missing if (m, b) not in means)
    rest = float(sum(n * means[k] for k, n in missing.items() if k in means))
    return _Estimate(len(timed), float(timed["measuring_time_s"].sum()), missing, rest, unknown)


def _against_target(seconds: float, known: bool = True) -> str:
    """"within" or "over" the 10-minute target (``known``: False where part of the grid has no rate: over)."""
    return f"{'within' if known and seconds <= TARGET_S else 'over'} the {TARGET_S // 60}-minute target"


def _run_time_line(est: _Estimate, judged: bool = True) -> str:
    """The summary's "Run time" line: the whole grid's run time at the measured rates, what was measured plus each
    configuration not measured yet at the mean measuring time of those measured with its mode and cudnn.benchmark
    (what most sets a worker's time: the benchmark's trials are GPU work in the warm-up step), against ``TARGET_S``
    where ``judged`` (not where the measurements overlapped, whose sum is no run time: :func:`side_by_side` judges
    that, nor where the calls' wall time is known). Excludes the parent's time between workers."""
    n, done = est.measured, est.done
    line = (f"Run time: {n} configuration{'s' * (n != 1)} measured in {done / 60:.1f} min of measuring time "
            f"(measuring_time_s: a worker's time without a prediction it made; mean {done / n:.1f} s).")
    total = done + est.rest  # (est.whole, but for the classes with no rate)
    if est.missing:
        n_left = sum(est.missing.values())
        line += (f" The {n_left} step{'s' * (n_left != 1)} not measured (configurations that run the same step "
                 f"count once) would take about {est.rest / 60:.1f} min at the mean of those measured in their mode "
                 "and cudnn.benchmark setting, more where they are larger (the benchmark's trials grow with the patch)")
        line += f" and more for {', '.join(est.unknown)} (none measured)" if est.unknown else ""
        line += f": about {total / 60:.0f} min for the whole grid"
    else:
        line += " That is the whole grid"
    if not judged:
        return line + ("." if est.missing else ", the sum of its workers' times.")
    line += f", {_against_target(total, known=not est.unknown)}, not counting the time between workers."
    return line


def spans(ok: pd.DataFrame) -> tuple[float, float] | None:
    """(seconds some worker was running, the sum of their times) over the rows whose record says when it started
    (``started``: the record's timestamp, to the second) and for how long (``worker_time_s``); None where fewer than
    two do. The first is the length of the union of the workers' spans: the run's wall time without the time when
    none ran (the command's start-up and wrap-up, between the calls of a GPU lent for a while)."""
    if "started" not in ok or "worker_time_s" not in ok:
        return None
    timed = ok.dropna(subset=["started", "worker_time_s"])
    if len(timed) < 2:
        return None
    start = pd.to_datetime(timed["started"], utc=True, format="ISO8601")
    offsets = (start - start.min()).dt.total_seconds()
    busy, end = 0.0, float("-inf")
    for a, b in sorted(zip(offsets, offsets + timed["worker_time_s"], strict=True)):
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    return busy, float(timed["worker_time_s"].sum())


#: what the workers' records leave out of a run's wall time (bench validate prints it, and notes it in :data:`CALLS`)
NONE_RAN = ("the time when no worker ran (the command's start-up and wrap-up, waits between workers, the time between "
            f"the calls of a lent GPU; bench validate prints the wall time and notes it in {CALLS})")


def side_by_side(ok: pd.DataFrame, shared: pd.Series, whole: float | None, judged: bool = True,
                 alone: pd.Series | None = None) -> str:
    """The "Run time" line's end where some configurations (``shared``: a mask of ``ok``) shared the GPU
    (--share-gpu): the sum of their times is more than the time they took, so the wall time their records give
    (:func:`spans`), and the whole grid's time (``whole``: its measuring time, s) projected at that overlap
    (``judged``: against the target, where no call's wall time was noted). Those measured alone (``alone``: a mask of
    ``ok``; mostly the largest, which the memory gate let nothing beside) count at their own time, not at the
    overlap."""
    said = f" {int(shared.sum())} of them shared the GPU: their times overlap, so the sum is more than the time they took"
    got = spans(ok[shared])
    if got is None:
        return said + " (bench validate prints the wall time)."
    busy, total = got
    overlap = total / busy if busy > 0 else 1.0
    said += (f". By their records' starts and times, at least one of them was running during {busy / 60:.1f} min: "
             f"{overlap:.1f} at a time on average")
    if whole is not None and overlap > 1:
        by_itself = ok.loc[alone, "measuring_time_s"].dropna() if alone is not None else pd.Series(dtype=float)
        own = float(by_itself.sum())
        busy_whole = own + (whole - own) / overlap
        said += (f". At that rate the whole grid's workers take about {busy_whole / 60:.0f} min"
                 + (f" ({len(by_itself)} measured alone, counted at their own {own / 60:.1f} min)" if len(by_itself) else "")
                 + f". That is a floor of its wall time, which adds {NONE_RAN}")
        if judged and busy_whole > TARGET_S:
            said += f": over the {TARGET_S // 60}-minute target even before those"
        elif judged:
            said += f": the {TARGET_S // 60}-minute target leaves {(TARGET_S - busy_whole) / 60:.0f} min for them"
    else:
        said += f" ({NONE_RAN} left out)"
    return said + "."


def write(df: pd.DataFrame, folder: Path, name: str, configs: list[RunConfig] | None = None,
          title: str | None = None, recorded: bool = False, made: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """``folder/name.csv`` and its summary ``folder/name.md`` (titled ``title``, default ``name``; ``configs``: the
    grid's configurations, default the rows of ``df``; ``recorded``, ``made``: as :func:`markdown`)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    df.to_csv(csv, index=False)
    md.write_text(markdown(df, title or name, configs, recorded, made))
    return csv, md


def _predict(job: tuple[str, str]) -> dict[str, Any]:
    """A measured configuration's memory predicted again (:func:`repredict` reads nothing else)."""
    from ..sweep.worker import prediction

    return prediction(*job, memory_only=True)


def measured_on_cuda(record: dict[str, Any]) -> bool:
    """Whether a record is a measurement on CUDA that went through (whatever code version made it)."""
    return record.get(R.STATUS) == R.OK and record.get(R.BACKEND) == "cuda"


def measured(runs: Path, where: Callable[[dict[str, Any]], bool] | None = None,
             configs: list[RunConfig] | None = None) -> list[dict[str, Any]]:
    """The records of a recorded validation run (a folder ``bench validate`` wrote) measured on CUDA, of
    configurations of the grid (``configs``: of those, a part of it); ``where(record)``: only those it accepts."""
    from ..sweep import store

    keys = {c.key() for c in (grid() if configs is None else configs)}
    rows = [r for r in store.latest(runs).values() if measured_on_cuda(r) and r[R.KEY] in keys
            and (where is None or where(r))]
    if not rows:
        raise ValueError(f"no configuration of the validation grid was measured on CUDA in {runs}")
    return rows


def least_measured_first(archs: list[str], root: Path) -> list[str]:
    """``archs`` ordered by how many of their grid configurations any validation run under ``root`` measured on
    CUDA (whichever GPU), fewest first, ties in the given order: a lent GPU's few minutes go to the configurations
    no GPU has measured yet (the held-out test of the model), not to those another GPU measured already."""
    configs = grid(archs)
    seen: set[str] = set()
    for results in root.glob("*/results.jsonl"):
        try:
            seen |= {r[R.KEY] for r in measured(results.parent, configs=configs)}
        except ValueError:  # a run with none of these configurations measured
            pass
    count = Counter(c.arch for c in configs if c.key() in seen)
    return sorted(archs, key=lambda a: count[a])  # stable: ties keep the given order


def predicted_again(rows: list[dict[str, Any]], keep_from: str | None = None) -> list[dict[str, Any]]:
    """Which of ``rows`` :func:`repredict` predicts again: all but those recorded by the code version ``keep_from``
    (this very code: their own prediction is the one it would make). A ``.dirty`` version keeps none, since its
    code may have changed between the records."""
    if not keep_from or keep_from.endswith(".dirty"):
        return rows
    return [r for r in rows if r.get(R.CODE_VERSION) != keep_from]


def repredict(runs: Path, rows: list[dict[str, Any]], jobs: int | None = None,
              progress: Callable[[Any], None] | None = None, configs: list[RunConfig] | None = None,
              keep_from: str | None = None) -> pd.DataFrame:
    """``rows`` (:func:`measured` in ``runs``, of ``configs``: default the whole grid) predicted again by this code,
    for the GPU they were measured on, on ``jobs`` processes: :func:`table`'s rows with the new predictions, plus
    ``split``: ``read`` for an (architecture, mode) of :data:`READ_FROM`, else ``held out``. ``keep_from``: the rows
    this code version recorded keep their own prediction (:func:`predicted_again`; ``bench validate --keep-measured``
    on the GPU, where a second call of a session would otherwise spend GPU time predicting the first's again)."""
    from ..parallel import pmap

    by_key = {c.key(): c for c in (grid() if configs is None else configs)}
    steps = prediction_steps(rows, keep_from, configs)
    preds = pmap(_predict, [(by_key[rs[0][R.KEY]].to_json(), rs[0][R.DEVICE_NAME]) for rs in steps.values()], jobs,
                 progress=progress)
    new = {r[R.KEY]: R.prediction_columns(p) for rs, p in zip(steps.values(), preds) for r in rs}
    df = table(pd.DataFrame([{**r, **new.get(r[R.KEY], {})} for r in rows]), runs / "snapshots")
    df["measuring_time_s"] = [measuring_time(r) for r in rows]  # the prediction made there, not this one's
    df.insert(0, "split", ["read" if (a, m) in READ_FROM else "held out" for a, m in zip(df["arch"], df["mode"])])
    return df


def prediction_steps(rows: list[dict[str, Any]], keep_from: str | None = None,
                     configs: list[RunConfig] | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The predictions :func:`repredict` makes for ``rows``: one per step (:func:`bench.sweep.worker.measured_step`)
    and GPU measured on, among the rows :func:`predicted_again`, each with its rows in order (the first's prediction
    is theirs: their memory figures are the same step's)."""
    from ..sweep.worker import measured_step

    by_key = {c.key(): c for c in (grid() if configs is None else configs)}
    steps: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in predicted_again(rows, keep_from):
        steps.setdefault((measured_step(by_key[r[R.KEY]]), str(r.get(R.DEVICE_NAME))), []).append(r)
    return steps


#: a snapshot recorded on CUDA (``bench.sweep.worker``), compressed or not
RECORDED = "*.cuda.pickle"


def recorded_snapshots(snapshots: Path) -> list[Path]:
    """The snapshots recorded on CUDA in a run's snapshot folder, compressed (:func:`compress_snapshots`) or not."""
    from ..measure.traces import GZ

    return sorted([*snapshots.glob(RECORDED), *snapshots.glob(RECORDED + GZ)])


def compress_snapshots(snapshots: Path) -> list[Path]:
    """Every snapshot recorded on CUDA in ``snapshots`` not compressed yet, gzip-compressed in place
    (:func:`bench.measure.traces.compress`): about 60 kB where the pickle is 1 MB, so that the grid's can be
    committed under ``reports/validation``."""
    from ..measure import traces

    return [traces.compress(p) for p in sorted(snapshots.glob(RECORDED))]


def _written_since(path: Path, snapshot: Path) -> bool:
    """Whether ``path`` exists and was written since ``snapshot`` was recorded."""
    return path.exists() and path.stat().st_mtime >= snapshot.stat().st_mtime


def fixtures(snapshots: Path, dest: Path, header: dict[str, Any]) -> list[Path]:
    """Every recorded CUDA snapshot under ``snapshots`` as an event file under ``dest`` (test fixtures); its
    header names the snapshot as recorded (``NAME.cuda.pickle``, whether stored compressed or not). A fixture
    newer than its snapshot is left as it is: its header names the code version that recorded it (a run
    that keeps earlier measurements would otherwise claim them)."""
    from ..measure import traces

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for snap in recorded_snapshots(snapshots):
        name = traces.recorded_name(snap)
        # written compressed (about 7 times smaller); one written plain before, newer than its snapshot, is kept as it is
        plain, target = (dest / name.replace(".cuda.pickle", suffix) for suffix in traces.EVENT_SUFFIXES)
        if _written_since(plain, snap):
            target = plain
        elif not _written_since(target, snap):
            traces.convert(snap, target, {**header, "snapshot": name})
        out.append(target)
    return out
