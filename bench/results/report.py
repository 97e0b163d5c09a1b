"""``bench report``: Markdown and CSV tables from the results store.

One table per mode (train, infer). Per architecture, stage and configuration (its patch named in words,
``160^3 -> 240^3`` for meU-net): measured peak allocated / reserved / device (NVML) memory on CUDA, or
the CPU's tracked live peak beside its prediction; our predicted peak and torch MemTracker's, with the
prediction's error against the measurement where both exist (on CUDA against ``max_memory_allocated``;
on the CPU, the live-tensor prediction against the tracked live peak, both shown); step time with its
interquartile range, throughput (labelled full-resolution voxels per second, input voxels per second
beside it), fraction of the device's peak FLOP rate, Dice. Rows are sorted by labelled voxels per step,
so architectures are compared at equal input; a second table lists, for each memory budget, the largest
configuration of each architecture that fitted (compared at equal memory; a cascade as its largest
stage). The report ends with what each memory column means.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import record as R
from ..options import GB, Backend, GiB, Mode, choice
from ..sweep import store
from . import stages
from .throughput import EPOCH_STEPS, epoch_seconds

BUDGETS_GB = (16, 24, 40, 80)


class NothingToShow(ValueError):
    """No results match: the message says which filters left nothing."""


class BadFilter(NothingToShow):
    """A filter's value that no record could match (not a backend or mode, an architecture the store has no
    record of), or ``out`` not a folder or none: bad input, said before anything is written."""


def load(out: str | Path, arch: Sequence[str] = (), backend: Sequence[str] = (), mode: Sequence[str] = ()) -> pd.DataFrame:
    """The store's latest record per configuration, filtered; :class:`NothingToShow` when none are left."""
    for what, kind, values in (("backend", Backend, backend), ("mode", Mode, mode)):
        for v in values:
            try:
                choice(kind, v, f"--{what}")
            except ValueError as exc:
                raise BadFilter(str(exc)) from None
    if not Path(out).is_dir():
        raise BadFilter(f"--out {out} is a file: give the results folder (the one holding results.jsonl)"
                        if Path(out).exists() else f"--out {out}: no such folder (the results folder bench run --out wrote)")
    df = store.load(out)
    if df.empty:
        raise NothingToShow(f"no results in {store.path(out)}; run `bench run` first")
    filters = ((R.ARCH, arch), (R.BACKEND, backend), (R.MODE, mode))
    names = sorted(set(shown_arch(df)))
    unknown = [a for a in arch if a not in names and a not in set(df[R.ARCH])]
    if unknown:
        raise BadFilter(f"--arch {unknown[0]}: no record of it in {store.path(out)} (architectures there: "
                        f"{', '.join(names)})")
    for col, values in filters:
        if values:  # an architecture by its name or by the name labels show (a plans file's short name)
            df = df[df[col].isin(values) | (col == R.ARCH and _col(df, R.ARCH_LABEL).isin(values))]
    if df.empty:
        filters = ", ".join(f"{c}={'/'.join(v)}" for c, v in filters if v)
        raise NothingToShow(f"no results in {store.path(out)} match {filters} (architectures there: {', '.join(names)})")
    return df.reset_index(drop=True)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([np.nan] * len(df), index=df.index)


def shown_arch(df: pd.DataFrame) -> pd.Series:
    """Each record's architecture as labels show it: ``arch_label`` where it has one (a plans file's short
    name), else ``arch``."""
    label = _col(df, R.ARCH_LABEL).astype(object)
    return label.where(label.notna() & (label != ""), df[R.ARCH])


def data_shape(df: pd.DataFrame) -> pd.DataFrame:
    """Input channels and classes of each record (records made before they were options: 1 and 3)."""
    return pd.DataFrame({R.IN_CHANNELS: _col(df, R.IN_CHANNELS).fillna(1).astype(int),
                         R.NUM_CLASSES: _col(df, R.NUM_CLASSES).fillna(3).astype(int)}, index=df.index)


