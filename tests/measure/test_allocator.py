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


# ----- settings users meet, against CUDACachingAllocator.cpp's rules ----------------------------------
import pytest  # noqa: E402

from bench.measure.allocator import AllocatorOOM, AllocatorSettings, roundup_power2_next_division  # noqa: E402


def test_alloc_conf_parsing_and_bad_options():
    s = AllocatorSettings.parse("expandable_segments:True, max_split_size_mb:128,garbage_collection_threshold:0.6")
    assert (s.expandable_segments, s.max_split_size, s.garbage_collection_threshold) == (True, 128 * MiB, 0.6)
    assert AllocatorSettings.parse(s.conf()) == s and AllocatorSettings.parse("") == AllocatorSettings()
    for bad, words in [("max_split_size_mb:19", "max_split_size_mb"), ("expandable_segments:yes", "expandable"),
                       ("large_segment_size_mb:40", "not modelled"), ("garbage_collection_threshold:1.5", "garbage"),
                       ("max_split_size_mb", "key:value"), ("max_non_split_rounding_mb:19", "max_non_split"),
                       ("roundup_power2_divisions:3", "roundup"), ("roundup_power2_divisions:[256:3]", "roundup")]:
        with pytest.raises(ValueError, match=words):
            AllocatorSettings.parse(bad)


def test_empty_cache_frees_unused_segments_only():
    a = CachingAllocatorModel()
    a.malloc(0, 12 * MiB)
    a.malloc(1, 3 * MiB)  # 20 MiB segment
    a.malloc(2, 3 * MiB)  # same 20 MiB segment
    a.free(0)
    a.free(1)
    a.empty_cache()  # the 12 MiB segment goes; the 20 MiB one still holds block 2
    assert (a.reserved, a.segments, a.peak_reserved) == (20 * MiB, 1, 32 * MiB)


def test_capacity_frees_cached_segments_and_retries_then_ooms():
    a = CachingAllocatorModel(capacity=40 * MiB)
    a.malloc(0, 12 * MiB)
    a.free(0)  # 12 MiB cached, unused
    a.malloc(1, 26 * MiB)  # a 26 MiB segment: 38 MiB fits
    a.malloc(2, 14 * MiB)  # 52 MiB would not fit: the cached 12 MiB segment is freed, then 26 + 14 fits
    assert (a.reserved, a.segments, a.num_alloc_retries, a.peak_reserved) == (40 * MiB, 2, 1, 40 * MiB)
    with pytest.raises(AllocatorOOM, match="tried to allocate 2.00 MiB"):
        a.malloc(3, 2 * MiB)
    assert a.num_ooms == 1 and a.allocated == 40 * MiB


def test_max_split_size_keeps_big_blocks_whole_and_releases_them_first():
    s = AllocatorSettings(max_split_size=40 * MiB)
    a = CachingAllocatorModel(s)
    a.malloc(0, 100 * MiB)
    a.free(0)
    a.malloc(1, 30 * MiB)  # under max_split: never served from the 100 MiB oversize block
    assert (a.reserved, a.segments) == (130 * MiB, 2)
    a.malloc(2, 50 * MiB)  # oversize, but 100 >= 50 + 20: a block that much larger is not used either
    assert a.reserved == 180 * MiB
    b = CachingAllocatorModel(s, capacity=140 * MiB)
    b.malloc(0, 100 * MiB)
    b.free(0)
    b.malloc(1, 50 * MiB)  # cudaMalloc of 50 fails at 140 MiB: the oversize cached block is released, no full retry
    assert (b.reserved, b.segments, b.num_alloc_retries) == (50 * MiB, 1, 0)
    c = CachingAllocatorModel()  # default: the 100 MiB block is split to serve 30 MiB
    c.malloc(0, 100 * MiB)
    c.free(0)
    c.malloc(1, 30 * MiB)
    assert (c.reserved, c.allocated) == (100 * MiB, 30 * MiB)


def test_garbage_collection_frees_the_oldest_unused_segments_over_the_threshold():
    a = CachingAllocatorModel(AllocatorSettings(garbage_collection_threshold=0.5), capacity=100 * MiB)
    a.malloc(0, 30 * MiB)
    a.free(0)  # cached since the first get_free_block call
    a.malloc(1, 12 * MiB)  # split from the cached 30 MiB block
    assert a.reserved == 30 * MiB  # served from the cached block: GC only runs before a cudaMalloc
    a.malloc(2, 14 * MiB)  # 30 - 12 = 18 MiB free block serves 14 MiB
    a.malloc(3, 40 * MiB)  # needs cudaMalloc; reserved 30 <= 50: no collection
    a.free(3)
    a.malloc(4, 60 * MiB)  # needs cudaMalloc; reserved 70 > 50: the unused 40 MiB segment is freed first
    assert (a.reserved, a.segments) == (90 * MiB, 2)
    d = CachingAllocatorModel(capacity=100 * MiB)  # without the threshold the 40 MiB stay cached until OOM
    for h, n in [(1, 30), (3, 40)]:
        d.malloc(h, n * MiB)
    d.free(3)
    d.malloc(4, 60 * MiB)
    assert (d.reserved, d.num_alloc_retries) == (90 * MiB, 1)


