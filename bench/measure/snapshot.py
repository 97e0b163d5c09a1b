"""A predicted step's memory as a PyTorch memory snapshot.

The tracked storage events of a prediction are replayed through the allocator model with its trace
on; the model's segments, blocks and device trace are written in the format of
``torch.cuda.memory._snapshot()``, so that PyTorch's own viewer (pytorch.org/memory_viz,
``torch.cuda._memory_viz``) opens it. Each allocation's frames name the module that made it
(``torch.utils.module_tracker``) and the phase of the step (forward, backward, optimizer), so a
user sees where a configuration's memory goes without a GPU; the tensor's category (activation,
parameter, gradient, ...) is in the second frame. A top-level ``segmem`` entry (which PyTorch's readers
ignore) names the prediction and the first trace time of its measured step, so that the timeline plot
(:mod:`bench.results.timeline`, drawn from the pickle alone, as for a real snapshot) starts there. The
same builder answers the fake CUDA backend's ``torch.cuda.memory._snapshot()`` in the tests.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .allocator import AllocatorSettings, CachingAllocatorModel
from .tracker import UNNAMED, AllocationTracker


def deepest(parents: set[str]) -> str:
    """The innermost module of ``ModuleTracker.parents`` (fully qualified names nest with dots)."""
    return max(parents, key=lambda n: (n.count("."), n))


#: the top-level entry of segmem's own in a snapshot it predicted (PyTorch's readers ignore it): its keys
OWN = "segmem"
LABEL, MEASURED_FROM = "label", "measured_from_us"
#: the category in the frames of a cuDNN workspace
WORKSPACE = "cuDNN workspace"


def _frames(module: str, phase: str, category: str, label: str) -> list[dict[str, Any]]:
    return [{"filename": module if module and module != UNNAMED else "<no module>", "line": 0, "name": phase},
            {"filename": OWN, "line": 0, "name": f"{category}: {label}"}]


def is_prediction(data: Mapping[str, Any]) -> bool:
    """Whether a loaded snapshot is one segmem predicted (its trace is the model's, not a GPU's)."""
    return OWN in data


def frame_category(frames: list[dict[str, Any]]) -> str | None:
    """The tensor category :func:`build` wrote into an allocation's frames (None: not a segmem frame)."""
    if len(frames) > 1 and frames[1].get("filename") == OWN:
        return str(frames[1].get("name", "")).partition(":")[0]
    return None


def build(tracker: AllocationTracker, exclude: set[int] = frozenset(), settings: AllocatorSettings | None = None,
          capacity: int | None = None, label: str = "segmem prediction", start: int = 0,
          before: Callable[[int, CachingAllocatorModel], None] | None = None) -> dict[str, Any]:
    """The snapshot dict of ``tracker``'s events (see the module docstring); ``start``: the tracker's event
    where the measured step begins (each trace entry's ``time_us`` is its tracker event's index). ``before(i,
    model)`` runs before event ``i`` as in :func:`bench.measure.tracker.replay`: cuDNN's workspaces
    (:class:`bench.measure.device.Workspaces`), so that the snapshot holds what the device figures count; what it
    allocates is named by the module and phase of the event before (the convolution's output), category
    :data:`WORKSPACE`."""
    settings = settings or AllocatorSettings()
    trace: list[dict[str, Any]] = []
    model = CachingAllocatorModel(settings, capacity, trace=trace)
    frames: dict[int, list[dict[str, Any]]] = {}
    last = _frames("", "setup", WORKSPACE, label)
    for i, e in enumerate(tracker.events):
        if before is not None:
            n = len(trace)
            before(i, model)
            for entry in trace[n:]:
                entry["frames"] = last
                entry["time_us"] = i
        if e.sid not in exclude:
            n = len(trace)
            # an allocation's frames stay with its block; a free's name the tensor and the phase freeing it
            module = tracker.modules.get(e.sid, "")
            now = _frames(module, e.phase, tracker.categories.get(e.sid, "temporary"), label)
            last = _frames(module, e.phase, WORKSPACE, label)
            if e.nbytes > 0:
                frames[e.sid] = now
                model.malloc(e.sid, e.nbytes)
            elif e.sid in model._handles:
                model.free(e.sid)
            for entry in trace[n:]:
                entry["frames"] = now
                entry["time_us"] = i
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
        OWN: {LABEL: label, MEASURED_FROM: start},
    }


def write(snapshot: Mapping[str, Any], dest: Path) -> None:
    """The snapshot pickle (plain dicts, lists, strings and numbers, as PyTorch writes them)."""
    with open(dest, "wb") as f:
        pickle.dump(dict(snapshot), f, protocol=pickle.HIGHEST_PROTOCOL)