def upgrade(df: pd.DataFrame) -> pd.DataFrame:
    """Records written before the throughput was defined on labelled voxels (no ``labelled_voxels_per_step``)
    read as new ones: their ``throughput_voxels_per_s`` counted input voxels, so it moves to
    ``throughput_input_voxels_per_s``, and the labelled figures follow from ``input_shape`` (the first
    image tensor: the full-resolution patch). Their patch label is made from the spec. Then ``arch`` becomes
    the name labels show (``arch_label`` where the record has one: a plans file's short name, not its path),
    for every table and plot made from the result."""
    df = df.copy()
    for c in (R.LABELLED_VOXELS_PER_STEP, R.THROUGHPUT_INPUT_VOXELS):
        if c not in df:
            df[c] = np.nan
    old = df[R.LABELLED_VOXELS_PER_STEP].isna() & _col(df, R.INPUT_SHAPE).notna()
    if old.any():
        shape_voxels = _col(df, R.INPUT_SHAPE)[old].map(lambda s: float(np.prod([int(x) for x in str(s).split("x")])))
        df.loc[old, R.LABELLED_VOXELS_PER_STEP] = _col(df, R.BATCH)[old] * shape_voxels
        df.loc[old, R.THROUGHPUT_INPUT_VOXELS] = _col(df, R.THROUGHPUT_VOXELS)[old]
        df.loc[old, R.THROUGHPUT_VOXELS] = df.loc[old, R.LABELLED_VOXELS_PER_STEP] / _col(df, R.STEP_TIME_MEDIAN)[old]
    if R.PATCH not in df or df[R.PATCH].isna().any():
        df[R.PATCH] = [p if isinstance(p, str) else patch_of(r) for p, r in zip(_col(df, R.PATCH), df.to_dict("records"))]
    df[R.ARCH] = shown_arch(df)
    return df


def patch_of(rec: dict) -> str:
    """A record's patch label (:meth:`ArchSpec.patch_label`) from its configuration columns."""
    import architectures

    from ..options import parse_size

    try:
        return architectures.spec(rec[R.ARCH]).patch_label(
            parse_size(str(rec[R.SIZE])), rec[R.MODE], rec.get(R.STAGE) or "", **json.loads(rec.get(R.OPTIONS) or "{}"))
    except (ValueError, KeyError, TypeError):
        return str(rec.get(R.SIZE, ""))


def memory_bytes(df: pd.DataFrame) -> pd.Series:
    """The peak that decides whether a configuration fits: measured reserved on CUDA, else predicted reserved (as
    ``max_memory_reserved`` counts it: cuDNN's workspaces in)."""
    measured = _col(df, R.PEAK_RESERVED)
    return measured.where(measured.notna(), _predicted(df, reserved=True))


def _predicted(df: pd.DataFrame, reserved: bool = False) -> pd.Series:
    """The predicted peak of each record as the console and ``bench validate`` give it (:func:`R.predicted_on_device`)."""
    v = R.predicted_on_device(df, reserved)
    return v if v is not None else pd.Series([np.nan] * len(df), index=df.index)


