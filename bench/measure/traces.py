"""Real CUDA allocator traces: read a ``torch.cuda.memory._snapshot()`` pickle safely, turn its device
trace into plain events (or a small event file), and replay them through the allocator model.

A snapshot is plain dicts, lists, strings and numbers, while an arbitrary pickle is code execution:
:func:`load_snapshot` uses an unpickler that loads no classes at all. Why replay: the snapshot's own
events give the real peak allocated and reserved of a run; the same alloc/free sequence through
:class:`bench.measure.allocator.CachingAllocatorModel` gives the model's, so a GPU user can check
the model on their own runs (``bench replay``) and a trace becomes a test fixture (``bench trace2events``).

Event files (``.events.csv``, or ``.events.csv.gz`` gzip-compressed: what ``bench validate`` writes, about 7 times
smaller, so that a run's 160 fixtures stay about 1.3 MB) hold one row per event: ``action,block,size,stream``, where ``block``
numbers the addresses in address order (``block_order: address`` in the header; older files numbered them
in order of appearance), ``live`` rows are the blocks already allocated when the
trace starts (a trace that begins mid-run), and ``#``-lines on top hold the source, commit, licence,
the reserved bytes at the start and the expected figures (``key: value``).
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..options import signed_percent
from .allocator import POWER2_INTERVALS, AllocatorOOM, AllocatorSettings, CachingAllocatorModel, round_size
from .snapshot import OWN, is_prediction

MiB = 1 << 20
TOP_KEYS = {"segments", "device_traces", "allocator_settings", "external_annotations",
            OWN}  # segmem's own: a prediction's label and where its measured step starts (bench.measure.snapshot)
ENTRY_KEYS = {"action", "addr", "size", "stream", "frames", "time_us", "device_free", "compile_context",
              "user_metadata", "device"}
ALLOC, FREE, LIVE = "alloc", "free", "live"
SEG_GROW = {"segment_alloc", "segment_map"}
SEG_SHRINK = {"segment_free", "segment_unmap"}
ACTIONS = {ALLOC, FREE, LIVE, "oom", *SEG_GROW, *SEG_SHRINK}
#: an event file's columns (its first row after the header lines)
COLUMNS = ("action", "block", "size", "stream")
#: trace actions without effect on the figures replayed
SILENT = {"free_requested", "snapshot", "user_defined"}


#: a gzip stream's first two bytes
GZIP_MAGIC = b"\x1f\x8b"
#: what :func:`compress` appends to a snapshot's name
GZ = ".gz"
#: an event file's name ends in one of these (:func:`write_events` compresses the second)
EVENT_SUFFIXES = (".events.csv", ".events.csv" + GZ)


class SnapshotError(ValueError):
    """The file is not a memory snapshot (or asks for code): its message is the one line to show."""


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise SnapshotError(f"the pickle asks for the class {module}.{name}; refused (a memory snapshot holds only "
                            "dicts, lists, strings and numbers, and loading classes could run code)")


def _gunzipped(raw: bytes, path: Path, error: type[ValueError]) -> bytes:
    """``raw`` decompressed where it is a gzip stream (by its first bytes, not the file's name), else as it is."""
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip's own words ("Unknown compression method") say little
        raise error(f"cannot read {path}: a gzip file cut short or corrupt ({exc})") from None


def load_snapshot(path: Path) -> dict:
    """A ``torch.cuda.memory._snapshot()`` pickle, read without loading any class, gzip-compressed or not
    (``bench validate`` keeps its recorded snapshots compressed: :func:`compress`). Unknown keys (a newer
    torch) are warned about and kept; anything that is not a snapshot raises :class:`SnapshotError`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    raw = _gunzipped(raw, path, SnapshotError)
    try:
        data = _NoClasses(io.BytesIO(raw)).load()
    except SnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a snapshot"
        raise SnapshotError(f"{path} is not a pickle file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise SnapshotError(f"{path} is a pickle but not a PyTorch memory snapshot (no 'segments' list; "
                            "make one with torch.cuda.memory._snapshot())")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        warnings.warn(f"{path}: unknown snapshot keys {', '.join(map(str, unknown))} (newer torch?); ignored",
                      stacklevel=2)
    return data


def compress(path: Path) -> Path:
    """``NAME.pickle`` -> ``NAME.pickle.gz``, the original removed: a recorded snapshot is mostly repeated frame
    strings and compresses about 15 times, which is what lets a validation run's snapshots be committed (and travel
    to a lent GPU with the checkout). :func:`load_snapshot` reads either; pytorch.org/memory_viz wants the
    pickle itself (``gunzip -k NAME.pickle.gz``)."""
    path = Path(path)
    dest = path.with_name(path.name + GZ)
    with open(path, "rb") as src, gzip.open(dest, "wb", compresslevel=6) as out:
        out.write(src.read())
    path.unlink()
    return dest


def recorded_name(path: Path) -> str:
    """The snapshot's name as it was recorded: ``NAME.pickle`` for ``NAME.pickle.gz`` too."""
    name = Path(path).name
    return name[: -len(GZ)] if name.endswith(GZ) else name


