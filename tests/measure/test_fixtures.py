"""Every committed allocator trace (``tests/fixtures/traces/**/*.events.csv[.gz]``) replayed through the
allocator model: peak reserved within 1% of the trace's own figure and the same segment count where the
trace starts with nothing allocated (a whole run; ``bench validate``'s recordings until this commit began after
one 2 MiB segment was cached, empty), within 5% where it starts mid-run. Event files that number blocks in address
order replay with the real segments' address order (best fit's tie-break). ``bench validate`` adds the traces it
records on a GPU under ``tests/fixtures/traces/validation/``; each fixture's header names its source."""

import functools
from pathlib import Path

import pytest

from bench.measure import traces

FIXTURES = traces.event_files(Path(__file__).resolve().parents[1] / "fixtures" / "traces")
#: each event file read and replayed once for all the tests below (856 files, gzip-compressed where bench validate wrote
#: them: this file's tests took 37 s on this 2-core machine, one process, imports included)
replayed = functools.cache(traces.replayed)


def test_there_are_fixtures():
    assert FIXTURES, "tests/fixtures/traces holds no event file"


@pytest.mark.parametrize("path", FIXTURES, ids=[traces.event_name(p) for p in FIXTURES])
def test_fixture_replays_to_its_recorded_peak(path):
    trace, real_peaks, model = replayed(path)
    for key in ("source", "commit", "license", "real_peak_reserved"):
        assert trace.header.get(key), f"{path.name}: header lacks {key}"
    real = int(trace.header["real_peak_reserved"])
    assert real_peaks.reserved == real  # the events reproduce the header's figure
    if trace.starts_empty:
        assert model.reserved == pytest.approx(real, rel=0.01)
        assert model.segments == trace.final_segments
    else:
        assert model.reserved == pytest.approx(real, rel=0.05)


def test_replay_without_addresses_guesses_new_segments_below():
    """A prediction has no device addresses, so the model guesses where cudaMalloc puts a new segment
    (``CachingAllocatorModel.new_segments_below``). Replayed without their addresses, the recorded traces
    other than the two the guess was read from (the H200's U-net fp32 training, benchmark off) come out within 1%
    more often, and never further off, with new segments below the others than in the order made: on the H200's
    60 others 57 within 1% against 53, on the H100's 150, recorded after the guess, 139 against 131 (max 8.9%
    against 22.9%), and on the H200's whole grid of 2026-11-27, 147 of 160 against 134 (max 8.9% against 22.9%)."""
    import dataclasses

    from bench.measure.allocator import CachingAllocatorModel

    read = {"unet-train-80x80x80-b4-fp32-71e26998", "unet-train-160x160x160-b4-fp32-c15c1ce2"}
    held = [p for p in FIXTURES if "validation" in p.parts and traces.event_name(p) not in read]
    assert len(held) >= 60
    errors: dict[bool, list[float]] = {True: [], False: []}
    for p in held:
        trace, real_peaks, _ = replayed(p)
        real = real_peaks.reserved
        plain = dataclasses.replace(trace, address_ordered=False)
        for below in errors:
            model = CachingAllocatorModel(trace.settings, new_segments_below=below)
            errors[below].append(abs(traces._peaks(traces._replay(plain, model, True)).reserved / real - 1))
    within = {below: sum(e <= 0.01 for e in errs) for below, errs in errors.items()}
    assert within[True] > within[False], within
    assert max(errors[True]) < max(errors[False])


def test_the_fixtures_readme_table_is_the_replay():
    """The table of every fixture in tests/fixtures/traces/README.md (the issue's report of real, model, error and
    the 2 MiB baseline's error) is what replaying them gives now."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
    text = (folder / "README.md").read_text()
    table = text.split("<!-- fixtures:start -->\n", 1)[1].split("\n<!-- fixtures:end -->", 1)[0]
    assert table == traces.fixture_table(folder, replayed), "regenerate it from bench.measure.traces.fixture_table"
