"""A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp).

Replaying a sequence of storage allocations and frees through it gives what
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` would report. Modelled, with the
names of the C++ functions they follow. Checked against pytorch/pytorch ``c10/cuda/CUDACachingAllocator.cpp``
at commit eb42ad6eca0ce61e7c581212b4bf32f991425571 (the stored copy read for this check),
``c10/core/AllocatorConfig.cpp`` at 065861fba7598880aa3216822742a1172d0a197c and the option parser of the
installed torch 2.13.0 (git cf30153c4c131c8164ee7798e5022d810682e2cb, ``torch._C._accelerator_setAllocatorSettings``,
which runs on a CPU build); the tests in ``tests/measure/test_allocator.py`` name the function of each rule.

- request sizes rounded up to multiples of 512 bytes (``round_size``), minimum 512; with
  ``roundup_power2_divisions`` a request over 512 x divisions is rounded up to the next of ``divisions``
  equal steps between two powers of two (``roundup_power2_next_division``);
- two pools per stream: small (requests <= 1 MiB) served from 2 MiB segments, large served from
  segments of 20 MiB for requests under 10 MiB, else the request rounded up to a multiple of 2 MiB
  (``get_allocation_size``);
- best fit (``get_free_block``): the smallest cached free block of the pool and stream that is large
  enough (ties: lowest address, where a segment lies being cudaMalloc's choice: a replayed trace's own
  addresses, else a guess, ``new_segments_below``); splitting (``should_split``) when the remainder is >= 512 B (small
  pool, and every pool with expandable segments) or > 1 MiB (large pool); freeing merges a block with
  free neighbours of its segment;
- ``max_split_size_mb``: blocks at least that large are never split, a request under it is not
  served from one, a request over it only from a block less than ``max_non_split_rounding_mb``
  (default 20 MiB) larger; on a failed ``cudaMalloc`` oversize cached blocks are released first
  (``release_available_cached_blocks``);
- a device ``capacity``: a ``cudaMalloc`` that would go past it fails; the allocator then frees
  every unused cached segment and tries once more (``release_cached_blocks``: the free-and-retry
  users meet near a full GPU), else raises :class:`AllocatorOOM`;
- ``garbage_collection_threshold`` (with a capacity, as PyTorch applies it only with a memory limit):
  before a ``cudaMalloc``, while reserved memory is over threshold x capacity, whole unused large
  segments are freed, the oldest (unused for the most ``get_free_block`` calls) first;
- ``empty_cache()``: every unused cached segment freed (and, with expandable segments, every whole
  free page unmapped);
- ``expandable_segments:True``: one segment per pool and stream that grows by mapping pages
  (2 MiB small pool, 20 MiB large pool) at its end (``try_allocate_expandable_block``,
  ``map_block``); best fit counts a free block before the unmapped tail as able to grow.

Not modelled: ``large_segment_size_mb`` (torch 2.13 accepts it, > 10; refused here), CUDA graph pools, events
of cross-stream use, and allocations that are not tensors (cuDNN/cuBLAS workspaces, the CUDA context).
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # 1 MiB
SMALL_BUFFER = 2 << 20  # 2 MiB
MIN_LARGE_ALLOC = 10 << 20  # 10 MiB
LARGE_BUFFER = 20 << 20  # 20 MiB
ROUND_LARGE = 2 << 20  # 2 MiB
MiB = 1 << 20
#: the virtual size of an expandable segment (PyTorch reserves the device's whole memory)
EXPANDABLE_SPAN = 1 << 38
#: device addresses the model gives its segments (for snapshots): a base, one span apart
ADDRESS_BASE = 0x7F00_0000_0000
#: the places (:attr:`Block.place`) of segments made above all others (``new_segments_below=False``)
UNPLACED = 1 << 48


#: ``roundup_power2_divisions`` has one entry per power-of-two interval from 1 MiB to 64 GiB (AllocatorConfig.cpp)
POWER2_INTERVALS = 16


def power2_divisions(divisions: tuple[int, ...], nbytes: int) -> int:
    """``AllocatorConfig::roundup_power2_divisions(size)``: the divisions of the interval
    [2^k MiB, 2^(k+1) MiB) holding ``nbytes`` (sizes under 1 MiB use the first, over 32 GiB the last)."""
    if not divisions:
        return 0
    index = min(max(nbytes.bit_length() - 1 - 20, 0), POWER2_INTERVALS - 1)
    return divisions[index]


def roundup_power2_next_division(size: int, divisions: int) -> int:
    """``roundup_power2_next_division``: ``size`` up to the next of ``divisions`` equal steps between the
    powers of two around it (1200 with 4 divisions: 1280)."""
    if size <= 4 or divisions <= 1 or size & (size - 1) == 0:
        return size
    floor = 1 << (size.bit_length() - 1)
    step = floor >> (divisions.bit_length() - 1)
    if step == 0:
        return floor << 1
    rounded = size & ~(step - 1)
    return size if rounded == size else rounded + step


def round_size(nbytes: int, divisions: tuple[int, ...] = ()) -> int:
    """Requested bytes to block bytes (``round_size``): multiples of 512, at least 512; with
    ``roundup_power2_divisions`` set for the size's interval, the next power-of-two division instead."""
    if nbytes < MIN_BLOCK:
        return MIN_BLOCK
    div = power2_divisions(divisions, nbytes)
    if div > 1 and nbytes > MIN_BLOCK * div:
        return roundup_power2_next_division(nbytes, div)
    return MIN_BLOCK * ((nbytes + MIN_BLOCK - 1) // MIN_BLOCK)


def parse_power2_divisions(value: str) -> tuple[int, ...]:
    """``roundup_power2_divisions`` as ``AllocatorConfig::parseRoundUpPower2Divisions`` reads it: one
    power of two for every size, or ``[256:1,512:2,>:8]`` (interval start in MiB: divisions; the
    first entry also covers every smaller interval, ``>`` every interval from the last one named on)."""
    def pow2(text: str, zero_ok: bool) -> int:
        n = int(text)
        if n < 0 or (n == 0 and not zero_ok) or (n and n & (n - 1)):
            raise ValueError
        return n

    out = [0] * POWER2_INTERVALS
    if not value.startswith("["):
        return tuple([pow2(value, False)] * POWER2_INTERVALS)
    if not value.endswith("]"):
        raise ValueError
    first, last = True, 0
    for item in filter(None, (t.strip() for t in value[1:-1].split(","))):
        start, sep, div = item.partition(":")
        if not sep:
            raise ValueError
        d = pow2(div.strip(), True)
        if start.strip() == ">":
            out[last:] = [d] * (POWER2_INTERVALS - last)
            continue
        index = min(pow2(start.strip(), False).bit_length() - 1, POWER2_INTERVALS - 1)
        if first:
            out[:index] = [d] * index
            first = False
        out[index] = d
        last = index
    return tuple(out)


def segment_size(size: int) -> int:
    """Bytes cudaMalloc'ed for a new segment serving a (rounded) request of ``size``."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * ((size + ROUND_LARGE - 1) // ROUND_LARGE)


class AllocatorOOM(MemoryError):
    """The model's ``torch.cuda.OutOfMemoryError``: no cached block and no room for a new segment. ``needed``:
    the bytes reserved would have had to reach (reserved after freeing the cache, plus the request), more
    than the capacity."""

    def __init__(self, message: str, needed: int = 0) -> None:
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class AllocatorSettings:
    """The ``PYTORCH_CUDA_ALLOC_CONF`` options the model follows (defaults: PyTorch's)."""

    expandable_segments: bool = False
    max_split_size: int | None = None  # bytes; None: unlimited
    garbage_collection_threshold: float = 0.0
    #: ``max_non_split_rounding_mb`` in bytes: how much larger an oversize block may be than the request it serves
    max_non_split_rounding: int = LARGE_BUFFER
    #: ``roundup_power2_divisions`` per power-of-two interval from 1 MiB (empty: off)
    roundup_power2_divisions: tuple[int, ...] = ()

    @classmethod
    def from_env(cls) -> AllocatorSettings:
        """``PYTORCH_CUDA_ALLOC_CONF`` as a real CUDA run of this process would read it; options the
        model does not follow are ignored with a warning."""
        return cls.parse(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), strict=False)

    @classmethod
    def parse(cls, conf: str | None, strict: bool = True) -> AllocatorSettings:
        """``"expandable_segments:True,max_split_size_mb:128"`` (PyTorch's syntax); ValueError on a bad one.
        Options the model does not follow (e.g. ``large_segment_size_mb``) are refused (``strict``)
        or ignored with a warning. Values are checked as torch 2.13's parser checks them (sizes in MiB >= 20)."""
        out = cls()
        for item in _split_conf(conf or ""):
            key, sep, value = item.partition(":")
            key, value = key.strip(), value.strip()
            if not sep:
                raise ValueError(f"allocator option {item!r} is not key:value")
            try:
                if key == "expandable_segments":
                    if value not in ("True", "False"):
                        raise ValueError
                    out = replace(out, expandable_segments=value == "True")
                elif key in ("max_split_size_mb", "max_non_split_rounding_mb"):
                    mb = int(value)
                    if mb * MiB < LARGE_BUFFER:
                        raise ValueError
                    field_name = "max_split_size" if key == "max_split_size_mb" else "max_non_split_rounding"
                    out = replace(out, **{field_name: mb * MiB})
                elif key == "roundup_power2_divisions":
                    out = replace(out, roundup_power2_divisions=parse_power2_divisions(value))
                elif key == "garbage_collection_threshold":
                    t = float(value)
                    if not 0.0 < t < 1.0:
                        raise ValueError
                    out = replace(out, garbage_collection_threshold=t)
                else:
                    raise KeyError(key)
            except KeyError:
                if not strict:
                    warnings.warn(f"allocator option {key!r} is not modelled; ignored", stacklevel=2)
                    continue
                raise ValueError(f"allocator option {key!r} is not modelled (known: {', '.join(MODELLED_OPTIONS)})") from None
            except ValueError:
                raise ValueError(f"bad value for allocator option {key}: {value!r} (expandable_segments: True/False; "
                                 "max_split_size_mb, max_non_split_rounding_mb: an integer >= 20; "
                                 "garbage_collection_threshold: in (0, 1); roundup_power2_divisions: a power of two "
                                 "or [MiB:divisions,...,>:divisions])") from None
        return out

    def conf(self) -> str:
        """Back to ``PYTORCH_CUDA_ALLOC_CONF`` syntax ('' for the defaults)."""
        parts = []
        if self.expandable_segments:
            parts.append("expandable_segments:True")
        if self.max_split_size is not None:
            parts.append(f"max_split_size_mb:{self.max_split_size // MiB}")
        if self.garbage_collection_threshold:
            parts.append(f"garbage_collection_threshold:{self.garbage_collection_threshold:g}")
        if self.max_non_split_rounding != LARGE_BUFFER:
            parts.append(f"max_non_split_rounding_mb:{self.max_non_split_rounding // MiB}")
        if self.roundup_power2_divisions:
            d = self.roundup_power2_divisions
            parts.append(f"roundup_power2_divisions:{d[0]}" if len(set(d)) == 1 else
                         "roundup_power2_divisions:[" + ",".join(f"{1 << i}:{v}" for i, v in enumerate(d)) + "]")
        return ",".join(parts)


#: the ``PYTORCH_CUDA_ALLOC_CONF`` options the model follows (:meth:`AllocatorSettings.parse`)
MODELLED_OPTIONS = ("expandable_segments", "max_split_size_mb", "max_non_split_rounding_mb", "garbage_collection_threshold",
                    "roundup_power2_divisions")


def near_miss(conf: str) -> tuple[str, str] | None:
    """(option, the modelled option it is a typo of) for the first option of ``conf`` that is not one but nearly
    is (``expandable_segment``): PyTorch refuses an option it does not know, so such a run fails on a GPU."""
    import difflib

    for item in _split_conf(conf):
        key = item.partition(":")[0].strip()
        close = difflib.get_close_matches(key, MODELLED_OPTIONS, n=1, cutoff=0.8)
        if key not in MODELLED_OPTIONS and close:
            return key, close[0]
    return None


def _split_conf(conf: str) -> list[str]:
    """``key:value`` items of a ``PYTORCH_CUDA_ALLOC_CONF`` string; commas inside ``[...]`` stay in their item."""
    items, depth, cur = [], 0, ""
    for ch in conf:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


@dataclass(eq=False)
class Block:
    segment: int
    offset: int
    size: int
    free: bool = True
    prev: Block | None = None
    next: Block | None = None
    mapped: bool = True
    gc_base: int = 0
    pooled: bool = False  # in its pool's free list
    #: its segment's place in device-address order (best fit breaks ties of size by address): where
    #: :attr:`CachingAllocatorModel.placer` says cudaMalloc put it, else by ``new_segments_below``
    place: int = 0

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.place, self.offset)

    def whole(self) -> bool:
        return self.prev is None and self.next is None