@dataclass
class TraceEvent:
    action: str  # alloc, free, live, segment_alloc/free/map/unmap, oom
    block: int
    size: int
    stream: int = 0
    #: its entry's index in the snapshot's device trace (for its frames); -1: none (event files, live blocks)
    at: int = field(default=-1, compare=False)


@dataclass
class Trace:
    """The events of one device, plus what was reserved when they start and the final segment count."""

    events: list[TraceEvent]
    initial_reserved: int = 0
    final_segments: int | None = None
    settings: AllocatorSettings = field(default_factory=AllocatorSettings)
    header: dict[str, str] = field(default_factory=dict)
    #: block numbers follow the device addresses' order: a replay places the model's segments where the real ones
    #: were (best fit breaks ties of size by address)
    address_ordered: bool = False

    @property
    def whole_run(self) -> bool:
        """True when the trace starts with nothing allocated or reserved (it covers the whole run)."""
        return self.initial_reserved == 0 and self.starts_empty

    @property
    def starts_empty(self) -> bool:
        """True when nothing is allocated as the trace starts (segments may be cached, all free)."""
        return not any(e.action == LIVE for e in self.events)


def recorded_settings(data: dict) -> AllocatorSettings:
    """The allocator options a snapshot records (``allocator_settings``, torch >= 2.5), else defaults."""
    s = data.get("allocator_settings") or {}
    msplit = s.get("max_split_size")
    gc = s.get("garbage_collection_threshold") or 0.0
    return AllocatorSettings(
        expandable_segments=bool(s.get("expandable_segments", False)) or any(
            seg.get("is_expandable") for seg in data["segments"]),
        max_split_size=msplit if isinstance(msplit, int) and 0 < msplit < (1 << 60) else None,
        garbage_collection_threshold=float(gc) if 0 < float(gc) < 1 else 0.0,
        roundup_power2_divisions=recorded_divisions(s.get("roundup_power2_divisions")),
    )


def recorded_divisions(value: object) -> tuple[int, ...]:
    """A snapshot's ``roundup_power2_divisions``: PyTorch writes one entry per power-of-two interval, keyed by its
    start in MiB ("1", "2", "4", ...; the snapshot conversion in torch/csrc/cuda/Module.cpp), older versions one number;
    () when off."""
    if isinstance(value, dict):
        divs = tuple(int(v) for _, v in sorted(value.items(), key=lambda kv: int(kv[0])))
        return divs if len(divs) == POWER2_INTERVALS and any(divs) else ()
    if isinstance(value, int) and value > 1:
        return (value,) * POWER2_INTERVALS
    return ()


def held_at_snapshot(data: dict, device: int = 0) -> str:
    """What a snapshot's segments held when it was taken (all a snapshot without history can tell), as a
    clause for the message that says so; empty when it has no segment on ``device``."""
    segs = [s for s in data.get("segments", []) if s.get("device", device) == device]
    if not segs:
        return ""
    reserved = sum(int(s.get("total_size", 0)) for s in segs)
    allocated = sum(int(s.get("allocated_size", 0)) for s in segs)
    return (f"; when it was taken, {len(segs)} segment(s) held {reserved / MiB:,.1f} MiB reserved, "
            f"{allocated / MiB:,.1f} MiB allocated")


