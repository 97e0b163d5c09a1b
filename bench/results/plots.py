"""``bench plot``: comparison plots with seaborn/matplotlib, as PNG and SVG, each answering one question.

- ``memory_vs_voxels``: how does peak memory grow with the input? Peak memory against labelled voxels
  per step (log-log, marked as such), one line per architecture (a cascade is one point per
  configuration: its largest stage), GPU capacities marked; on the CPU the y-axis is the CPU's own
  live-tensor peak, never a GPU figure;
- ``throughput_vs_batch``: does a larger batch train faster? Labelled voxels per second against batch,
  one line per architecture and patch, with the step time's interquartile range as error bars;
- ``dice_vs_memory``: what does memory buy in Dice? Mean foreground Dice against peak memory, each point
  labelled with its patch and batch;
- ``predicted_vs_measured``: can the GPU-free prediction be trusted? Predicted against measured peak,
  with y = x;
- ``largest_patch``: what is the largest input each architecture trains within each budget? A grid of
  architectures x budgets, each cell naming the patch and batch (colour: labelled voxels, log scale).

Every plot is drawn per backend and mode (its title says which); an architecture has the same colour and
marker in every plot (:func:`palette`, :func:`markers`); legends sit outside the data; points are
annotated with their patch and batch where there are few. A plot with no data is skipped and said so in
the returned notes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.text import OffsetFrom  # noqa: E402
from matplotlib.ticker import EngFormatter, FixedLocator, FuncFormatter, NullLocator  # noqa: E402

import architectures  # noqa: E402

from .. import record as R  # noqa: E402
from ..options import GB, Backend, GiB, Mode, human_bytes  # noqa: E402
from . import stages  # noqa: E402
from .report import BUDGETS_GB, data_shape, equal_memory, memory_bytes, upgrade  # noqa: E402

FORMATS = ("png", "svg")
#: at most this many points in a plot get a text label each
ANNOTATE_AT_MOST = 16
#: points closer than this on the page (pixels across, up) have their labels stacked, not side by side: a label beside
#: one would cross the other's marker; the stack's gap from the points and its line height (points; labels are 7 pt)
NEAR_PX = np.array([60, 24])
LABEL_GAP_PT, LINE_PT = 9, 9
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "H", "d")
LINESTYLES = ("-", "--", ":", "-.")
LOG = " (log scale)"


def palette(others: Iterable[str] = ()) -> dict[str, tuple]:
    """One colour per architecture, the same in every plot (distinct hues, not paired shades): the
    registered ones, then ``others`` (the networks by import path or MONAI name that a store holds)."""
    names = architectures.names()
    names += sorted(set(others) - set(names))
    colours = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8) + sns.color_palette("Set2", 8)
    return dict(zip(names, colours * (len(names) // len(colours) + 1)))


def markers(others: Iterable[str] = ()) -> dict[str, str]:
    """One marker per architecture, so that lines differ without colour too."""
    names = architectures.names()
    names += sorted(set(others) - set(names))
    return dict(zip(names, MARKERS * (len(names) // len(MARKERS) + 1)))


def _variant(df: pd.DataFrame) -> pd.Series:
    opts = df.get(R.OPTIONS, pd.Series([""] * len(df), index=df.index)).fillna("").replace("{}", "")
    shape = data_shape(df)
    data = (shape[R.IN_CHANNELS].astype(str) + "ch " + shape[R.NUM_CLASSES].astype(str) + "cls").where(
        (shape[R.IN_CHANNELS] != 1) | (shape[R.NUM_CLASSES] != 3), "")
    # the allocator's settings make another configuration of the same network: its own line
    alloc = df.get(R.ALLOC_CONF, pd.Series([""] * len(df), index=df.index)).fillna("")
    return (df[R.PRECISION].fillna("") + opts.map(lambda o: f" {o}" if o else "") + data.map(lambda d: f" {d}" if d else "")
            + alloc.map(lambda a: f" alloc({a})" if a else ""))


def _save(fig, reports: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        p = reports / f"{name}.{fmt}"
        fig.savefig(p, bbox_inches="tight", dpi=120)
        paths.append(p)
    plt.close(fig)
    return paths


def _legend_outside(ax, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.03, 1), borderaxespad=0,
                  frameon=False, fontsize=8, title_fontsize=9)


def _annotate(ax, xs, ys, texts) -> None:
    """A small label beside each point, when there are few enough to read. Call it once the axes' limits are set:
    points that coincide share one label; points closer on the page than a label's extent (two batches of one
    patch, say) get their labels stacked in their order of height, each joined to its point by a thin line, so
    that no label overprints another or sits beside the wrong point."""
    if len(texts) > ANNOTATE_AT_MOST:
        return
    at: dict[tuple[float, float], list[str]] = {}
    for x, y, t in zip(xs, ys, texts):
        at.setdefault((float(x), float(y)), []).append(t)
    page = {p: ax.transData.transform(p) for p in at}  # pixels
    clusters: list[list[tuple[float, float]]] = []
    for p in sorted(at, key=lambda p: (page[p][1], page[p][0])):  # from the lowest
        near = next((c for c in clusters if any(all(abs(page[p] - page[q]) < NEAR_PX) for q in c)), None)
        if near is None:
            clusters.append([p])
        else:
            near.append(p)
    to_axes = ax.transAxes.inverted()
    for c in clusters:
        right = to_axes.transform(np.mean([page[p] for p in c], axis=0))[0] > 0.6  # keep the text inside the axes
        text = dict(ha="right" if right else "left", fontsize=7, color="0.25")
        if len(c) == 1:
            ax.annotate(" / ".join(dict.fromkeys(at[c[0]])), c[0], xytext=(-5 if right else 5, 4),
                        textcoords="offset points", **text)
            continue
        # stacked from the cluster's lowest point, beside its outermost one, in points from that data position: the
        # stack moves with the data when the layout is made (tight_layout shrinks the axes after this)
        anchor = (min(p[0] for p in c) if right else max(p[0] for p in c), c[0][1])
        gap = -LABEL_GAP_PT if right else LABEL_GAP_PT
        for i, p in enumerate(c):
            ax.annotate(" / ".join(dict.fromkeys(at[p])), p, xytext=(gap, i * LINE_PT),
                        textcoords=OffsetFrom(ax.transData, anchor), va="center", **text,
                        arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5, shrinkA=0, shrinkB=3))


def _point_label(r: pd.Series | dict) -> str:
    return f"{r[R.PATCH]} b{int(r[R.BATCH])}"


def _memory(g: pd.DataFrame, backend: str) -> tuple[pd.Series, str, bool]:
    """(GiB, axis label, whether GPU capacities apply) for a backend: on the CPU its own live peak."""
    if backend == Backend.CPU:
        return g[R.CPU_LIVE_PEAK] / GiB, "CPU peak of live tensors (GiB): not GPU memory", False
    if backend == Backend.CUDA:
        return memory_bytes(g) / GiB, "measured peak reserved (GiB)", True
    return memory_bytes(g) / GiB, "predicted CUDA peak reserved (GiB)", True


def _log_ticks(ax) -> None:
    """Plain tick labels on log axes (10M voxels, 16 GiB), not 1.6 x 10^1; some room for the labels."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(_some_minor(ax.xaxis, EngFormatter(sep="")))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(_some_minor(ax.yaxis, plain))
    ax.tick_params(axis="both", which="minor", labelsize=7)
    ax.margins(x=0.12, y=0.12)