@dataclass
class Segment:
    small: bool
    stream: int
    expandable: bool
    reserved: int  # bytes backed by device memory (mapped pages of an expandable segment)
    head: Block


PoolKey = tuple[bool, int]  # (small, stream)


@dataclass
class CachingAllocatorModel:
    """Replay ``malloc(handle, nbytes, stream)`` / ``free(handle)``; read allocated / reserved stats.

    ``capacity`` (bytes, None: unlimited) is the device memory the allocator may reserve."""

    settings: AllocatorSettings = field(default_factory=AllocatorSettings)
    capacity: int | None = None
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    segments_created: int = 0
    num_alloc_retries: int = 0
    num_ooms: int = 0
    _segments: dict[int, Segment] = field(default_factory=dict)
    _pools: dict[PoolKey, list[tuple[tuple[int, int, int], Block]]] = field(default_factory=dict)
    _calls: dict[PoolKey, int] = field(default_factory=dict)  # get_free_block calls per pool (GC ages)
    _handles: dict[int, tuple[Block, PoolKey]] = field(default_factory=dict)
    #: when a list: PyTorch's device-trace entries (``action, addr, size, stream``) are appended to it
    trace: list[dict] | None = None
    requested: dict[int, int] = field(default_factory=dict)  # handle -> requested bytes (for snapshots)
    _refused: int = 0  # the last reservation the capacity refused, as the reserved total it would have made
    #: where ``cudaMalloc`` puts a new segment of the given bytes, as a place in device-address order, or None
    #: where unknown (then ``new_segments_below`` decides). A prediction has no addresses; replaying a real trace
    #: (:func:`bench.measure.traces.model_levels`) gives the trace's own, as the real allocator breaks best fit's
    #: ties between blocks of equal size by their address
    placer: Callable[[int], int | None] | None = None
    #: where cudaMalloc puts a segment no placer places: below every segment made before it (True), or above.
    #: The driver decides. On the H200 of ``reports/validation/`` (driver of CUDA 13.0) segments made later mostly got
    #: lower addresses: its 62 recorded traces replay with peak reserved within 1% for 59 of them so, for 53 in the
    #: order made (``tests/measure/test_fixtures.py``; both rules were read off two of them). The public DeComFL
    #: fixture (another GPU and driver) got ascending addresses, and its peak does not depend on the rule.
    new_segments_below: bool = True

    def address(self, block: Block) -> int:
        return ADDRESS_BASE + block.segment * EXPANDABLE_SPAN + block.offset

    def _record(self, action: str, addr: int, size: int, stream: int) -> None:
        if self.trace is not None:
            self.trace.append({"action": action, "addr": addr, "size": size, "stream": stream})

    @property
    def segments(self) -> int:
        """Segments currently reserved."""
        return len(self._segments)

    def largest_free_block(self) -> int:
        """The largest cached free block of any pool (``CUDACachingAllocator::cacheInfo``'s ``largest``, which
        cuDNN's workspace search reads)."""
        return max((pool[-1][0][0] for pool in self._pools.values() if pool), default=0)

    @staticmethod
    def is_small(size: int) -> bool:
        return size <= SMALL_SIZE

    # ----- pools ----------------------------------------------------------------------------------
    def _pool(self, pk: PoolKey) -> list[tuple[tuple[int, int, int], Block]]:
        return self._pools.setdefault(pk, [])

    def _insert(self, pk: PoolKey, block: Block) -> None:
        block.gc_base = self._calls.get(pk, 0)
        block.pooled = True
        bisect.insort(self._pool(pk), (block.key(), block), key=lambda kv: kv[0])

    def _remove(self, pk: PoolKey, block: Block) -> None:
        pool = self._pool(pk)
        i = bisect.bisect_left(pool, block.key(), key=lambda kv: kv[0])
        assert pool[i][1] is block
        pool.pop(i)
        block.pooled = False

    def _expandable_size(self, b: Block) -> int:
        nxt = b.next
        return b.size + (nxt.size if nxt is not None and not nxt.mapped else 0)

    def _get_free_block(self, pk: PoolKey, size: int) -> Block | None:
        self._calls[pk] = self._calls.get(pk, 0) + 1
        pool = self._pool(pk)
        i = bisect.bisect_left(pool, (size,), key=lambda kv: kv[0])
        if i >= len(pool):
            return None
        if self.settings.expandable_segments:
            while (self._segments[pool[i][1].segment].expandable and i + 1 < len(pool)
                   and self._expandable_size(pool[i + 1][1]) < self._expandable_size(pool[i][1])):
                i += 1
        msplit = self.settings.max_split_size
        if msplit is not None:
            bsize = pool[i][1].size
            if (size < msplit and bsize >= msplit) or (size >= msplit and bsize >= size + self.settings.max_non_split_rounding):
                return None
        block = pool.pop(i)[1]
        block.pooled = False
        return block

    # ----- reserving and releasing device memory --------------------------------------------------
    def _fits(self, nbytes: int) -> bool:
        if self.capacity is None or self.reserved + nbytes <= self.capacity:
            return True
        self._refused = self.reserved + nbytes  # what reserved would have had to reach (AllocatorOOM.needed)
        return False

    def _reserve(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _alloc_block(self, pk: PoolKey, size: int) -> Block | None:
        if self.settings.expandable_segments:
            return self._alloc_expandable(pk, size)
        seg = segment_size(size)
        if not self._fits(seg):
            return None
        sid = self.segments_created
        place = self.placer(seg) if self.placer is not None else None
        if place is None or any(s.head.place == place for s in self._segments.values()):
            # (a place still taken: the model made other segments than the trace's)
            place = -1 - sid if self.new_segments_below else UNPLACED + sid
        block = Block(sid, 0, seg, place=place)
        self._segments[self.segments_created] = Segment(pk[0], pk[1], False, seg, block)
        self.segments_created += 1
        self._reserve(seg)
        self._record("segment_alloc", self.address(block), seg, pk[1])
        return block

    def _release_block(self, pk: PoolKey, block: Block) -> None:
        """cudaFree of a whole unused (non-expandable) segment."""
        self._remove(pk, block)
        seg = self._segments.pop(block.segment)
        self.reserved -= seg.reserved
        self._record("segment_free", self.address(block), seg.reserved, pk[1])

    def _release_available(self, pk: PoolKey, size: int) -> bool:
        """``release_available_cached_blocks``: with max_split_size, free oversize cached segments."""
        msplit = self.settings.max_split_size
        if msplit is None:
            return False
        want = max(size, msplit)
        pool = self._pool(pk)
        i = bisect.bisect_left(pool, (want,), key=lambda kv: kv[0])
        if i < len(pool) and pool[i][1].whole() and not self._segments[pool[i][1].segment].expandable:
            self._release_block(pk, pool[i][1])
            return True
        released = 0
        for _, b in sorted(pool, key=lambda kv: kv[0], reverse=True):
            if released >= want or b.size < msplit:
                break
            if b.whole() and not self._segments[b.segment].expandable:
                self._release_block(pk, b)
                released += b.size
        return released >= want

    def _garbage_collect(self) -> None:
        """``garbage_collect_cached_blocks``: free the oldest whole large segments until under threshold."""
        limit = int(self.settings.garbage_collection_threshold * self.capacity)
        if self.reserved <= limit:
            return
        target, reclaimed = self.reserved - limit, 0
        cands = [(pk, b) for pk in self._pools if not pk[0] for _, b in self._pools[pk]
                 if b.whole() and not self._segments[b.segment].expandable]
        ages = {id(b): self._calls.get(pk, 0) - b.gc_base for pk, b in cands}
        while reclaimed < target and cands:
            threshold = sum(ages[id(b)] for _, b in cands) / len(cands)
            freed = [(pk, b) for pk, b in cands if ages[id(b)] >= threshold]
            for pk, b in freed:
                self._release_block(pk, b)
                reclaimed += b.size
            cands = [c for c in cands if c not in freed]

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()`` (``release_cached_blocks``)."""
        for pk in list(self._pools):
            for _, b in list(self._pools[pk]):
                if self._segments[b.segment].expandable:
                    self._unmap(pk, b)
                elif b.whole():
                    self._release_block(pk, b)
        for sid in [s for s, seg in self._segments.items() if seg.expandable and seg.reserved == 0]:
            del self._segments[sid]

    # ----- expandable segments --------------------------------------------------------------------
    def _page(self, pk: PoolKey) -> int:
        return SMALL_BUFFER if pk[0] else LARGE_BUFFER

    def _expandable_segment(self, pk: PoolKey) -> Segment:
        for seg in self._segments.values():
            if seg.expandable and (seg.small, seg.stream) == pk:
                return seg
        sid = self.segments_created
        self.segments_created += 1
        seg = Segment(pk[0], pk[1], True, 0, Block(sid, 0, EXPANDABLE_SPAN, mapped=False, place=sid))
        self._segments[sid] = seg
        return seg

    def _merge(self, pk: PoolKey, block: Block, nb: Block | None) -> None:
        """Fold free neighbour ``nb`` (same mapped state) into ``block``."""
        if nb is None or not nb.free or nb.mapped != block.mapped:
            return
        if nb.pooled:
            self._remove(pk, nb)
        if nb is block.prev:
            block.offset, block.prev = nb.offset, nb.prev
            if nb.prev is not None:
                nb.prev.next = block
            else:
                self._segments[block.segment].head = block
        else:
            block.next = nb.next
            if nb.next is not None:
                nb.next.prev = block
        block.size += nb.size

    def _split(self, block: Block, size: int, mapped: bool) -> Block:
        """Cut ``block`` at ``size``; the rest (a new free block with ``mapped``) follows it."""
        rest = Block(block.segment, block.offset + size, block.size - size, True, block, block.next, mapped,
                     place=block.place)
        if block.next is not None:
            block.next.prev = rest
        block.next, block.size = rest, size
        return rest

    def _map(self, pk: PoolKey, block: Block, nbytes: int) -> Block | None:
        """``map_block``: back the first ``nbytes`` (whole pages) of unmapped ``block``; merge with free neighbours."""
        page = self._page(pk)
        size = min(block.size, page * ((nbytes + page - 1) // page))
        if not self._fits(size):
            return None
        if size < block.size:
            self._split(block, size, mapped=False)
        block.mapped = True
        self._segments[block.segment].reserved += size
        self._reserve(size)
        self._record("segment_map", self.address(block), size, pk[1])
        self._merge(pk, block, block.prev)
        self._merge(pk, block, block.next)
        return block

    def _unmap(self, pk: PoolKey, block: Block) -> None:
        """``unmap_block``: give back the whole pages inside free mapped ``block``."""
        page = self._page(pk)
        begin = page * ((block.offset + page - 1) // page)
        end = page * ((block.offset + block.size) // page)
        if end <= begin:
            return
        self._remove(pk, block)
        mid = block
        if begin > block.offset:
            mid = self._split(block, begin - block.offset, mapped=True)
            self._insert(pk, block)
        if end < mid.offset + mid.size:
            tail = self._split(mid, end - mid.offset, mapped=True)
            self._insert(pk, tail)
        mid.mapped = False
        self._segments[mid.segment].reserved -= mid.size
        self.reserved -= mid.size
        self._record("segment_unmap", self.address(mid), mid.size, pk[1])
        self._merge(pk, mid, mid.prev)
        self._merge(pk, mid, mid.next)

    def _alloc_expandable(self, pk: PoolKey, size: int) -> Block | None:
        """``try_allocate_expandable_block``: map pages after the last free block until ``size`` fits."""
        seg = self._expandable_segment(pk)
        c = seg.head
        while c is not None:  # first unmapped block with enough free address space from it (or its free prev)
            if not c.mapped:
                start = c.prev if c.prev is not None and c.prev.free else c
                room, b = 0, start
                while b is not None and b.free and room < size:
                    room, b = room + b.size, b.next
                if room >= size:
                    break
            c = c.next
        assert c is not None, "an expandable segment always ends in unmapped space"
        cand = start
        while not cand.mapped or cand.size < size:
            target = cand if not cand.mapped else cand.next
            got = self._map(pk, target, size - (cand.size if cand.mapped else 0))
            if got is None:
                if cand.mapped and not cand.pooled:
                    self._insert(pk, cand)
                return None
            cand = got
        if cand.pooled:
            self._remove(pk, cand)
        return cand

    # ----- the allocator's API --------------------------------------------------------------------
    def malloc(self, handle: int, nbytes: int, stream: int = 0) -> None:
        size = round_size(nbytes, self.settings.roundup_power2_divisions)
        small = self.is_small(size)
        pk = (small, stream)
        block = self._get_free_block(pk, size)
        if block is None:
            if self.capacity is not None and self.settings.garbage_collection_threshold > 0:
                self._garbage_collect()
            block = self._alloc_block(pk, size)
            if block is None and self._release_available(pk, size):
                block = self._alloc_block(pk, size)
            if block is None:
                self.num_alloc_retries += 1
                self.empty_cache()
                block = self._alloc_block(pk, size)
            if block is None:
                self.num_ooms += 1
                self._record("oom", 0, size, stream)
                raise AllocatorOOM(f"out of memory: tried to allocate {size / MiB:.2f} MiB with {self.reserved / MiB:.2f} "
                                   f"MiB reserved of {(self.capacity or 0) / MiB:.2f} MiB", self._refused)
        remaining = block.size - size
        msplit = self.settings.max_split_size
        if small or self.settings.expandable_segments:  # should_split
            split = remaining >= MIN_BLOCK
        else:
            split = remaining > SMALL_SIZE and (msplit is None or size < msplit)
        if split:
            self._insert(pk, self._split(block, size, mapped=True))
        block.free = False
        self._handles[handle] = (block, pk)
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        if self.trace is not None:
            self.requested[handle] = nbytes
            self._record("alloc", self.address(block), nbytes, stream)

    def free(self, handle: int) -> None:
        block, pk = self._handles.pop(handle)
        if self.trace is not None:
            n = self.requested.pop(handle, block.size)
            self._record("free_requested", self.address(block), n, pk[1])
            self._record("free_completed", self.address(block), n, pk[1])
        self.allocated -= block.size
        block.free = True
        self._merge(pk, block, block.prev)
        self._merge(pk, block, block.next)
        self._insert(pk, block)

    def reset_peak(self) -> None:
        """As ``torch.cuda.reset_peak_memory_stats``: peaks restart from the current values."""
        self.peak_allocated = self.allocated
        self.peak_reserved = self.reserved

    def segment_blocks(self) -> list[tuple[Segment, list[Block]]]:
        """Each current segment with its blocks in address order (a snapshot's ``segments``)."""
        out = []
        for seg in self._segments.values():
            blocks, b = [], seg.head
            while b is not None:
                blocks.append(b)
                b = b.next
            out.append((seg, blocks))
        return out

    def handle_of(self) -> dict[int, int]:
        """id(block) -> handle of every allocated block."""
        return {id(b): h for h, (b, _) in self._handles.items()}

    def segment_sizes(self) -> list[int]:
        """Reserved bytes of each current segment (as the snapshot's ``total_size``), largest first."""
        return sorted((s.reserved for s in self._segments.values()), reverse=True)