def snapshot_trace(data: dict, device: int = 0) -> Trace:
    """The device trace of a loaded snapshot as :class:`TraceEvent` s (addresses numbered as blocks).

    Blocks freed in the trace but not allocated in it, and blocks active at the end that were not
    allocated in it, were live when the trace started: they come first as ``live`` events."""
    traces = data.get("device_traces") or []
    if device < 0 or 0 < len(traces) <= device:  # (a negative index would read another device's trace)
        held = "device 0 only" if len(traces) == 1 else f"devices 0 to {len(traces) - 1}"
        raise SnapshotError(f"the snapshot has a device trace for {held}; --device {device} is not one of them")
    if device >= len(traces) or not traces[device]:
        raise SnapshotError(f"the snapshot has no trace for device {device}{held_at_snapshot(data, device)} (record one with "
                            "torch.cuda.memory._record_memory_history() before the run)")
    segs = [s for s in data["segments"] if s.get("device", device) == device]
    addrs = {e.get("addr", 0) for e in traces[device]} | {b.get("address") for s in segs for b in s.get("blocks", [])}
    ids = {a: i for i, a in enumerate(sorted(a for a in addrs if isinstance(a, int)))}

    def block(addr: int) -> int:
        return ids[addr]

    events: list[TraceEvent] = []
    live: dict[int, int] = {}  # addr -> size, allocated in the trace
    before: dict[int, TraceEvent] = {}  # live at the start
    unknown: set[str] = set()
    net_reserved = 0
    for at, e in enumerate(traces[device]):
        unknown |= set(e) - ENTRY_KEYS
        action, addr, size, stream = e.get("action"), e.get("addr", 0), int(e.get("size", 0)), int(e.get("stream", 0))
        if action == "alloc":
            live[addr] = size
            events.append(TraceEvent(ALLOC, block(addr), size, stream, at))
        elif action in ("free_completed", "free"):
            if addr not in live:
                before.setdefault(addr, TraceEvent(LIVE, block(addr), size, stream))
            live.pop(addr, None)
            events.append(TraceEvent(FREE, block(addr), size, stream, at))
        elif action in SEG_GROW or action in SEG_SHRINK:
            net_reserved += size if action in SEG_GROW else -size
            events.append(TraceEvent(action, block(addr), size, stream, at))
        elif action == "oom":
            events.append(TraceEvent("oom", -1, size, stream, at))
        elif action not in SILENT:
            unknown.add(f"action {action}")
    if unknown:
        warnings.warn(f"unknown trace entries {', '.join(sorted(map(str, unknown)))} (newer torch?); ignored",
                      stacklevel=2)
    for seg in segs:
        for b in seg.get("blocks", []):
            addr = b.get("address")
            if b.get("state", "").startswith("active") and addr is not None and addr not in live and addr not in before:
                before[addr] = TraceEvent(LIVE, block(addr), int(b.get("requested_size", b.get("size", 0))),
                                          int(seg.get("stream", 0)))
    final_reserved = sum(int(s.get("total_size", 0)) for s in segs)
    start = sorted(before.values(), key=lambda ev: ev.block)
    return Trace(start + events, max(0, final_reserved - net_reserved), len(segs), recorded_settings(data),
                 address_ordered=True)


# ----- event files --------------------------------------------------------------------------------
def is_event_file(path: Path | str) -> bool:
    """Whether the name is an event file's (:data:`EVENT_SUFFIXES`)."""
    return Path(path).name.endswith(EVENT_SUFFIXES)


def event_name(path: Path | str) -> str:
    """An event file's name without its suffix (``NAME`` of ``NAME.events.csv[.gz]``)."""
    name = Path(path).name
    return next(name.removesuffix(s) for s in EVENT_SUFFIXES[::-1] if name.endswith(s))


def event_files(folder: Path) -> list[Path]:
    """Every event file under ``folder``, at any depth, sorted (the fixtures tests replay)."""
    return sorted(p for p in Path(folder).rglob("*.events.csv*") if is_event_file(p))


def write_events(trace: Trace, path: Path, header: dict[str, Any]) -> None:
    """The trace as a small CSV event file with ``header`` (source, commit, licence, expected figures);
    gzip-compressed where the name ends in ``.gz``, with no time in the gzip header, so that the same trace
    always makes the same bytes (a committed fixture written again is unchanged)."""
    f = io.StringIO(newline="")
    head = {**header, "initial_reserved": trace.initial_reserved, "final_segments": trace.final_segments,
            "alloc_conf": trace.settings.conf(), **({"block_order": "address"} if trace.address_ordered else {})}
    for k, v in head.items():
        f.write(f"# {k}: {v}\n")
    w = csv.writer(f)
    w.writerow(COLUMNS)
    w.writerows([e.action, e.block, e.size, e.stream] for e in trace.events)
    data = f.getvalue().encode()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if Path(path).name.endswith(GZ) else data)


def holds_events(path: Path) -> bool:
    """Whether the file reads as an event file whatever its name (:func:`read_events` succeeds): for the message
    to a user who named one otherwise."""
    try:
        read_events(path)
    except (OSError, ValueError):
        return False
    return True


def _event_text(path: Path) -> str:
    """An event file's text, gunzipped where it is compressed (by its first bytes, not its name)."""
    raw = _gunzipped(Path(path).read_bytes(), path, ValueError)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not an event file: it is not text (make one with bench trace2events)") from None


