"""Every committed allocator trace (``tests/fixtures/traces/**/*.events.csv``) replayed through the
allocator model: peak reserved within 1% of the trace's own figure and the same segment count where the
trace covers a whole run, within 5% where it starts mid-run. ``bench validate`` adds the traces it
records on a GPU under ``tests/fixtures/traces/validation/``; each fixture's header names its source."""

from pathlib import Path

import pytest

from bench.measure import traces

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "traces").rglob("*.events.csv"))


def test_there_are_fixtures():
    assert FIXTURES, "tests/fixtures/traces holds no event file"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_replays_to_its_recorded_peak(path):
    trace = traces.read_events(path)
    for key in ("source", "commit", "license", "real_peak_reserved"):
        assert trace.header.get(key), f"{path.name}: header lacks {key}"
    real = int(trace.header["real_peak_reserved"])
    assert traces.real_peaks(trace).reserved == real  # the events reproduce the header's figure
    model = traces.model_peaks(trace)
    if trace.whole_run:
        assert model.reserved == pytest.approx(real, rel=0.01)
        assert model.segments == trace.final_segments
    else:
        assert model.reserved == pytest.approx(real, rel=0.05)
