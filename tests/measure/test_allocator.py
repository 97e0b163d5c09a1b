"""The CUDA caching-allocator model against hand-computed cases."""

from bench.measure.allocator import CachingAllocatorModel, round_size, segment_size

MiB = 1 << 20


def test_rounding_and_segment_sizes():
    assert [round_size(n) for n in (1, 512, 513, 1000)] == [512, 512, 1024, 1024]
    assert segment_size(512) == 2 * MiB  # small pool: 2 MiB segments
    assert segment_size(MiB + 512) == 20 * MiB  # large request under 10 MiB: a 20 MiB segment
    assert segment_size(19 * MiB + 1) == 20 * MiB  # otherwise rounded up to 2 MiB
    assert segment_size(21 * MiB) == 22 * MiB


def test_small_requests_share_a_segment_by_splitting():
    a = CachingAllocatorModel()
    for h in range(3):
        a.malloc(h, 100)
    assert (a.allocated, a.reserved, a.segments) == (3 * 512, 2 * MiB, 1)


def test_freed_block_is_reused():
    a = CachingAllocatorModel()
    a.malloc(0, 600)
    a.free(0)
    a.malloc(1, 1000)
    assert (a.allocated, a.reserved, a.peak_allocated) == (1024, 2 * MiB, 1024)


def test_large_block_is_split_only_above_one_mib_remainder():
    a = CachingAllocatorModel()
    a.malloc(0, MiB + 1)  # 1 MiB + 512 from a 20 MiB segment, remainder split off
    assert (a.allocated, a.reserved) == (MiB + 512, 20 * MiB)
    b = CachingAllocatorModel()
    b.malloc(0, 19 * MiB + MiB // 2)  # 19.5 MiB: a 20 MiB segment, 0.5 MiB remainder stays attached
    assert (b.allocated, b.reserved) == (20 * MiB, 20 * MiB)


def test_free_neighbours_merge_and_serve_a_larger_request():
    a = CachingAllocatorModel()
    a.malloc(0, 5 * MiB)
    a.malloc(1, 5 * MiB)  # same 20 MiB segment
    a.free(0)
    a.free(1)
    a.malloc(2, 15 * MiB)  # fits only because the two freed blocks merged with the rest
    assert (a.reserved, a.segments, a.allocated) == (20 * MiB, 1, 15 * MiB)


def test_best_fit_and_peak_reset():
    a = CachingAllocatorModel()
    a.malloc(0, 12 * MiB)  # its own 12 MiB segment
    a.malloc(1, 3 * MiB)  # a 20 MiB segment
    a.free(0)
    a.free(1)
    a.reset_peak()
    a.malloc(2, 11 * MiB)  # best fit: the 12 MiB block, not the 20 MiB one; 1 MiB remainder not split
    assert a.allocated == 12 * MiB and a.segments == 2
    assert a.peak_allocated == 12 * MiB and a.peak_reserved == 32 * MiB
