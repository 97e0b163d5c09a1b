"""The timeline plot of a memory snapshot, drawn from the pickle alone: a real snapshot's own levels and
tensor origins (its first frame outside torch), a prediction's model levels and phases, and
``bench replay --plot`` with its bad input."""

import pickle

from typer.testing import CliRunner

from bench.cli import app
from bench.measure import snapshot
from bench.measure.tracker import AllocationTracker, Event, replay
from bench.results import timeline

MiB = 1 << 20
TORCH = "/usr/lib/python3.11/site-packages/torch/nn/modules/conv.py"


def real_like() -> dict:
    """A snapshot as torch.cuda.memory._snapshot() writes one: no segmem entry, frames innermost first."""
    def frames(line):
        return [{"filename": TORCH, "line": 456, "name": "_conv_forward"},
                {"filename": "/home/me/train.py", "line": line, "name": "step"}]

    trace = [
        {"action": "segment_alloc", "addr": 0, "size": 20 * MiB, "stream": 0, "frames": frames(10)},
        {"action": "alloc", "addr": 0, "size": 8 * MiB, "stream": 0, "frames": frames(10)},
        {"action": "alloc", "addr": 8 * MiB, "size": 12 * MiB, "stream": 0, "frames": frames(11)},
        {"action": "free_requested", "addr": 0, "size": 8 * MiB, "stream": 0, "frames": frames(12)},
        {"action": "free_completed", "addr": 0, "size": 8 * MiB, "stream": 0, "frames": frames(12)},
        {"action": "alloc", "addr": 0, "size": 4 * MiB, "stream": 0, "frames": frames(13)},
    ]
    blocks = [{"address": 0, "size": 4 * MiB, "requested_size": 4 * MiB, "state": "active_allocated", "frames": []},
              {"address": 4 * MiB, "size": 4 * MiB, "requested_size": 0, "state": "inactive", "frames": []},
              {"address": 8 * MiB, "size": 12 * MiB, "requested_size": 12 * MiB, "state": "active_allocated",
               "frames": []}]
    return {"segments": [{"device": 0, "address": 0, "total_size": 20 * MiB, "stream": 0, "segment_type": "large",
                          "blocks": blocks}],
            "device_traces": [trace]}


def test_a_real_snapshot_is_drawn_from_its_own_trace():
    tl = timeline.timeline(real_like(), label="mine")
    assert tl.allocated[tl.peak] == 20 * MiB and max(tl.reserved) == 20 * MiB
    assert tl.phases == [None] * len(tl.x)  # a real snapshot does not say forward / backward
    # the tensors live at the peak, largest first, named by the first frame outside torch
    assert tl.live_at_peak == [(12 * MiB, "train.py:11 step", None), (8 * MiB, "train.py:10 step", None)]
    assert tl.label == "mine"


def test_a_prediction_starts_at_its_measured_step_and_names_modules_and_phases():
    t = AllocationTracker()
    t.events += [Event(0, 6 * MiB, "setup"), Event(1, 30 * MiB, "forward"), Event(1, -30 * MiB, "backward")]
    t.mark("measured")
    t.events += [Event(2, 10 * MiB, "forward"), Event(3, 3 * MiB, "forward"), Event(3, -3 * MiB, "backward"),
                 Event(2, -10 * MiB, "optimizer")]
    t.modules.update({1: "Net.enc", 2: "Net.enc.conv", 3: "Net.dec"})
    t.categories.update({0: "parameter", 2: "activation", 3: "activation"})
    data = snapshot.build(t, label="net 32^3 b1", start=t.marks["measured"])
    tl = timeline.timeline(data)
    assert tl.label == "net 32^3 b1"
    assert tl.phases == ["forward", "forward", "backward", "optimizer"]  # the warm-up's 30 MiB is not drawn
    # the figure the prediction records (its allocator model on the tracker's events, peak reset at the step)
    assert tl.allocated[tl.peak] == replay(t, set(), t.marks["measured"]).peak_allocated >= (6 + 10 + 3) * MiB
    assert [(n // MiB, where, cat) for n, where, cat in tl.live_at_peak] == [
        (10, "Net.enc.conv", "activation"), (6, "<no module>", "parameter"), (3, "Net.dec", "activation")]


def test_the_peak_label_stays_inside_and_an_unseen_phase_has_no_legend_entry():
    n = 1000
    allocated = [MiB] * n
    allocated[900] = 5 * MiB  # a peak near the right edge
    phases = ["forward"] * (n - 1) + ["done"]  # one event after the step: not a visible span
    tl = timeline.Timeline(list(range(n)), allocated, [8 * MiB] * n, phases, 900, [(4 * MiB, "Net.dec", None)], "")
    ax = timeline.figure(tl, "t").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["forward", "reserved (model)", "allocated (model)"]
    label = next(c for c in ax.texts if c.get_text().startswith("peak allocated"))
    assert label.get_ha() == "right" and label.xyann[0] < 0  # to the left of the peak, not past the right edge
    tl.phases = ["forward"] * 900 + ["done"] * 100
    assert "after the step" in [t.get_text() for t in timeline.figure(tl, "t").axes[0].get_legend().get_texts()]


def test_bench_replay_plot(tmp_path):
    snap = tmp_path / "real.pickle"
    snap.write_bytes(pickle.dumps(real_like()))
    runner = CliRunner()
    png = tmp_path / "out" / "t.png"
    res = runner.invoke(app, ["replay", str(snap), "--plot", str(png)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "real (from the trace)" in res.output  # not segmem's: a GPU's own figures
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    res = runner.invoke(app, ["replay", str(snap), "--plot", str(tmp_path / "t.svg")])
    assert res.exit_code == 2 and "ending in .png" in res.output
    events = tmp_path / "x.events.csv"
    events.write_text("action,block,size,stream\nalloc,0,512,0\n")
    res = runner.invoke(app, ["replay", str(events), "--plot", str(png)])
    assert res.exit_code == 2 and "an event file has none" in res.output


def test_only_missing_or_stale_timelines_are_drawn(tmp_path):
    a, b = tmp_path / "a.pickle", tmp_path / "b.pickle"
    for p in (a, b):
        p.write_bytes(pickle.dumps(real_like()))
    timeline.png_of(a).write_bytes(b"old")
    import os

    os.utime(a, (1, 1))  # a's timeline is newer than a
    assert timeline.pending(tmp_path) == [b]
    bad = tmp_path / "c.pickle"
    bad.write_bytes(pickle.dumps([1, 2]))
    errors = {}
    timeline.draw_snapshots([bad, b], lambda p, err: errors.__setitem__(p.name, err))
    assert errors["b.pickle"] is None and timeline.png_of(b).stat().st_size > 10_000
    assert "not a PyTorch memory snapshot" in errors["c.pickle"]
