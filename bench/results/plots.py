"""``bench plot``: comparison plots with seaborn, as PNG and SVG.

- ``memory_vs_voxels``: peak memory against input voxels per step, log-log, one line per
  architecture and precision/options, with the 16/24/40/80 GB capacities marked;
- ``throughput_vs_batch``: voxels per second against batch size;
- ``dice_vs_memory``: mean foreground Dice against peak memory (the Pareto view);
- ``predicted_vs_measured``: our predicted peak against the measured one, with y = x;
- ``largest_patch``: the largest input (voxels per step) each architecture fitted at each budget.

Every plot is drawn per backend and mode (its title says which, and the precision is in the legend);
an architecture has the same colour in every plot (:func:`palette`). A plot with no data is skipped
and said so in the returned notes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

import architectures  # noqa: E402

from .. import record as R  # noqa: E402
from ..options import GB, Backend, GiB  # noqa: E402
from .report import BUDGETS_GB, data_shape, equal_memory, memory_bytes  # noqa: E402

FORMATS = ("png", "svg")


def palette(others: Iterable[str] = ()) -> dict[str, tuple]:
    """One colour per architecture, the same in every plot: the registered ones, then ``others`` (the
    networks by import path or MONAI name that a store holds)."""
    names = architectures.names()
    names += sorted(set(others) - set(names))
    return dict(zip(names, sns.color_palette("tab20", len(names))))


def _variant(df: pd.DataFrame) -> pd.Series:
    opts = df.get(R.OPTIONS, pd.Series([""] * len(df), index=df.index)).fillna("").replace("{}", "")
    shape = data_shape(df)
    data = (shape[R.IN_CHANNELS].astype(str) + "ch " + shape[R.NUM_CLASSES].astype(str) + "cls").where(
        (shape[R.IN_CHANNELS] != 1) | (shape[R.NUM_CLASSES] != 3), "")
    return df[R.PRECISION].fillna("") + opts.map(lambda o: f" {o}" if o else "") + data.map(lambda d: f" {d}" if d else "")


def _save(fig, reports: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        p = reports / f"{name}.{fmt}"
        fig.savefig(p, bbox_inches="tight", dpi=120)
        paths.append(p)
    plt.close(fig)
    return paths


def _memory_label(backend: str) -> str:
    return "measured peak reserved (GiB)" if backend == Backend.CUDA else "predicted CUDA peak reserved (GiB)"


def plot_all(df: pd.DataFrame, reports: str | Path) -> tuple[list[Path], list[str]]:
    """Draw every plot the data allows; returns (files written, notes on what was skipped and why)."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    colours = palette(df[R.ARCH].dropna())
    files: list[Path] = []
    notes: list[str] = []
    ok = df[df[R.STATUS] == R.OK].copy()
    if ok.empty:
        return [], ["no successful runs to plot (all rows are oom/error/timeout)"]
    ok["memory_gib"] = memory_bytes(ok) / GiB
    ok["variant"] = _variant(ok)
    sns.set_theme(style="whitegrid")
    for (backend, mode), g in ok.groupby([R.BACKEND, R.MODE]):
        tag = f"{mode}, {backend}"
        g = g.sort_values(R.VOXELS_PER_STEP)
        # memory against voxels
        fig, ax = plt.subplots(figsize=(8, 5.5))
        sns.lineplot(data=g, x=R.VOXELS_PER_STEP, y="memory_gib", hue=R.ARCH, style="variant", markers=True,
                     palette=colours, ax=ax, errorbar=None)
        ax.set(xscale="log", yscale="log", xlabel="input voxels per step", ylabel=_memory_label(backend),
               title=f"Peak memory against input size ({tag})")
        for gb in BUDGETS_GB:
            ax.axhline(gb * GB / GiB, color="grey", lw=0.8, ls="--")
            ax.text(ax.get_xlim()[0], gb * GB / GiB, f" {gb} GB", va="bottom", fontsize=8, color="grey")
        files += _save(fig, reports, f"memory_vs_voxels_{mode}_{backend}")
        # throughput against batch
        if R.THROUGHPUT_VOXELS in g and g[R.THROUGHPUT_VOXELS].notna().any():
            fig, ax = plt.subplots(figsize=(8, 5.5))
            sns.lineplot(data=g, x=R.BATCH, y=R.THROUGHPUT_VOXELS, hue=R.ARCH, style="variant", markers=True,
                         palette=colours, ax=ax, errorbar=None)
            ax.set(xlabel="batch", ylabel="voxels per second", title=f"Throughput against batch ({tag})")
            files += _save(fig, reports, f"throughput_vs_batch_{mode}_{backend}")
        else:
            notes.append(f"throughput_vs_batch ({tag}): no timed runs (predictions have no times)")
        # Dice against memory
        if R.DICE_MEAN_FG in g and g[R.DICE_MEAN_FG].notna().any():
            d = g[g[R.DICE_MEAN_FG].notna()]
            fig, ax = plt.subplots(figsize=(8, 5.5))
            sns.scatterplot(data=d, x="memory_gib", y=R.DICE_MEAN_FG, hue=R.ARCH, style="variant", palette=colours,
                            s=80, ax=ax)
            ax.set(xlabel=_memory_label(backend), ylabel="mean foreground Dice (test)",
                   title=f"Dice against memory ({tag})")
            files += _save(fig, reports, f"dice_vs_memory_{mode}_{backend}")
        else:
            notes.append(f"dice_vs_memory ({tag}): no Dice runs (bench run --dice)")
        # predicted against measured
        pairs = _pairs(g, backend)
        if len(pairs):
            fig, ax = plt.subplots(figsize=(6, 6))
            sns.scatterplot(data=pairs, x="measured_gib", y="predicted_gib", hue=R.ARCH, style="variant",
                            palette=colours, s=70, ax=ax)
            top = max(pairs["measured_gib"].max(), pairs["predicted_gib"].max()) * 1.05
            ax.plot([0, top], [0, top], color="black", lw=0.8, label="y = x")
            what = "max_memory_allocated" if backend == Backend.CUDA else "tracked live-tensor peak (CPU)"
            ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"measured {what} (GiB)", ylabel="predicted (GiB)",
                   title=f"Predicted against measured peak ({tag})")
            ax.legend(fontsize=8)
            files += _save(fig, reports, f"predicted_vs_measured_{mode}_{backend}")
        else:
            notes.append(f"predicted_vs_measured ({tag}): no measured runs")
        # largest patch per budget
        eq = equal_memory(g)
        if len(eq):
            fig, ax = plt.subplots(figsize=(8, 5.5))
            sns.barplot(data=eq, x="budget_gb", y=R.VOXELS_PER_STEP, hue=R.ARCH, palette=colours, ax=ax)
            ax.set(yscale="log", xlabel="memory budget (GB)", ylabel="largest input fitted (voxels per step)",
                   title=f"Largest trainable input per budget, among the runs ({tag}; precision: "
                         f"{', '.join(sorted(set(g['precision'].dropna())))})")
            files += _save(fig, reports, f"largest_patch_{mode}_{backend}")
    return files, notes


def _pairs(g: pd.DataFrame, backend: str) -> pd.DataFrame:
    if backend == Backend.CUDA and R.PEAK_ALLOCATED in g:
        meas, pred = g[R.PEAK_ALLOCATED], g[R.PRED_ALLOCATED]
    elif backend == Backend.CPU and R.CPU_LIVE_PEAK in g:
        meas, pred = g[R.CPU_LIVE_PEAK], g[R.PRED_LIVE]
    else:
        return pd.DataFrame()
    out = pd.DataFrame({R.ARCH: g[R.ARCH], "variant": g["variant"], "measured_gib": meas / GiB,
                        "predicted_gib": pred / GiB})
    return out.dropna()