def test_expandable_segments_grow_by_pages_and_reuse_the_free_tail():
    a = CachingAllocatorModel(AllocatorSettings(expandable_segments=True))
    a.malloc(0, 12 * MiB)  # one 20 MiB page mapped
    a.malloc(1, 12 * MiB)  # 8 MiB left in the page + one more page, one segment
    assert (a.reserved, a.segments, a.allocated) == (40 * MiB, 1, 24 * MiB)
    a.free(0)
    a.free(1)
    a.malloc(2, 36 * MiB)  # the merged 40 MiB free range: no new page
    assert (a.reserved, a.segments) == (40 * MiB, 1)
    a.free(2)
    a.empty_cache()  # whole free pages unmapped
    assert (a.reserved, a.segments) == (0, 0)
    b = CachingAllocatorModel()  # the same pattern without expandable segments: two segments
    b.malloc(0, 12 * MiB)
    b.malloc(1, 12 * MiB)
    b.free(0)
    b.free(1)
    b.malloc(2, 36 * MiB)
    assert (b.reserved, b.segments) == (60 * MiB, 3)


def test_expandable_segments_small_pool_pages_and_streams():
    a = CachingAllocatorModel(AllocatorSettings(expandable_segments=True))
    a.malloc(0, 1000)  # small pool: a 2 MiB page
    a.malloc(1, 1000, stream=1)  # another stream: its own segment
    assert (a.reserved, a.segments) == (4 * MiB, 2)


@pytest.mark.parametrize("settings", [AllocatorSettings(True), AllocatorSettings(False, 64 * MiB),
                                      AllocatorSettings(False, None, 0.5), AllocatorSettings(True, 64 * MiB, 0.7)],
                         ids=["expandable", "max_split", "gc", "all"])
def test_random_sequences_keep_the_books_straight(settings):
    """Random mallocs/frees on two streams, capacities, empty_cache: reserved is what the segments hold,
    allocated what their used blocks hold, every free mapped block is in a pool, capacity is never
    passed, and after freeing everything empty_cache gives all memory back."""
    import random

    rng = random.Random(1)
    for _ in range(15):
        a = CachingAllocatorModel(settings, rng.choice([None, 300 * MiB, 1024 * MiB]))
        live = []
        for i in range(200):
            if live and rng.random() < 0.45:
                a.free(live.pop(rng.randrange(len(live))))
            else:
                size = rng.randint(1, rng.choice([4096, 2 * MiB, 30 * MiB, 120 * MiB]))
                try:
                    a.malloc(i, size, stream=rng.choice([0, 0, 1]))
                    live.append(i)
                except AllocatorOOM:
                    assert a.capacity is not None
            if rng.random() < 0.02:
                a.empty_cache()
            blocks = [b for _, bl in a.segment_blocks() for b in bl]
            assert sum(b.size for b in blocks if b.mapped) == a.reserved
            assert sum(b.size for b in blocks if not b.free) == a.allocated <= a.reserved
            assert sum(len(p) for p in a._pools.values()) == sum(b.free and b.mapped for b in blocks)
            assert a.capacity is None or a.reserved <= a.capacity
        for h in live:
            a.free(h)
        a.empty_cache()
        assert (a.allocated, a.reserved, a.segments) == (0, 0, 0)


# ----- rules checked against PyTorch's source (pytorch/pytorch; see bench/measure/allocator.py's docstring) -----
ALLOC_CPP = "c10/cuda/CUDACachingAllocator.cpp @ eb42ad6eca0ce61e7c581212b4bf32f991425571"
CONFIG_CPP = "c10/core/AllocatorConfig.cpp @ 065861fba7598880aa3216822742a1172d0a197c"


