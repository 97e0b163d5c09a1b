"""``bench run --backend predict --snapshot DIR``: the predicted step as a PyTorch memory snapshot that
``torch.cuda._memory_viz`` reads, frames naming module and phase, and the timeline plot."""

import pickle

import torch.cuda._memory_viz as viz
from typer.testing import CliRunner

from bench import record as R
from bench.cli import app
from bench.measure import snapshot, traces
from bench.results import timeline
from bench.sweep import store


def test_bench_run_predict_writes_a_snapshot_pytorch_reads(tmp_path):
    snaps = tmp_path / "snaps"
    res = CliRunner().invoke(app, ["run", "--arch", "unet", "--size", "32", "--batch", "1", "--backend", "predict",
                                   "--out", str(tmp_path), "--snapshot", str(snaps)])
    assert res.exit_code == 0, res.output
    rec = store.load(tmp_path).iloc[0]
    path = snaps / rec[R.SNAPSHOT_PATH].split("/")[-1]
    assert path.name.startswith("unet-train-32x32x32-b1-fp32-") and path.name.endswith(".predicted.pickle")
    assert path.with_name(path.name.replace(".pickle", ".png")).stat().st_size > 10_000
    with open(path, "rb") as f:
        data = pickle.load(f)
    # PyTorch's own readers
    summary = viz.segsum(data)
    assert f"segments: {len(data['segments'])}" in summary
    assert "TOTAL MEM" in viz.trace(data)
    flame = viz.memory(data, format_flamegraph=lambda lines: lines)
    assert "active_allocated" in flame
    assert "snapshot.pickle" in viz.segment_plot(data) and "snapshot.pickle" in viz.trace_plot(data)
    # frames: module and phase of each allocation
    entries = data["device_traces"][0]
    phases = {e["frames"][0]["name"] for e in entries if e["action"] == "alloc"}
    assert {"forward", "backward", "optimizer"} <= phases
    modules = {e["frames"][0]["filename"] for e in entries if e["action"] == "alloc" and e["frames"][0]["name"] == "forward"}
    assert any(m.startswith("UNet.") for m in modules), modules
    # parameters, made outside any module's forward, are named by their parameter, and their optimizer state too
    named = {snapshot.frame_category(e["frames"]): e["frames"][0]["filename"] for e in entries if e["action"] == "alloc"
             and snapshot.frame_category(e["frames"]) in ("parameter", "optimizer")}
    assert named["parameter"].startswith("UNet.") and named["parameter"].endswith((".weight", ".bias")), named
    assert named["optimizer"].startswith("UNet.") and named["optimizer"].endswith(")"), named
    # cuDNN's workspaces are in it, each named by its convolution's module and phase
    measured = data["segmem"][snapshot.MEASURED_FROM]  # (modules are named in the measured step)
    ws = [e["frames"] for e in entries if e["action"] == "alloc" and e["time_us"] >= measured
          and snapshot.frame_category(e["frames"]) == snapshot.WORKSPACE]
    assert {"forward", "backward"} <= {f[0]["name"] for f in ws}
    assert all(f[0]["filename"].startswith("UNet.") for f in ws), ws
    # the snapshot is the prediction as the device shows it (workspaces counted): its reserved peak is the record's,
    # and replaying it reproduces it
    trace = traces.snapshot_trace(data)
    assert traces.real_peaks(trace).reserved == rec[R.PRED_DEVICE_RESERVED] == traces.model_peaks(trace).reserved
    assert rec[R.PRED_DEVICE_ALLOCATED] > rec[R.PRED_ALLOCATED]  # (the workspaces make a difference here)
    assert sum(s["total_size"] for s in data["segments"]) <= rec[R.PRED_DEVICE_RESERVED]
    # its timeline (drawn by bench run from the pickle) shows the record's figures
    tl = timeline.timeline(data)
    assert (tl.allocated[tl.peak], max(tl.reserved)) == (rec[R.PRED_DEVICE_ALLOCATED], rec[R.PRED_DEVICE_RESERVED])
    assert tl.label.startswith("unet train 32^3 b1")  # as the console names it


def test_snapshot_folder_must_be_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for snaps in (blocker / "snaps", blocker):
        res = CliRunner().invoke(app, ["run", "--arch", "unet", "--size", "32", "--batch", "1", "--backend", "predict",
                                       "--out", str(tmp_path / "out"), "--snapshot", str(snaps)])
        assert res.exit_code == 2 and "cannot write into" in res.output
        assert not (tmp_path / "out").exists()  # refused before the results folder (and its lock) was made


def test_writing_a_snapshot_leaves_the_prediction_as_it_is(tmp_path):
    """Naming modules must not keep tensors alive: meU-net runs its backbone on two patches, whose gradients
    reach the backbone's modules at different times (torch's ModuleTracker held them: +23% at 32^3 b4)."""
    import architectures
    from bench.measure.predict import predict

    spec = architectures.spec("meunet")
    args = (spec, {}, (16, 16, 16), 2, "train", "fp32", False)
    plain = predict(*args, with_memtracker=False)
    snap = predict(*args, with_memtracker=False, snapshot_to=tmp_path / "m")
    assert (snap[R.PRED_ALLOCATED], snap[R.PRED_RESERVED]) == (plain[R.PRED_ALLOCATED], plain[R.PRED_RESERVED])
    with open(tmp_path / "m.pickle", "rb") as f:
        entries = pickle.load(f)["device_traces"][0]
    backward = {e["frames"][0]["filename"] for e in entries if e["action"] == "alloc" and e["frames"][0]["name"] == "backward"}
    assert any("." in m for m in backward), backward  # the backward pass's tensors still named by module