def _some_minor(axis, fmt) -> FuncFormatter:
    """``fmt`` on the minor ticks that have room: 2, 3 and 5 of each decade where the axis spans one or more (a
    label on each of 2..9 crowds them, and 9's runs into the decade's own, 90k into 100k), all but 9 on a shorter
    axis, where they may be the only labels."""

    def label(v: float, pos: int | None = None) -> str:
        lo, hi = sorted(abs(e) for e in axis.get_view_interval())
        digit = round(v / 10 ** np.floor(np.log10(v) + 1e-9)) if v > 0 else 0
        return fmt(v, pos) if digit in ((2, 3, 5) if lo > 0 and hi / lo >= 10 else (2, 3, 4, 5, 6, 7, 8)) else ""

    return FuncFormatter(label)


def _series(ax, g: pd.DataFrame, x: str, y: str, by: list[str], colours, marks, label_of, errors=None) -> None:
    """One line per group of ``by`` (colour and marker of its architecture, a line style per value of the other
    keys, e.g. per variant, or per patch and variant, so that two lines of one architecture never look alike)."""
    groups = [(k if isinstance(k, tuple) else (k,), part) for k, part in g.groupby(by, sort=True)]
    rest = sorted({keys[1:] for keys, _ in groups}, key=str)
    for keys, part in groups:
        part = part.sort_values(x)
        arch = part[R.ARCH].iloc[0]
        style = LINESTYLES[rest.index(keys[1:]) % len(LINESTYLES)]
        yerr = errors(part) if errors else None
        ax.errorbar(part[x], part[y], yerr=yerr, color=colours.get(arch), marker=marks.get(arch, "o"), ls=style,
                    ms=6, lw=1.4, capsize=3 if yerr is not None else 0, label=label_of(part, keys))