def test_should_split_with_expandable_segments_splits_any_remainder_of_512_bytes():
    """should_split (ALLOC_CPP): ``if (block->pool->is_small || CUDAAllocatorConfig::expandable_segments())
    return remaining >= kMinBlockSize;`` - with expandable segments a large block is split even when the
    remainder is under 1 MiB, so that remainder serves the next request."""
    a = CachingAllocatorModel(AllocatorSettings(expandable_segments=True))
    a.malloc(0, 19 * MiB + MiB // 2)  # one 20 MiB page; the 0.5 MiB remainder is split off, not kept attached
    assert (a.allocated, a.reserved) == (19 * MiB + MiB // 2, 20 * MiB)
    a.malloc(1, MiB + MiB // 4)  # needs 1.25 MiB: 0.5 MiB free at the tail + a second page, still one segment
    assert (a.allocated, a.reserved, a.segments) == (20 * MiB + 3 * MiB // 4, 40 * MiB, 1)
    b = CachingAllocatorModel()  # without expandable segments the 0.5 MiB stays in the allocated block
    b.malloc(0, 19 * MiB + MiB // 2)
    assert b.allocated == 20 * MiB


def test_max_split_size_of_20_mib_is_accepted():
    """AllocatorConfig::parseMaxSplitSize (CONFIG_CPP): ``val_env >= min_allowed_split_size_mb`` (kLargeBuffer / 1 MiB
    = 20); torch 2.13.0's parser (torch._C._accelerator_setAllocatorSettings) accepts 20 and refuses 19 the same way."""
    assert AllocatorSettings.parse("max_split_size_mb:20").max_split_size == 20 * MiB
    with pytest.raises(ValueError, match=">= 20"):
        AllocatorSettings.parse("max_split_size_mb:19")


def test_max_non_split_rounding_limits_how_much_larger_an_oversize_block_may_be():
    """get_free_block: a request >= max_split_size is not served from a block ``>= size + max_non_split_rounding_size()``
    (default kLargeBuffer, 20 MiB: AllocatorConfig's constructor in CONFIG_CPP); ``max_non_split_rounding_mb`` raises it."""
    default = AllocatorSettings(max_split_size=40 * MiB)
    a = CachingAllocatorModel(default)
    a.malloc(0, 100 * MiB)
    a.free(0)
    a.malloc(1, 70 * MiB)  # 100 >= 70 + 20: a new segment
    assert a.reserved == 170 * MiB
    s = AllocatorSettings.parse("max_split_size_mb:40,max_non_split_rounding_mb:40")
    assert s.max_non_split_rounding == 40 * MiB and AllocatorSettings.parse(s.conf()) == s
    b = CachingAllocatorModel(s)
    b.malloc(0, 100 * MiB)
    b.free(0)
    b.malloc(1, 70 * MiB)  # 100 < 70 + 40: the whole oversize block serves it, unsplit
    assert (b.reserved, b.allocated) == (100 * MiB, 100 * MiB)


def test_roundup_power2_divisions_rounds_to_the_next_division():
    """round_size / roundup_power2_next_division (ALLOC_CPP): with d divisions for the size's interval
    [2^k MiB, 2^(k+1) MiB) (AllocatorConfig::roundup_power2_divisions), a size over 512 x d goes up to the next of
    d equal steps between its powers of two; the C++ comment's own example: 1200 with 4 divisions is 1280."""
    assert roundup_power2_next_division(1200, 4) == 1280
    assert roundup_power2_next_division(1024, 4) == 1024  # a power of two stays
    s = AllocatorSettings.parse("roundup_power2_divisions:4")
    assert round_size(3 * MiB + 1, s.roundup_power2_divisions) == 3 * MiB + MiB // 2  # 2 MiB .. 4 MiB in 512 KiB steps
    assert round_size(1000, s.roundup_power2_divisions) == 1024  # 1000 <= 512 x 4: the 512-byte rule
    a = CachingAllocatorModel(s)
    a.malloc(0, 13 * MiB)  # 8 .. 16 MiB in 2 MiB steps: 14 MiB
    assert (a.allocated, a.reserved) == (14 * MiB, 14 * MiB)


def test_roundup_power2_divisions_list_form():
    """AllocatorConfig::parseRoundUpPower2Divisions (CONFIG_CPP): ``[256:1,>:8]`` - an entry names the interval
    starting at that many MiB; the first entry also fills every interval below it; ``>`` fills from the last
    named interval to the end (that interval included, as the code's std::fill starts at last_index)."""
    d = AllocatorSettings.parse("roundup_power2_divisions:[64:2,>:8]").roundup_power2_divisions
    assert d[:6] == (2,) * 6 and d[6:] == (8,) * 10  # 1..32 MiB intervals: 2; from 64 MiB on: 8
    assert round_size(40 * MiB, d) == 48 * MiB  # 32 .. 64 MiB in 2 steps
    assert round_size(65 * MiB, d) == 72 * MiB  # 64 .. 128 MiB in 8 steps of 8 MiB
    d2 = AllocatorSettings.parse("roundup_power2_divisions:[1:4,2:2]").roundup_power2_divisions
    assert d2[:2] == (4, 2) and set(d2[2:]) == {0}