def prediction_error(df: pd.DataFrame) -> pd.Series:
    """Relative error of our prediction against the measurement of the same record (NaN where none):
    on CUDA predicted against measured ``max_memory_allocated``; on the CPU the predicted live-tensor peak
    against the tracked one (both columns are shown beside it: predicted_live_gib, cpu_live_peak_gib)."""
    cuda = (_predicted(df) - _col(df, R.PEAK_ALLOCATED)) / _col(df, R.PEAK_ALLOCATED)
    cpu = (_col(df, R.PRED_LIVE) - _col(df, R.CPU_LIVE_PEAK)) / _col(df, R.CPU_LIVE_PEAK)
    return cuda.where(cuda.notna(), cpu)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The report's columns (GiB, seconds, fractions), one row per record (each cascade stage its own row,
    named), sorted by labelled voxels per step for equal-input reading."""
    df = upgrade(df)
    gib = lambda c: _col(df, c) / GiB  # noqa: E731
    cpu = df[R.BACKEND] == "cpu"
    out = pd.DataFrame({
        R.ARCH: df[R.ARCH], R.STAGE: _col(df, R.STAGE).fillna(""), R.PATCH: df[R.PATCH], R.MODE: df[R.MODE],
        R.BACKEND: df[R.BACKEND], R.PRECISION: _col(df, R.PRECISION), R.SIZE: _col(df, R.SIZE),
        R.BATCH: _col(df, R.BATCH), **data_shape(df), R.OPTIONS: _col(df, R.OPTIONS), R.STATUS: df[R.STATUS],
        R.LABELLED_VOXELS_PER_STEP: _col(df, R.LABELLED_VOXELS_PER_STEP),
        R.VOXELS_PER_STEP: _col(df, R.VOXELS_PER_STEP),
        "measured_allocated_gib": gib(R.PEAK_ALLOCATED), "measured_reserved_gib": gib(R.PEAK_RESERVED),
        "measured_device_gib": gib(R.NVML_PEAK), "cpu_live_peak_gib": gib(R.CPU_LIVE_PEAK),
        "predicted_live_gib": gib(R.PRED_LIVE).where(cpu),  # what the CPU's live peak is compared with
        "predicted_allocated_gib": _predicted(df) / GiB,
        "predicted_reserved_gib": _predicted(df, reserved=True) / GiB,
        "prediction_error": prediction_error(df),
        "memtracker_gib": gib(R.MEMTRACKER_PEAK),
        "memtracker_error": (_col(df, R.MEMTRACKER_PEAK) - _col(df, R.PEAK_ALLOCATED)) / _col(df, R.PEAK_ALLOCATED),
        "step_time_s": _col(df, R.STEP_TIME_MEDIAN),
        "step_time_iqr_s": _col(df, R.STEP_TIME_IQR),
        R.REPEATS: _col(df, R.REPEATS),
        "voxels_per_s": _col(df, R.THROUGHPUT_VOXELS),
        "input_voxels_per_s": _col(df, R.THROUGHPUT_INPUT_VOXELS),
        "peak_flops_fraction": _col(df, R.FLOPS_FRACTION),
        R.PRED_GPU: _col(df, R.PRED_GPU),
        R.PRED_STEP_TIME: _col(df, R.PRED_STEP_TIME),
        f"pred_epoch_s ({EPOCH_STEPS} steps)": epoch_seconds(_col(df, R.PRED_STEP_TIME)),
        R.DICE_MEAN_FG: _col(df, R.DICE_MEAN_FG),
        R.THRESHOLD_DICE_MEAN_FG: _col(df, R.THRESHOLD_DICE_MEAN_FG),
    })
    for c in R.class_columns(df.columns):
        out[c] = df[c]
    out = out.dropna(axis=1, how="all")
    if "step_time_s" in out and "step_time_iqr_s" not in out:  # a time is never shown without its spread
        out["step_time_iqr_s"] = np.nan
    order = [c for c in (R.MODE, R.LABELLED_VOXELS_PER_STEP, R.ARCH, R.STAGE, R.BATCH) if c in out]
    return out.sort_values(order, na_position="last").reset_index(drop=True)


def equal_memory(df: pd.DataFrame, budgets_gb: Sequence[float] = BUDGETS_GB) -> pd.DataFrame:
    """Per budget, backend, architecture and data shape (input channels, classes), the successful
    whole-architecture configuration with the most labelled voxels per step within it; a cascade's memory
    is its largest stage's (:mod:`.stages`)."""
    whole = stages.whole_runs(upgrade(df))
    ok = whole.assign(memory_bytes=memory_bytes(whole), **data_shape(whole))
    ok = ok[(ok[R.STATUS] == R.OK) & ok["memory_bytes"].notna()]
    rows = []
    for budget in budgets_gb:
        fits = ok[ok["memory_bytes"] <= budget * GB]
        groups = [R.ARCH, R.MODE, R.BACKEND, R.IN_CHANNELS, R.NUM_CLASSES]
        for (arch, mode, backend, channels, classes), g in fits.groupby(groups):
            best = g.sort_values([R.LABELLED_VOXELS_PER_STEP, "memory_bytes"], ascending=[False, True]).iloc[0]
            rows.append({"budget_gb": budget, R.MODE: mode, R.BACKEND: backend, R.ARCH: arch, R.IN_CHANNELS: channels,
                         R.NUM_CLASSES: classes, R.PATCH: best[R.PATCH], R.SIZE: best[R.SIZE], R.BATCH: best[R.BATCH],
                         R.LABELLED_VOXELS_PER_STEP: best[R.LABELLED_VOXELS_PER_STEP],
                         "memory_gib": best["memory_bytes"] / GiB, stages.LARGEST_STAGE: best[stages.LARGEST_STAGE],
                         R.DICE_MEAN_FG: best.get(R.DICE_MEAN_FG, np.nan)})
    out = pd.DataFrame(rows)
    if len(out) and not out[stages.LARGEST_STAGE].astype(bool).any():
        out = out.drop(columns=[stages.LARGEST_STAGE])
    return out


def _fmt(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float | np.floating):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int | np.integer):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v).replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs the optional tabulate package)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