def plot_all(df: pd.DataFrame, reports: str | Path) -> tuple[list[Path], list[str]]:
    """Draw every plot the data allows; returns (files written, notes on what was skipped and why)."""
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    df = upgrade(df)  # (architectures by the names labels show)
    colours, marks = palette(df[R.ARCH].dropna()), markers(df[R.ARCH].dropna())
    files: list[Path] = []
    notes: list[str] = []
    ok = df[df[R.STATUS] == R.OK].copy()
    if ok.empty:
        return [], ["no successful runs to plot (all rows are oom/error/timeout)"]
    ok["variant"] = _variant(ok)
    sns.set_theme(style="whitegrid")
    for (backend, mode), g in ok.groupby([R.BACKEND, R.MODE]):
        tag = f"{mode}, {backend}"
        whole = stages.whole_runs(g)
        whole = whole[whole[R.STATUS] == R.OK].copy()
        files += _memory_vs_voxels(whole, backend, tag, colours, marks, reports, f"memory_vs_voxels_{mode}_{backend}")
        if R.THROUGHPUT_VOXELS in whole and whole[R.THROUGHPUT_VOXELS].notna().any():
            files += _throughput(whole, backend, tag, colours, marks, reports, f"throughput_vs_batch_{mode}_{backend}")
        else:
            predicted = R.PRED_STEP_TIME in whole and whole[R.PRED_STEP_TIME].notna().any()
            notes.append(f"throughput_vs_batch ({tag}): no measured step times (it plots measurements)"
                         + ("; the predicted ones (--gpu) are in the report's tables" if predicted else ""))
        if R.DICE_MEAN_FG in whole and whole[R.DICE_MEAN_FG].notna().any():
            files += _dice(whole, backend, tag, colours, marks, reports, f"dice_vs_memory_{mode}_{backend}")
        else:
            notes.append(f"dice_vs_memory ({tag}): no Dice runs (bench run --dice)")
        pairs = _pairs(g, backend)
        if len(pairs):
            files += _predicted(pairs, backend, tag, colours, marks, reports, f"predicted_vs_measured_{mode}_{backend}")
        else:
            notes.append(f"predicted_vs_measured ({tag}): no measured runs")
        eq = equal_memory(g)
        if len(eq):
            files += _largest(eq, backend, mode, tag, g, reports, f"largest_patch_{mode}_{backend}")
    return files, notes


def _memory_vs_voxels(g, backend, tag, colours, marks, reports, name) -> list[Path]:
    g = g.copy()
    g["memory_gib"], ylabel, capacities = _memory(g, backend)
    g = g[g["memory_gib"].notna() & g[R.LABELLED_VOXELS_PER_STEP].notna()]
    if g.empty:
        return []
    fig, ax = plt.subplots(figsize=(9, 5.5))
    several = g["variant"].nunique() > 1
    _series(ax, g, R.LABELLED_VOXELS_PER_STEP, "memory_gib", [R.ARCH, "variant"], colours, marks,
            lambda part, keys: keys[0] + (f" ({keys[1]})" if several else ""))
    ax.set(xscale="log", yscale="log", xlabel="labelled voxels per step: batch x full-resolution patch" + LOG,
           ylabel=ylabel + LOG,
           title=f"Peak memory against input size ({tag}{'' if several else ', ' + g['variant'].iloc[0]})")
    if capacities:
        top = g["memory_gib"].max()
        for gb in BUDGETS_GB:
            if gb * GB / GiB <= top * 4:
                ax.axhline(gb * GB / GiB, color="grey", lw=0.8, ls="--")
                ax.annotate(f" {gb} GB GPU", (0.0, gb * GB / GiB), xycoords=("axes fraction", "data"), ha="left",
                            va="bottom", fontsize=8, color="grey")
    _log_ticks(ax)
    _annotate(ax, g[R.LABELLED_VOXELS_PER_STEP], g["memory_gib"], [f"{r[R.ARCH]} {_point_label(r)}" for _, r in g.iterrows()])
    _legend_outside(ax, "architecture (cascade: largest stage)" if (g[stages.LARGEST_STAGE].astype(bool)).any()
                    else "architecture")
    return _save(fig, reports, name)


