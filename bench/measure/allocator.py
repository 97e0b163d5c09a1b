"""A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp, default settings).

Replaying a sequence of storage allocations and frees through it gives what
``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` would report. Modelled:

- request sizes rounded up to multiples of 512 bytes (``kMinBlockSize``), minimum 512;
- two pools: small (requests <= 1 MiB) served from 2 MiB segments, large served from segments of
  20 MiB for requests under 10 MiB, else the request rounded up to a multiple of 2 MiB;
- best fit: the smallest cached free block of the pool that is large enough (ties: lowest address);
- splitting: a block is split when the remainder is >= 512 B (small pool) or > 1 MiB (large pool);
  otherwise the whole block is handed out (and counts as allocated, as in the real allocator);
- freeing merges a block with free neighbours of the same segment; segments are never released
  (no ``empty_cache``, no OOM-retry), so reserved memory only grows.

Not modelled: multiple streams, ``max_split_size_mb``, expandable segments, garbage-collection
thresholds, and allocations that are not tensors (cuDNN/cuBLAS workspaces, the CUDA context).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # 1 MiB
SMALL_BUFFER = 2 << 20  # 2 MiB
MIN_LARGE_ALLOC = 10 << 20  # 10 MiB
LARGE_BUFFER = 20 << 20  # 20 MiB
ROUND_LARGE = 2 << 20  # 2 MiB


def round_size(nbytes: int) -> int:
    """Requested bytes to block bytes: multiples of 512, at least 512."""
    if nbytes < MIN_BLOCK:
        return MIN_BLOCK
    return MIN_BLOCK * ((nbytes + MIN_BLOCK - 1) // MIN_BLOCK)


def segment_size(size: int) -> int:
    """Bytes cudaMalloc'ed for a new segment serving a (rounded) request of ``size``."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * ((size + ROUND_LARGE - 1) // ROUND_LARGE)


@dataclass
class Block:
    segment: int
    offset: int
    size: int
    free: bool = True
    prev: Block | None = None
    next: Block | None = None

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


@dataclass
class CachingAllocatorModel:
    """Replay ``malloc(handle, nbytes)`` / ``free(handle)``; read allocated / reserved stats."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    segments: int = 0
    _pools: dict[bool, list[tuple[tuple[int, int, int], Block]]] = field(default_factory=lambda: {True: [], False: []})
    _handles: dict[int, tuple[Block, bool]] = field(default_factory=dict)

    @staticmethod
    def is_small(size: int) -> bool:
        return size <= SMALL_SIZE

    def _insert(self, small: bool, block: Block) -> None:
        bisect.insort(self._pools[small], (block.key(), block), key=lambda kv: kv[0])

    def _remove(self, small: bool, block: Block) -> None:
        pool = self._pools[small]
        i = bisect.bisect_left(pool, block.key(), key=lambda kv: kv[0])
        assert pool[i][1] is block
        pool.pop(i)

    def malloc(self, handle: int, nbytes: int) -> None:
        size = round_size(nbytes)
        small = self.is_small(size)
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1, -1), key=lambda kv: kv[0])
        if i < len(pool):
            block = pool.pop(i)[1]
        else:
            seg = segment_size(size)
            block = Block(self.segments, 0, seg)
            self.segments += 1
            self.reserved += seg
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = Block(block.segment, block.offset + size, remaining, True, block, block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert(small, rest)
        block.free = False
        self._handles[handle] = (block, small)
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, handle: int) -> None:
        block, small = self._handles.pop(handle)
        self.allocated -= block.size
        block.free = True
        for nb in (block.prev, block.next):
            if nb is not None and nb.free:
                self._remove(small, nb)
                if nb is block.prev:
                    block.offset = nb.offset
                    block.prev = nb.prev
                    if nb.prev is not None:
                        nb.prev.next = block
                else:
                    block.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = block
                block.size += nb.size
        self._insert(small, block)

    def reset_peak(self) -> None:
        """As ``torch.cuda.reset_peak_memory_stats``: peaks restart from the current values."""
        self.peak_allocated = self.allocated
        self.peak_reserved = self.reserved