#: the report's section on what its memory columns mean (two sentences each)
MEMORY_COLUMNS = """## What the memory columns mean

- **measured_allocated_gib** (CUDA): `torch.cuda.max_memory_allocated`, the peak of bytes held by live
  tensors during the measured training step (after a warm-up step, so the optimizer's state exists). It is what the
  network itself needs, without the allocator's cache or the CUDA context.
- **measured_reserved_gib** (CUDA): `torch.cuda.max_memory_reserved`, the peak the caching allocator took
  from the GPU (allocated plus cached free blocks and rounding). It decides an out-of-memory error; the
  equal-memory table and the largest-patch plot compare it, without the CUDA context, with the budget
  (`bench fit` and the `--gpu-memory` screen decide by the nvidia-smi-level figure at the GPU's memory).
- **measured_device_gib** (CUDA): the process's device memory as NVML (nvidia-smi) sees it, sampled during
  the step. It adds the CUDA context and cuDNN/cuBLAS workspaces to the reserved figure: what a GPU's
  capacity must hold.
- **predicted_allocated_gib / predicted_reserved_gib** (every backend): our GPU-free prediction of the two
  CUDA figures above, from a fake-tensor trace replayed through a model of the caching allocator, with cuDNN's
  workspaces placed in it as `max_memory_*` count them (the figures the console and `bench validate` give). They
  leave the CUDA context out; prediction_error compares them with the measurement where there is one.
- **memtracker_gib**: torch's own MemTracker on the same traced step, the reference the prediction must
  beat. Empty where MemTracker cannot track the step; the reason is listed under the table.
- **cpu_live_peak_gib** and **predicted_live_gib** (CPU rows): the tracked peak of live tensor bytes of the
  step run on the CPU, and the prediction of exactly that quantity. **A CPU figure is not a GPU figure**:
  no caching allocator, other kernels and workspaces; on CPU rows prediction_error compares these two
  columns, and the predicted_allocated/reserved columns are still the CUDA prediction.
- **A cascade** has one row per stage (stages train one after the other); its memory is its largest
  stage's, which is what the equal-memory table uses (largest_stage names it).
"""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def write(df: pd.DataFrame, reports: str | Path, name: str = "report") -> list[Path]:
    """``<name>.md`` plus one CSV per table under ``reports``; returns the paths written."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    df = upgrade(df)
    table = summary(df)
    written = []
    backends = sorted(set(df[R.BACKEND].dropna()))
    lines = [f"# segmem report ({_plural(len(df), 'record')}; backends: {', '.join(backends)})", ""]
    if "cpu" in backends:
        lines += ["CPU rows measure the CPU: their memory is the tracked live-tensor peak, their times CPU "
                  "times (each with its interquartile range, step_time_iqr_s). CPU figures are not GPU figures; "
                  "the predicted allocated/reserved columns are the CUDA prediction.", ""]
    failed = table[table[R.STATUS] != R.OK]
    if len(failed):
        lines += [f"{_plural(len(failed), 'configuration')} did not finish: "
                  + ", ".join(f"{_row_label(r)} ({r[R.STATUS]})" for r in failed.to_dict("records")), ""]
    for mode, part in table.groupby(R.MODE, sort=True):
        part = part.drop(columns=[R.MODE]).dropna(axis=1, how="all")
        csv = reports / f"{name}_{mode}.csv"
        part.to_csv(csv, index=False)
        written.append(csv)
        lines += [f"## {mode}: at equal input (sorted by labelled voxels per step)", "",
                  "Labelled voxels: batch x the full-resolution (standard) patch, what a step segments; input voxels "
                  "count every image tensor (meU-net's expanded patch too). voxels_per_s is labelled voxels per "
                  "second.", "", markdown_table(part), ""]
        lines += _memtracker_notes(df[df[R.MODE] == mode])
    eq = equal_memory(df)
    if len(eq):
        csv = reports / f"{name}_equal_memory.csv"
        eq.to_csv(csv, index=False)
        written.append(csv)
        lines += ["## At equal memory: the largest configuration that fitted each budget", "",
                  "Memory: measured reserved on CUDA, else predicted reserved (CPU rows too: their CPU figures "
                  "say nothing about a GPU). A cascade counts as its largest stage.", "",
                  markdown_table(eq.dropna(axis=1, how="all")), ""]
    lines += [MEMORY_COLUMNS]
    md = reports / f"{name}.md"
    md.write_text("\n".join(lines))
    return [md, *written]


def _row_label(r: dict) -> str:
    stage = f" [{r[R.STAGE]}]" if r.get(R.STAGE) else ""
    return f"{r[R.ARCH]}{stage} {r[R.PATCH]} b{r[R.BATCH]}"


def _memtracker_notes(df: pd.DataFrame) -> list[str]:
    """Why memtracker_gib is empty, once per reason, naming the rows."""
    if R.MEMTRACKER_NOTE not in df:
        return []
    notes = df[df[R.MEMTRACKER_NOTE].notna()]
    if notes.empty:
        return []
    lines = ["memtracker_gib is empty for:"]
    for note, g in notes.groupby(R.MEMTRACKER_NOTE):
        who = sorted({f"{a} [{s}]" if s else a for a, s in zip(g[R.ARCH], _col(g, R.STAGE).fillna(""))})
        lines.append(f"- {', '.join(who)}: {note}")
    return [*lines, ""]