def read_events(path: Path) -> Trace:
    """An event file written by :func:`write_events`; ValueError with the line at fault."""
    header: dict[str, str] = {}
    rows: list[tuple[int, str]] = []  # (line number, text)
    for n, line in enumerate(_event_text(path).splitlines(), start=1):
        if line.startswith("#"):
            k, _, v = line[1:].partition(":")
            header[k.strip()] = v.strip()
        elif line.strip():
            rows.append((n, line))
    if not rows or rows[0][1].replace(" ", "") != ",".join(COLUMNS):
        raise ValueError(f"{path} is not an event file: its first row after the '#' header lines must be "
                         f"{','.join(COLUMNS)!r} (make one with bench trace2events)")
    events = []
    # fields by position (the columns row is COLUMNS: checked above); a DictReader took three times as long
    for (n, line), r in zip(rows[1:], csv.reader(text for _, text in rows[1:]), strict=True):
        if not r or r[0] not in ACTIONS:
            raise ValueError(f"{path}: line {n}: unknown action {r[0] if r else None!r}")
        try:
            action, block, size, stream = r
            events.append(TraceEvent(action, int(block), int(size), int(stream)))
        except (TypeError, ValueError):
            raise ValueError(f"{path}: line {n}: block, size and stream must be whole numbers; got {line!r}") from None
    segs = header.get("final_segments")
    return Trace(events, int(header.get("initial_reserved", 0)), int(segs) if segs not in (None, "None") else None,
                 AllocatorSettings.parse(header.get("alloc_conf", "")), header, header.get("block_order") == "address")


# ----- replay -------------------------------------------------------------------------------------
@dataclass
class Peaks:
    """Peak allocated and reserved bytes, fragmentation at the reserved peak, segments at the end."""

    allocated: int
    reserved: int
    #: 1 - allocated / reserved at the reserved peak, allocated at its highest while reserved stays there (a
    #: real trace records a new segment before the block it was made for)
    fragmentation: float
    segments: int | None
    ooms: int = 0  # allocations the model could not make at the device's capacity (its peaks stop short there)


def levels(trace: Trace) -> Iterator[tuple[TraceEvent, int, int]]:
    """Each event with the allocated and reserved bytes the trace itself records after it: reserved from
    its segment events, allocated as its blocks' bytes (requests rounded to 512 B; the real figure also
    counts unsplit remainders). ``live`` events (blocks allocated before the trace starts) come first."""
    alloc = sum(round_size(e.size) for e in trace.events if e.action == LIVE)
    reserved = trace.initial_reserved
    for e in trace.events:
        if e.action == ALLOC:
            alloc += round_size(e.size)
        elif e.action == FREE:
            alloc -= round_size(e.size)
        elif e.action in SEG_GROW:
            reserved += e.size
        elif e.action in SEG_SHRINK:
            reserved -= e.size
        yield e, alloc, reserved


def real_peaks(trace: Trace) -> Peaks:
    """What the trace itself records (:func:`levels`): peak allocated and reserved, fragmentation there."""
    return _peaks(levels(trace), trace.final_segments)


def model_levels(trace: Trace, settings: AllocatorSettings | None = None, capacity: int | None = None,
                 follow_releases: bool = True) -> Iterator[tuple[TraceEvent, int, int]]:
    """Each event with the allocated and reserved bytes of the allocator model replaying the trace's own
    alloc/free sequence. With ``follow_releases`` the model empties its cache where the real allocator
    released segments (``empty_cache()`` or a free-and-retry the model cannot see without the device's
    ``capacity``)."""
    model = CachingAllocatorModel(settings or trace.settings, capacity)
    yield from _replay(trace, model, follow_releases)


def _replay(trace: Trace, model: CachingAllocatorModel, follow_releases: bool,
            ooms: list[TraceEvent] | None = None) -> Iterator[tuple[TraceEvent, int, int]]:
    releasing = False
    made: list[TraceEvent] = []  # the trace's segments made for the allocation that comes next

    def place(size: int) -> int | None:
        for i, m in enumerate(made):
            if m.size == size:
                return made.pop(i).block
        return None

    if trace.address_ordered:
        model.placer = place
    for e in trace.events:
        if e.action == "segment_alloc":
            made.append(e)
        if e.action in (ALLOC, LIVE):
            if e.block in model._handles:  # a free the trace missed
                model.free(e.block)
            try:
                model.malloc(e.block, e.size, e.stream)
            except AllocatorOOM:
                if ooms is not None:
                    ooms.append(e)
                continue
            finally:
                made.clear()
        elif e.action == FREE and e.block in model._handles:
            model.free(e.block)
        shrink = e.action in SEG_SHRINK
        if shrink and follow_releases and not releasing:
            model.empty_cache()
        releasing = shrink
        yield e, model.allocated, model.reserved


