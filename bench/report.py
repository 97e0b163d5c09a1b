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

from . import store

GiB = 2**30
BUDGETS_GB = (16, 24, 40, 80)


class NothingToShow(ValueError):
    """No results match: the message says which filters left nothing."""


def load(out: str | Path, arch: Sequence[str] = (), device: Sequence[str] = (), mode: Sequence[str] = ()) -> pd.DataFrame:
    """The store's records, filtered; :class:`NothingToShow` when none are left."""
    df = store.load(out)
    if df.empty:
        raise NothingToShow(f"no results in {store.path(out)}; run `bench run` first")
    for col, values in (("arch", arch), ("device", device), ("mode", mode)):
        if values:
            df = df[df[col].isin(values)]
    if df.empty:
        filters = ", ".join(f"{c}={'/'.join(v)}" for c, v in (("arch", arch), ("device", device), ("mode", mode)) if v)
        raise NothingToShow(f"no results in {store.path(out)} match {filters}")
    return df.reset_index(drop=True)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([np.nan] * len(df), index=df.index)


def memory_bytes(df: pd.DataFrame) -> pd.Series:
    """The peak that decides whether a configuration fits: measured reserved on CUDA, else predicted reserved."""
    measured = _col(df, "peak_reserved_bytes")
    return measured.where(measured.notna(), _col(df, "pred_peak_reserved_bytes"))


def prediction_error(df: pd.DataFrame) -> pd.Series:
    """Relative error of our prediction against the measurement of the same record (NaN where none)."""
    cuda = (_col(df, "pred_peak_allocated_bytes") - _col(df, "peak_allocated_bytes")) / _col(df, "peak_allocated_bytes")
    cpu = (_col(df, "pred_peak_live_bytes") - _col(df, "cpu_live_peak_bytes")) / _col(df, "cpu_live_peak_bytes")
    return cuda.where(cuda.notna(), cpu)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """The report's columns (GiB, seconds, fractions), one row per record, sorted for equal-input reading."""
    gib = lambda c: _col(df, c) / GiB  # noqa: E731
    out = pd.DataFrame({
        "arch": df["arch"], "stage": _col(df, "stage").fillna(""), "mode": df["mode"], "device": df["device"],
        "precision": _col(df, "precision"), "size": _col(df, "size"), "batch": _col(df, "batch"),
        "options": _col(df, "options"), "status": df["status"],
        "voxels_per_step": _col(df, "voxels_per_step"),
        "measured_allocated_gib": gib("peak_allocated_bytes"), "measured_reserved_gib": gib("peak_reserved_bytes"),
        "measured_device_gib": gib("nvml_peak_bytes"), "cpu_live_peak_gib": gib("cpu_live_peak_bytes"),
        "predicted_allocated_gib": gib("pred_peak_allocated_bytes"),
        "predicted_reserved_gib": gib("pred_peak_reserved_bytes"),
        "memtracker_gib": gib("memtracker_peak_bytes"),
        "prediction_error": prediction_error(df),
        "memtracker_error": (_col(df, "memtracker_peak_bytes") - _col(df, "peak_allocated_bytes"))
        / _col(df, "peak_allocated_bytes"),
        "step_time_s": _col(df, "step_time_median_s"),
        "voxels_per_s": _col(df, "throughput_voxels_per_s"),
        "peak_flops_fraction": _col(df, "achieved_flops_fraction"),
        "dice_mean_fg": _col(df, "dice_mean_fg"),
        "threshold_dice_mean_fg": _col(df, "threshold_dice_mean_fg"),
    })
    for c in sorted(c for c in df.columns if c.startswith("dice_") and c not in
                    ("dice_mean_fg", "dice_per_volume", "dice_status", "dice_error")):
        out[c] = df[c]
    out = out.dropna(axis=1, how="all")
    return out.sort_values(["mode", "voxels_per_step", "arch", "batch"], na_position="last").reset_index(drop=True)


def equal_memory(df: pd.DataFrame, budgets_gb: Sequence[float] = BUDGETS_GB) -> pd.DataFrame:
    """Per budget and architecture, the successful configuration with the most voxels per step within it."""
    ok = df[df["status"] == "ok"].assign(memory_bytes=memory_bytes(df))
    ok = ok[ok["memory_bytes"].notna()]
    rows = []
    for budget in budgets_gb:
        fits = ok[ok["memory_bytes"] <= budget * 1e9]
        for (arch, mode), g in fits.groupby(["arch", "mode"]):
            best = g.sort_values(["voxels_per_step", "memory_bytes"], ascending=[False, True]).iloc[0]
            rows.append({"budget_gb": budget, "mode": mode, "arch": arch, "size": best["size"], "batch": best["batch"],
                         "voxels_per_step": best["voxels_per_step"], "memory_gib": best["memory_bytes"] / GiB,
                         "dice_mean_fg": best.get("dice_mean_fg", np.nan)})
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
    devices = sorted(set(df["device"].dropna()))
    lines = [f"# segmem report ({len(df)} records; devices: {', '.join(devices)})", ""]
    if "cpu" in devices:
        lines += ["CPU rows measure the CPU: their memory is the tracked live-tensor peak, their times CPU "
                  "times. CPU figures are not GPU figures; the predicted columns are the CUDA prediction.", ""]
    failed = table[table["status"] != "ok"]
    if len(failed):
        lines += [f"{len(failed)} configuration(s) did not finish: "
                  + ", ".join(f"{r.arch} {r.size} b{r.batch} ({r.status})" for r in failed.itertuples()), ""]
    for mode, part in table.groupby("mode", sort=True):
        part = part.drop(columns=["mode"]).dropna(axis=1, how="all")
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