def _throughput(g, backend, tag, colours, marks, reports, name) -> list[Path]:
    g = g[g[R.THROUGHPUT_VOXELS].notna()].copy()
    fig, ax = plt.subplots(figsize=(9, 5.5))

    def errors(part: pd.DataFrame):
        """The step time's interquartile range as a throughput range (a time is never shown alone)."""
        if R.STEP_TIME_IQR not in part or part[R.STEP_TIME_IQR].isna().all():
            return None
        t, half = part[R.STEP_TIME_MEDIAN], part[R.STEP_TIME_IQR].fillna(0) / 2
        vox = part[R.LABELLED_VOXELS_PER_STEP]
        low = part[R.THROUGHPUT_VOXELS] - vox / (t + half)
        high = (vox / (t - half).clip(lower=t * 0.05)) - part[R.THROUGHPUT_VOXELS]
        return np.vstack([low.to_numpy(float), high.to_numpy(float)])

    several = g["variant"].nunique() > 1
    _series(ax, g, R.BATCH, R.THROUGHPUT_VOXELS, [R.ARCH, R.PATCH, "variant"], colours, marks,
            lambda part, keys: f"{keys[0]} {keys[1]}" + (f" ({keys[2]})" if several else ""), errors)
    batches = sorted(set(g[R.BATCH].astype(int)))
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(batches) - 0.5, max(batches) + 0.5)
    ax.set_ylim(bottom=0)
    clock = "CPU wall clock" if backend == Backend.CPU else "CUDA events"
    ax.set(xlabel="batch (samples per step)", ylabel="labelled voxels per second (full-resolution patch)",
           title=f"Throughput against batch ({tag}; {clock}, bars: interquartile range of the step time)")
    _legend_outside(ax, "architecture, patch")
    return _save(fig, reports, name)


def _dice(g, backend, tag, colours, marks, reports, name) -> list[Path]:
    d = g[g[R.DICE_MEAN_FG].notna()].copy()
    d["memory_gib"], xlabel, _ = _memory(d, backend)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for arch, part in d.groupby(R.ARCH):
        ax.scatter(part["memory_gib"], part[R.DICE_MEAN_FG], color=colours.get(arch), marker=marks.get(arch, "o"),
                   s=70, label=arch)
    ax.set(xlabel=xlabel, ylabel="mean foreground Dice (test volumes)", ylim=(0, 1),
           title=f"Dice against memory ({tag})")
    _annotate(ax, d["memory_gib"], d[R.DICE_MEAN_FG], [_point_label(r) for _, r in d.iterrows()])
    _legend_outside(ax, "architecture")
    return _save(fig, reports, name)


def _predicted(pairs, backend, tag, colours, marks, reports, name) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for arch, part in pairs.groupby(R.ARCH):
        ax.scatter(part["measured_gib"], part["predicted_gib"], color=colours.get(arch), marker=marks.get(arch, "o"),
                   s=60, label=arch)
    top = max(pairs["measured_gib"].max(), pairs["predicted_gib"].max()) * 1.05
    ax.plot([0, top], [0, top], color="black", lw=0.8, label="y = x (exact)")
    what = "max_memory_allocated" if backend == Backend.CUDA else "tracked live-tensor peak on the CPU"
    pred = "predicted max_memory_allocated" if backend == Backend.CUDA else "predicted live-tensor peak"
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"measured {what} (GiB)", ylabel=f"{pred} (GiB)",
           title=f"Predicted against measured peak ({tag})")
    _annotate(ax, pairs["measured_gib"], pairs["predicted_gib"], pairs["label"].tolist())
    _legend_outside(ax, "architecture")
    return _save(fig, reports, name)