def model_peaks(trace: Trace, settings: AllocatorSettings | None = None, capacity: int | None = None,
                follow_releases: bool = True) -> Peaks:
    """The allocator model's peaks on the trace's own alloc/free sequence (:func:`model_levels`)."""
    model = CachingAllocatorModel(settings or trace.settings, capacity)
    ooms: list[TraceEvent] = []
    peaks = _peaks(_replay(trace, model, follow_releases, ooms))
    return Peaks(peaks.allocated, peaks.reserved, peaks.fragmentation, model.segments, len(ooms))


def _peaks(levels: Iterable[tuple[TraceEvent, int, int]], segments: int | None = None) -> Peaks:
    peak_a = peak_r = 0
    frag = 0.0
    for _, alloc, reserved in levels:
        peak_a = max(peak_a, alloc)
        if reserved > peak_r:
            peak_r, frag = reserved, 1 - alloc / reserved
        elif reserved == peak_r and peak_r:
            frag = min(frag, 1 - alloc / reserved)
    return Peaks(peak_a, peak_r, frag, segments)


def baseline_peak(trace: Trace) -> int:
    """The naive estimate to beat: peak allocated rounded up to 2 MiB."""
    a = real_peaks(trace).allocated
    return 2 * MiB * ((a + 2 * MiB - 1) // (2 * MiB))


def compare_rows(trace: Trace, capacity: int | None = None) -> list[dict[str, Any]]:
    """Real, model (recorded settings), model with expandable segments, and the 2 MiB baseline."""
    real = real_peaks(trace)
    rows = [("real (from the trace)", real), ("model", model_peaks(trace, capacity=capacity))]
    if not trace.settings.expandable_segments:
        exp = AllocatorSettings(True, trace.settings.max_split_size, trace.settings.garbage_collection_threshold)
        rows.append(("model, expandable_segments:True", model_peaks(trace, exp, capacity)))
    out = [{"source": name, "peak_allocated": p.allocated, "peak_reserved": p.reserved,
            "fragmentation": p.fragmentation, "segments": p.segments, "ooms": p.ooms} for name, p in rows]
    out.append({"source": "peak allocated rounded up to 2 MiB", "peak_allocated": real.allocated,
                "peak_reserved": baseline_peak(trace), "fragmentation": None, "segments": None, "ooms": 0})
    return out


def convert(snapshot: Path, dest: Path, header: dict[str, Any], device: int = 0) -> Trace:
    """Snapshot pickle -> event file whose header also records the real and model figures. A snapshot segmem
    predicted is refused: a fixture is a real GPU's trace, what the model is tested against."""
    data = load_snapshot(snapshot)
    if is_prediction(data):
        raise SnapshotError(f"{snapshot} is segmem's prediction, not a GPU's trace: a fixture holds real traces "
                            "(bench replay reads a prediction's)")
    trace = snapshot_trace(data, device)
    real = real_peaks(trace)
    write_events(trace, dest, {**header, "real_peak_reserved": real.reserved, "real_peak_allocated": real.allocated,
                               "whole_run": trace.whole_run})
    return trace


def replayed(path: Path) -> tuple[Trace, Peaks, Peaks]:
    """An event file read, with its real peaks and the allocator model's."""
    trace = read_events(path)
    return trace, real_peaks(trace), model_peaks(trace)


def fixture_table(folder: Path, replay: Callable[[Path], tuple[Trace, Peaks, Peaks]] = replayed) -> str:
    """The Markdown table of every event file under ``folder`` replayed (the fixtures' README holds it, and
    ``tests/measure/test_fixtures.py`` keeps the two equal): real and model peak reserved, the model's error,
    the "peak allocated rounded up to 2 MiB" baseline's error, and the segment counts. ``replay``: as
    :func:`replayed` (the tests pass theirs, which replays each file once for all of them)."""
    lines = ["| fixture | real peak reserved | model | error | 2 MiB baseline's error | segments real / model |",
             "|---|---|---|---|---|---|"]
    for path in event_files(folder):
        trace, real, model = replay(path)
        name = (path.parent / event_name(path)).relative_to(folder).as_posix()
        baseline = baseline_peak(trace) / real.reserved - 1
        lines.append(f"| `{name}` | {real.reserved / MiB:,.1f} MiB | {model.reserved / MiB:,.1f} MiB | "
                     f"{signed_percent(model.reserved / real.reserved - 1)} | {signed_percent(baseline, 1)} | "
                     f"{trace.final_segments} / {model.segments} |")
    return "\n".join(lines)

