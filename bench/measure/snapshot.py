"""A predicted step's memory as a PyTorch memory snapshot, and its timeline plot.

The tracked storage events of a prediction are replayed through the allocator model with its trace
on; the model's segments, blocks and device trace are written in the format of
``torch.cuda.memory._snapshot()``, so that PyTorch's own viewer (pytorch.org/memory_viz,
``torch.cuda._memory_viz``) opens it. Each allocation's frames name the module that made it
(``torch.utils.module_tracker``) and the phase of the step (forward, backward, optimizer), so a
user sees where a configuration's memory goes without a GPU. The same builder answers the fake CUDA
backend's ``torch.cuda.memory._snapshot()`` in the tests.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .allocator import AllocatorSettings, CachingAllocatorModel
from .tracker import AllocationTracker

PHASE_COLOURS = {"setup": "#eeeeee", "forward": "#d6eaf8", "backward": "#fdebd0", "optimizer": "#d5f5e3"}


def deepest(parents: set[str]) -> str:
    """The innermost module of ``ModuleTracker.parents`` (fully qualified names nest with dots)."""
    return max(parents, key=lambda n: (n.count("."), n))


def _frames(module: str, phase: str, label: str) -> list[dict[str, Any]]:
    return [{"filename": module or "<no module>", "line": 0, "name": phase},
            {"filename": "segmem", "line": 0, "name": label}]


def build(tracker: AllocationTracker, exclude: set[int] = frozenset(), settings: AllocatorSettings | None = None,
          capacity: int | None = None, label: str = "segmem prediction",
          timeline: Callable[[int, CachingAllocatorModel], None] | None = None) -> dict[str, Any]:
    """The snapshot dict of ``tracker``'s events (see the module docstring). ``timeline(i, model)``,
    when given, is called after each event (for plots)."""
    settings = settings or AllocatorSettings()
    trace: list[dict[str, Any]] = []
    model = CachingAllocatorModel(settings, capacity, trace=trace)
    frames: dict[int, list[dict[str, Any]]] = {}
    for i, e in enumerate(tracker.events):
        if e.sid not in exclude:
            n = len(trace)
            if e.nbytes > 0:
                frames[e.sid] = _frames(tracker.modules.get(e.sid, ""), e.phase, label)
                model.malloc(e.sid, e.nbytes)
            elif e.sid in model._handles:
                model.free(e.sid)
            for entry in trace[n:]:
                entry["frames"] = frames.get(e.sid, [])
                entry["time_us"] = i
        if timeline is not None:
            timeline(i, model)
    handles = model.handle_of()
    segments = []
    for seg, blocks in model.segment_blocks():
        runs: list[list] = [[]]
        for b in blocks:  # an expandable segment is shown as its mapped ranges
            if b.mapped:
                runs[-1].append(b)
            elif runs[-1]:
                runs.append([])
        for run in filter(None, runs):
            out = []
            for b in run:
                h = handles.get(id(b))
                out.append({"address": model.address(b), "size": b.size,
                            "requested_size": model.requested.get(h, b.size) if h is not None else 0,
                            "state": "inactive" if h is None else "active_allocated",
                            "frames": frames.get(h, []) if h is not None else []})
            active = [b for b in out if b["state"] != "inactive"]
            segments.append({
                "device": 0, "address": out[0]["address"], "total_size": sum(b["size"] for b in out),
                "allocated_size": sum(b["size"] for b in active), "active_size": sum(b["size"] for b in active),
                "requested_size": sum(b["requested_size"] for b in active), "stream": seg.stream,
                "segment_type": "small" if seg.small else "large", "segment_pool_id": (0, 0),
                "is_expandable": seg.expandable, "frames": [], "blocks": out})
    return {
        "segments": sorted(segments, key=lambda s: s["address"]),
        "device_traces": [trace],
        "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": settings.conf(),
                               "expandable_segments": settings.expandable_segments,
                               "max_split_size": settings.max_split_size or -1,
                               "garbage_collection_threshold": settings.garbage_collection_threshold,
                               "roundup_power2_divisions": {str(1 << i): d for i, d in
                                                            enumerate(settings.roundup_power2_divisions)}},
    }


def timeline_plot(tracker: AllocationTracker, exclude: set[int], start: int, dest: Path, title: str,
                  settings: AllocatorSettings | None = None, capacity: int | None = None, top: int = 6) -> dict[str, Any]:
    """Write the snapshot's companion PNG: allocated and reserved over the measured step (events from
    ``start``), phases shaded, the allocated peak marked, the largest tensors live there named by
    module. Returns the snapshot dict built on the way (one replay for both)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs: list[int] = []
    alloc: list[int] = []
    resv: list[int] = []

    def record(i: int, model: CachingAllocatorModel) -> None:
        if i >= start:
            xs.append(i - start)
            alloc.append(model.allocated)
            resv.append(model.reserved)

    snap = build(tracker, exclude, settings, capacity, title, record)
    events = tracker.events[start:]
    peak_i = max(range(len(alloc)), key=alloc.__getitem__) if alloc else 0
    biggest = sorted(tracker.live_at(start + peak_i, exclude).items(), key=lambda kv: -kv[1])[:top]
    gib = 2**30
    fig, ax = plt.subplots(figsize=(11, 5))
    i0 = 0
    for i in range(1, len(events) + 1):  # shade runs of one phase
        if i == len(events) or events[i].phase != events[i0].phase:
            ax.axvspan(i0, i, color=PHASE_COLOURS.get(events[i0].phase, "#f4f4f4"), lw=0)
            i0 = i
    for phase, colour in PHASE_COLOURS.items():
        ax.fill_between([], [], color=colour, label=phase)
    ax.step(xs, [r / gib for r in resv], where="post", color="#c0392b", label="reserved (model)")
    ax.step(xs, [a / gib for a in alloc], where="post", color="#1f4e79", label="allocated (model)")
    if alloc:
        ax.plot([xs[peak_i]], [alloc[peak_i] / gib], "v", color="black", ms=9)
        peak = alloc[peak_i]
        text = f"peak {peak / gib:.2f} GiB" if peak >= gib else f"peak {peak / 2**20:.1f} MiB"
        ax.annotate(text, (xs[peak_i], peak / gib),
                    xytext=(5, 8), textcoords="offset points")
    lines = [f"{n / 2**20:8.1f} MiB  {tracker.modules.get(sid) or '<no module>'} "
             f"({tracker.categories.get(sid, '?')})" for sid, n in biggest]
    ax.text(0.01, 0.98, "largest tensors live at the peak:\n" + "\n".join(lines), transform=ax.transAxes,
            va="top", ha="left", family="monospace", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#999999"})
    ax.set_xlabel("allocation / free event of the measured step")
    ax.set_ylabel("GiB")
    ax.set_title(title)
    ax.set_ylim(0, max(resv, default=1) / gib * 1.45 or 1)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return snap


def write(snapshot: Mapping[str, Any], dest: Path) -> None:
    """The snapshot pickle (plain dicts, lists, strings and numbers, as PyTorch writes them)."""
    with open(dest, "wb") as f:
        pickle.dump(dict(snapshot), f, protocol=pickle.HIGHEST_PROTOCOL)