def _largest(eq: pd.DataFrame, backend: str, mode: str, tag: str, g: pd.DataFrame, reports: Path,
             name: str) -> list[Path]:
    whole = stages.whole_runs(g)
    whole = whole[whole[R.STATUS] == R.OK].assign(memory_gib=memory_bytes(whole) / GiB)
    archs = sorted(set(whole[R.ARCH]))
    budgets = list(BUDGETS_GB)
    vox = eq.pivot_table(index=R.ARCH, columns="budget_gb", values=R.LABELLED_VOXELS_PER_STEP, aggfunc="max")
    vox = vox.reindex(index=archs, columns=budgets)
    smallest = whole.sort_values("memory_gib").groupby(R.ARCH).first()
    text = pd.DataFrame("", index=archs, columns=budgets)
    for arch in archs:  # a cell left empty says why: the smallest run of the architecture needs more
        r = smallest.loc[arch]
        text.loc[arch, :] = (f"nothing fitted\n(smallest run {r[R.PATCH]} b{int(r[R.BATCH])}:\n"
                             f"{human_bytes(r['memory_gib'] * GiB)})")
    for r in eq.to_dict("records"):
        stage = f"\n(largest stage: {r[stages.LARGEST_STAGE]})" if r.get(stages.LARGEST_STAGE) else ""
        text.loc[r[R.ARCH], r["budget_gb"]] = f"{_point_label(r)}\n{human_bytes(r['memory_gib'] * GiB)}{stage}"
    fig, ax = plt.subplots(figsize=(2.6 * len(budgets) + 2.5, 0.75 * len(archs) + 1.8))
    scale = vox.stack().nunique() > 1  # a colour bar over one value would span an invented range
    sns.heatmap(vox, annot=text.to_numpy(), fmt="", cmap="Blues", norm=LogNorm(), ax=ax, linewidths=0.5,
                linecolor="white", annot_kws={"fontsize": 7}, cbar=scale,
                cbar_kws={"label": "labelled voxels per step" + LOG, "format": EngFormatter(sep="")} if scale else None)
    if scale:
        ax.collections[0].colorbar.ax.yaxis.set_minor_formatter(EngFormatter(sep=""))
    ax.set_facecolor("0.93")
    ax.grid(False)
    for i, arch in enumerate(archs):  # seaborn leaves the text of empty (NaN) cells out
        for j, b in enumerate(budgets):
            if pd.isna(vox.loc[arch, b]):
                ax.text(j + 0.5, i + 0.5, text.loc[arch, b], ha="center", va="center", fontsize=7, color="0.35")
    what = "measured reserved" if backend == Backend.CUDA else "predicted CUDA reserved"
    precisions = ", ".join(sorted(set(g[R.PRECISION].dropna())))
    ax.set(xlabel="GPU memory budget (GB)", ylabel="",
           title=f"Largest input {'trained' if mode == Mode.TRAIN else 'inferred'} within each budget, among the runs "
                 f"({tag}; {what}; {precisions})")
    ax.set_xticklabels([f"{b} GB" for b in budgets])
    ax.tick_params(axis="y", rotation=0)
    return _save(fig, reports, name)


def _pairs(g: pd.DataFrame, backend: str) -> pd.DataFrame:
    """Measured and predicted peak of each record (a cascade stage is its own pair: both are per stage)."""
    if backend == Backend.CUDA and R.PEAK_ALLOCATED in g:
        meas, pred = g[R.PEAK_ALLOCATED], R.predicted_on_device(g)  # as the console and bench validate compare
    elif backend == Backend.CPU and R.CPU_LIVE_PEAK in g:
        meas, pred = g[R.CPU_LIVE_PEAK], g[R.PRED_LIVE]
    else:
        return pd.DataFrame()
    stage = g[R.STAGE].fillna("") if R.STAGE in g else pd.Series("", index=g.index)
    label = [f"{s + ' ' if s else ''}{_point_label(r)}" for s, (_, r) in zip(stage, g.iterrows())]
    out = pd.DataFrame({R.ARCH: g[R.ARCH], "label": label, "measured_gib": meas / GiB, "predicted_gib": pred / GiB})
    return out.dropna()
