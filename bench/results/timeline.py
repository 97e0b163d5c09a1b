"""A memory snapshot's timeline plot: allocated and reserved over the trace, phases shaded (where its frames name
them: segmem's predictions; a GPU's trace records Python frames, not segmem's phases), the peak marked and the largest
tensors live there named.

Drawn from the snapshot pickle alone, so one plot serves a predicted step (``bench run --snapshot``,
whose frames name module, phase and category: see :mod:`bench.measure.snapshot`), a step recorded on
CUDA (``NAME.cuda.pickle``) and a user's own ``torch.cuda.memory._snapshot()`` (``bench replay --plot``).
It is drawn by the parent after a sweep, not in the worker: the prediction stays as fast with
``--snapshot`` as without (issue 16: a snapshot costs under 10% of its prediction), and the plotting
library is imported once per sweep rather than once per configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..measure import snapshot as S
from ..measure import traces as T
from ..options import human_bytes

#: the step's phases (bench.measure.step: "done" is after the optimizer, when the step's leftovers go)
PHASE_COLOURS = {"setup": "#eeeeee", "forward": "#d6eaf8", "backward": "#fdebd0", "optimizer": "#d5f5e3",
                 "done": "#e5e5e5"}
PHASE_NAMES = {"done": "after the step"}
#: frames from these files say where torch allocated, not whose code asked: a real snapshot's tensor is
#: named by its first frame outside them
LIBRARY_FRAMES = ("/torch/", "<frozen", "/site-packages/")


@dataclass
class Timeline:
    """The levels of one device's trace from the measured step on (``x`` counts its events), each
    event's phase (None where the snapshot does not say), and the blocks live at the allocated peak
    as (bytes, where, category)."""

    x: list[int]
    allocated: list[int]
    reserved: list[int]
    phases: list[str | None]
    peak: int  # index into x of the allocated peak
    live_at_peak: list[tuple[int, str, str | None]]
    label: str


def _where(frames: list[dict[str, Any]]) -> str:
    """A tensor's origin: segmem's module name, else a real snapshot's first frame in the user's code."""
    if not frames:
        return "<no frames>"
    if S.frame_category(frames) is not None:
        return str(frames[0].get("filename", "<no module>"))
    own = [f for f in frames if not any(s in str(f.get("filename", "")) for s in LIBRARY_FRAMES)]
    f = (own or frames)[0]
    return f"{Path(str(f.get('filename', '?'))).name}:{f.get('line', 0)} {f.get('name', '')}"


def timeline(data: dict[str, Any], device: int = 0, label: str = "") -> Timeline:
    """The :class:`Timeline` of a loaded snapshot (:func:`bench.measure.traces.load_snapshot`)."""
    trace = T.snapshot_trace(data, device)
    entries = data["device_traces"][device]
    own = data.get(S.OWN) or {}
    start_us = own.get(S.MEASURED_FROM, 0)
    x: list[int] = []
    alloc: list[int] = []
    resv: list[int] = []
    phases: list[str | None] = []
    drawn: list[T.TraceEvent] = []  # the event of each point
    # a prediction is drawn as its allocator model gives it (the record's figures, unsplit remainders counted in
    # allocated); a real snapshot as its own trace records it
    for e, a, r in T.model_levels(trace) if own else T.levels(trace):
        entry = entries[e.at] if e.at >= 0 else {}
        if e.at < 0 or entry.get("time_us", 0) < start_us:
            continue
        frames = entry.get("frames") or []
        x.append(len(x))
        alloc.append(a)
        resv.append(r)
        phases.append(str(frames[0].get("name")) if own and frames else None)
        drawn.append(e)
    peak = alloc.index(max(alloc)) if alloc else 0
    live: dict[int, T.TraceEvent] = {}  # the blocks live at the peak: one pass up to its event
    for e in trace.events if drawn else ():
        if e.action in (T.ALLOC, T.LIVE):
            live[e.block] = e
        elif e.action == T.FREE:
            live.pop(e.block, None)
        if e is drawn[peak]:
            break
    named = []
    for e in live.values():
        frames = (entries[e.at].get("frames") or []) if e.at >= 0 else []
        named.append((e.size, _where(frames), S.frame_category(frames)))
    named.sort(key=lambda t: -t[0])
    return Timeline(x, alloc, resv, phases, peak, named, own.get(S.LABEL) or label)


def draw(tl: Timeline, dest: Path, title: str | None = None, top: int = 6) -> None:
    """The timeline as a PNG at ``dest``."""
    figure(tl, title or tl.label or dest.stem, top).savefig(dest, dpi=100)


def figure(tl: Timeline, title: str, top: int = 6):
    """The timeline's figure: allocated and reserved, phases shaded, the peak and the ``top`` tensors live at it."""
    # the object API, not pyplot: no global figure state, and the parent process's backend is left alone
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # the axis in the unit of the figures (a small step's 26.7 MiB peak is not 0.026 GiB)
    scale, unit = (2**30, "GiB") if max(tl.reserved, default=0) >= 2**30 else (2**20, "MiB")
    fig = Figure(figsize=(11, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    i0 = 0
    n = len(tl.phases)
    for i in range(1, n + 1):  # shade runs of one phase
        if i == n or tl.phases[i] != tl.phases[i0]:
            if tl.phases[i0] is not None:
                ax.axvspan(i0, i, color=PHASE_COLOURS.get(tl.phases[i0], "#f4f4f4"), lw=0)
            i0 = i
    # a phase too short to see (a few events of a long step: inference's leftovers "after the step") has no legend
    # entry, which would name a colour the plot does not show
    shown = [p for p in PHASE_COLOURS if tl.phases.count(p) * 500 >= n]
    for phase in shown:
        ax.fill_between([], [], color=PHASE_COLOURS[phase], label=PHASE_NAMES.get(phase, phase))
    kind = "model" if any(p is not None for p in tl.phases) else "trace"
    ax.step(tl.x, [r / scale for r in tl.reserved], where="post", color="#c0392b", label=f"reserved ({kind})")
    ax.step(tl.x, [a / scale for a in tl.allocated], where="post", color="#1f4e79", label=f"allocated ({kind})")
    if tl.allocated:
        peak = tl.allocated[tl.peak]
        # an arrow from above that ends at the peak: a marker on it would hide a spike there, and those beside it
        # the label's box lets the reserved line show through where it crosses it
        lo, hi = ax.get_xlim()
        left = (tl.x[tl.peak] - lo) > 0.75 * (hi - lo)  # a peak near the right edge: its label to the left, inside
        ax.annotate(f"peak allocated {human_bytes(peak)}", (tl.x[tl.peak], peak / scale), xytext=(-8 if left else 8, 22),
                    textcoords="offset points", ha="right" if left else "left",
                    arrowprops={"arrowstyle": "-|>", "color": "black", "shrinkA": 0, "shrinkB": 0, "lw": 0.8},
                    bbox={"facecolor": "white", "alpha": 0.5, "edgecolor": "none", "pad": 1})
    lines = [f"{n / 2**20:8.1f} MiB  {where}" + (f" ({cat})" if cat else "") for n, where, cat in tl.live_at_peak[:top]]
    ax.text(0.01, 0.98, "largest tensors live at the peak:\n" + "\n".join(lines), transform=ax.transAxes,
            va="top", ha="left", family="monospace", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#999999"})
    ax.set_xlabel("allocation / free event of the measured step" if kind == "model" else "allocation / free event")
    ax.set_ylabel(unit)
    ax.set_title(title)
    # the headroom above the lines holds the tensor list (top left) and the legend (top right), clear of the peak
    ax.set_ylim(0, max(tl.reserved, default=1) / scale * 1.45 or 1)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    # fixed margins (the labels are known): tight_layout would lay the text out a second time
    fig.subplots_adjust(left=0.055, right=0.99, bottom=0.1, top=0.93)
    return fig


def png_of(pickle: Path) -> Path:
    """Where a snapshot's timeline goes: beside it, ``NAME.png`` for ``NAME.pickle`` (and ``NAME.pickle.gz``)."""
    return pickle.with_name(T.recorded_name(pickle)).with_suffix(".png")


def pending(folder: Path) -> list[Path]:
    """The snapshot pickles in ``folder`` whose timeline is missing or older than the pickle."""
    return [p for p in sorted(Path(folder).glob("*.pickle"))
            if not png_of(p).exists() or png_of(p).stat().st_mtime < p.stat().st_mtime]


def draw_snapshots(paths: Iterable[Path], done=lambda path, error: None) -> None:
    """Draw each snapshot's timeline beside it; ``done(path, error)`` after each (error: the one line
    saying why a file was not drawn, else None), so that one bad file does not stop the others."""
    for p in paths:
        try:
            draw(timeline(T.load_snapshot(p)), png_of(p))
        except ValueError as exc:  # SnapshotError included: not a snapshot, or no trace to draw
            done(p, str(exc))
        else:
            done(p, None)
