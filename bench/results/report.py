"""``bench report``: Markdown and CSV tables from the results store.

One table per mode (train, infer). Per architecture and configuration: measured peak allocated /
reserved / device (NVML) memory on CUDA, or the CPU's tracked live peak; our predicted peak and torch
MemTracker's, with the prediction's error against the measurement where both exist (on CUDA against
``max_memory_allocated``; on the CPU, the live-tensor prediction against the tracked live peak);
step time, throughput, fraction of the device's peak FLOP rate, Dice. Rows are sorted by voxels per
step, so architectures are compared at equal input; a second table per mode lists, for each memory
budget, the largest configuration of each architecture that fitted (compared at equal memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import record as R
from ..options import GB, GiB
from ..sweep import store
from .throughput import EPOCH_STEPS, epoch_seconds

BUDGETS_GB = (16, 24, 40, 80)


class NothingToShow(ValueError):
    """No results match: the message says which filters left nothing."""


def load(out: str | Path, arch: Sequence[str] = (), backend: Sequence[str] = (), mode: Sequence[str] = ()) -> pd.DataFrame:
    """The store's latest record per configuration, filtered; :class:`NothingToShow` when none are left."""
    df = store.load(out)
    if df.empty:
        raise NothingToShow(f"no results in {store.path(out)}; run `bench run` first")
    filters = ((R.ARCH, arch), (R.BACKEND, backend), (R.MODE, mode))
    for col, values in filters:
        if values:
            df = df[df[col].isin(values)]
    if df.empty:
        filters = ", ".join(f"{c}={'/'.join(v)}" for c, v in filters if v)
        raise NothingToShow(f"no results in {store.path(out)} match {filters}")
    return df.reset_index(drop=True)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([np.nan] * len(df), index=df.index)


def memory_bytes(df: pd.DataFrame) -> pd.Series:
    """The peak that decides whether a configuration fits: measured reserved on CUDA, else predicted reserved."""
    measured = _col(df, R.PEAK_RESERVED)
    return measured.where(measured.notna(), _col(df, R.PRED_RESERVED))


def prediction_error(df: pd.DataFrame) -> pd.Series:
    """Relative error of our prediction against the measurement of the same record (NaN where none)."""
    cuda = (_col(df, R.PRED_ALLOCATED) - _col(df, R.PEAK_ALLOCATED)) / _col(df, R.PEAK_ALLOCATED)
    cpu = (_col(df, R.PRED_LIVE) - _col(df, R.CPU_LIVE_PEAK)) / _col(df, R.CPU_LIVE_PEAK)
    return cuda.where(cuda.notna(), cpu)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The report's columns (GiB, seconds, fractions), one row per record, sorted for equal-input reading."""
    gib = lambda c: _col(df, c) / GiB  # noqa: E731
    out = pd.DataFrame({
        R.ARCH: df[R.ARCH], R.STAGE: _col(df, R.STAGE).fillna(""), R.MODE: df[R.MODE], R.BACKEND: df[R.BACKEND],
        R.PRECISION: _col(df, R.PRECISION), R.SIZE: _col(df, R.SIZE), R.BATCH: _col(df, R.BATCH),
        R.OPTIONS: _col(df, R.OPTIONS), R.STATUS: df[R.STATUS],
        R.VOXELS_PER_STEP: _col(df, R.VOXELS_PER_STEP),
        "measured_allocated_gib": gib(R.PEAK_ALLOCATED), "measured_reserved_gib": gib(R.PEAK_RESERVED),
        "measured_device_gib": gib(R.NVML_PEAK), "cpu_live_peak_gib": gib(R.CPU_LIVE_PEAK),
        "predicted_allocated_gib": gib(R.PRED_ALLOCATED),
        "predicted_reserved_gib": gib(R.PRED_RESERVED),
        "memtracker_gib": gib(R.MEMTRACKER_PEAK),
        "prediction_error": prediction_error(df),
        "memtracker_error": (_col(df, R.MEMTRACKER_PEAK) - _col(df, R.PEAK_ALLOCATED)) / _col(df, R.PEAK_ALLOCATED),
        "step_time_s": _col(df, R.STEP_TIME_MEDIAN),
        "voxels_per_s": _col(df, R.THROUGHPUT_VOXELS),
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
    return out.sort_values([R.MODE, R.VOXELS_PER_STEP, R.ARCH, R.BATCH], na_position="last").reset_index(drop=True)


def equal_memory(df: pd.DataFrame, budgets_gb: Sequence[float] = BUDGETS_GB) -> pd.DataFrame:
    """Per budget and architecture, the successful configuration with the most voxels per step within it."""
    ok = df[df[R.STATUS] == R.OK].assign(memory_bytes=memory_bytes(df))
    ok = ok[ok["memory_bytes"].notna()]
    rows = []
    for budget in budgets_gb:
        fits = ok[ok["memory_bytes"] <= budget * GB]
        for (arch, mode), g in fits.groupby([R.ARCH, R.MODE]):
            best = g.sort_values([R.VOXELS_PER_STEP, "memory_bytes"], ascending=[False, True]).iloc[0]
            rows.append({"budget_gb": budget, R.MODE: mode, R.ARCH: arch, R.SIZE: best[R.SIZE], R.BATCH: best[R.BATCH],
                         R.VOXELS_PER_STEP: best[R.VOXELS_PER_STEP], "memory_gib": best["memory_bytes"] / GiB,
                         R.DICE_MEAN_FG: best.get(R.DICE_MEAN_FG, np.nan)})
    return pd.DataFrame(rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
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


def write(df: pd.DataFrame, reports: str | Path, name: str = "report") -> list[Path]:
    """``<name>.md`` plus one CSV per table under ``reports``; returns the paths written."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    table = summary(df)
    written = []
    backends = sorted(set(df[R.BACKEND].dropna()))
    lines = [f"# segmem report ({len(df)} records; backends: {', '.join(backends)})", ""]
    if "cpu" in backends:
        lines += ["CPU rows measure the CPU: their memory is the tracked live-tensor peak, their times CPU "
                  "times. CPU figures are not GPU figures; the predicted columns are the CUDA prediction.", ""]
    failed = table[table[R.STATUS] != R.OK]
    if len(failed):
        lines += [f"{len(failed)} configuration(s) did not finish: "
                  + ", ".join(f"{r.arch} {r.size} b{r.batch} ({r.status})" for r in failed.itertuples()), ""]
    for mode, part in table.groupby(R.MODE, sort=True):
        part = part.drop(columns=[R.MODE]).dropna(axis=1, how="all")
        csv = reports / f"{name}_{mode}.csv"
        part.to_csv(csv, index=False)
        written.append(csv)
        lines += [f"## {mode}: at equal input (sorted by voxels per step)", "", markdown_table(part), ""]
    eq = equal_memory(df)
    if len(eq):
        csv = reports / f"{name}_equal_memory.csv"
        eq.to_csv(csv, index=False)
        written.append(csv)
        lines += ["## At equal memory: the largest configuration that fitted each budget", "",
                  "Memory: measured reserved on CUDA, else predicted reserved.", "",
                  markdown_table(eq.dropna(axis=1, how="all")), ""]
    md = reports / f"{name}.md"
    md.write_text("\n".join(lines))
    return [md, *written]
