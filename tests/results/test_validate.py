"""``bench validate`` end to end on the fake CUDA backend (``tests/fake_cuda.py``): the grid, the CSV and
Markdown summary, a recorded and a predicted snapshot per configuration, fixtures made from the
recorded ones, and the exit code following the error limits."""

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.append(str(Path(__file__).resolve().parents[1]))

import fake_cuda  # noqa: E402

from bench import record as R  # noqa: E402
from bench.cli import app  # noqa: E402
from bench.measure import traces  # noqa: E402
from bench.results import validate as V  # noqa: E402
from bench.sweep import executor, store  # noqa: E402
from bench.sweep.share import SHARE_OF_MEMORY  # noqa: E402


def test_the_grid_covers_every_architecture_two_sizes_modes_precisions_and_cudnn():
    import architectures

    g = V.grid()
    assert {c.arch for c in g} == set(architectures.names())
    unet = [c for c in g if c.arch == "unet"]
    assert len(unet) == 2 * 2 * 2 * 2 and {c.size for c in unet} == {(160, 160, 160), (80, 80, 80)}
    assert {(c.mode, c.precision, c.cudnn_benchmark) for c in unet} == {
        (m, p, b) for m in ("train", "infer") for p in ("fp32", "fp16") for b in (False, True)}
    assert len({c.key() for c in g}) == len(g)


def test_verdict_limits():
    assert V.verdict(pd.Series([0.01, -0.015, 0.02]))[0]
    assert not V.verdict(pd.Series([0.01, 0.01, 0.06]))[0]  # one over 5%
    assert not V.verdict(pd.Series([0.03, -0.03, 0.01]))[0]  # median over 2%
    assert not V.verdict(pd.Series([None, None]))[0]  # nothing measured is no pass



def test_measuring_time_leaves_out_a_prediction_the_worker_made():
    old = {R.WORKER_TIME: 10.0, R.PRED_TIME: 3.0, R.MEMTRACKER_TIME: 0.5}  # predicted in the worker
    assert V.measuring_time(old) == pytest.approx(6.5)
    new = {**old, R.CUDA_PHASES: json.dumps({"env": 0.5, "init": 1.0, "warmup": 2.0})}  # where it went, prediction apart
    assert V.measuring_time(new) == 3.5
    assert V.measuring_time({R.PRED_TIME: 1.0}) is None and V.measuring_time({R.WORKER_TIME: float("nan")}) is None


def test_the_summary_projects_the_whole_grids_run_time_from_the_measured_means():
    configs = V.grid(["unet"])  # 16: 4 per (mode, cudnn.benchmark)
    train = [c for c in configs if str(c.mode) == "train"]
    picked = [c for b in (False, True) for c in [c for c in train if c.cudnn_benchmark == b][:2]]
    rows = [{"key": c.key(), "arch": c.arch, "stage": "", "size": "x", "batch": c.batch, "mode": str(c.mode),
             "precision": str(c.precision),
             "cudnn_benchmark": c.cudnn_benchmark, "status": R.OK, "allocated_error": 0.0, "reserved_error": 0.0,
             "measuring_time_s": {(True, "train"): 30.0, (False, "train"): 10.0}.get((c.cudnn_benchmark, str(c.mode)))}
            for c in picked]  # 2 of each training class measured; no inference
    df = pd.DataFrame(rows)
    line = next(x for x in V.markdown(df, "t", configs).splitlines() if x.startswith("Run time"))
    # measured 2 x 30 + 2 x 10 s; not measured: 2 x 30 + 2 x 10 s of training, inference unknown
    assert "4 configurations measured in 1.3 min of measuring time" in line
    assert "The 12 steps not measured (configurations that run the same step count once) would take about 1.3 min" in line
    assert "and more for infer (cudnn.benchmark off), infer (cudnn.benchmark on) (none measured)" in line
    assert "about 3 min for the whole grid, over the 10-minute target" in line
    df["measuring_time_s"] = 1.0
    whole = V.markdown(pd.DataFrame([{**rows[0], "key": c.key(), "mode": str(c.mode), "cudnn_benchmark": c.cudnn_benchmark,
                                      "measuring_time_s": 1.0} for c in configs]), "t", configs)
    assert "16 configurations measured in 0.3 min" in whole and "That is the whole grid, within the 10-minute" in whole
    assert "Run time" not in V.markdown(df.drop(columns="measuring_time_s"), "t", configs)  # records that do not say
    again = V.markdown(df, "t", configs, recorded=True)  # bench validate --recorded: the GPU run's times, said so
    assert "\nTimes as the GPU run recorded them (this command measured nothing):\n\nRun time: 4 configurations" in again
    assert again.count("as the GPU run recorded them") == 1
    untimed = pd.DataFrame([{**rows[0], "measuring_time_s": 30.0}, {**rows[1], "measuring_time_s": None}])
    # an ok record without a time (one that took another's measurement): none of the measuring time, and not missing
    run_time = V.run_time_lines(untimed, configs)[1]
    assert "1 configuration measured" in run_time and "The 14 steps not" in run_time
    # records from before the phases were recorded: their worker time, said to be no more than that
    before = V.markdown(df.assign(worker_time_s=[4.0, 6.0, 8.0, 10.0]), "t", configs)
    assert ("Worker time (worker_time_s, each worker process from its start to its record: median 7.0 s, total 28 s, "
            "each worker's own prediction included): not by phase") in before
    shared = V.markdown(df.assign(gpu_shared=[True, True, False, False]), "t", configs)  # --share-gpu: apart, and said
    assert "- measured alone (2 measurements)" in shared and "- measured sharing the GPU (--share-gpu) (2 measurem" in shared
    assert "2 of them shared the GPU: their times overlap" in shared
    assert "bench validate prints the wall time" in shared  # records that do not say when they started


def test_the_summary_gives_the_wall_time_of_those_that_shared_the_gpu():
    """--share-gpu: the records' starts and worker times give the time some shared configuration was running (the
    union of their spans), and the whole grid's time at that overlap."""
    configs = V.grid(["unet"])
    t0 = pd.Timestamp("2026-11-27T02:53:36+00:00")
    rows = [{"key": c.key(), "arch": "unet", "stage": "", "size": "x", "batch": 4, "mode": str(c.mode),
             "precision": str(c.precision),
             "cudnn_benchmark": c.cudnn_benchmark, "status": R.OK, "allocated_error": 0.0, "reserved_error": 0.0,
             "measuring_time_s": 30.0, "worker_time_s": 30.0, "gpu_shared": True,
             # two at a time, each pair for 30 s, the next 5 s after; the second half after 600 s when none ran
             "started": (t0 + pd.Timedelta(seconds=35 * (i // 2) + (600 if i >= 8 else 0))).isoformat()}
            for i, c in enumerate(configs)]
    busy, total = V.spans(pd.DataFrame(rows))
    assert total == 16 * 30 and busy == 8 * 30  # 8 pairs of 30 s: the gaps between them left out
    line = next(x for x in V.markdown(pd.DataFrame(rows), "t", configs).splitlines() if x.startswith("Run time"))
    assert "16 of them shared the GPU" in line and "at least one of them was running during 4.0 min: 2.0 at a time" in line
    assert "At that rate the whole grid's workers take about 4 min. That is a floor of its wall time, which adds" in line
    assert "notes it in calls.jsonl): the 10-minute target leaves 6 min for them. No call of this run noted" in line
    one = V.markdown(pd.DataFrame(rows[:1]), "t", configs)  # one record: no span to speak of
    assert "bench validate prints the wall time" in one
    # the last two measured alone (the memory gate let nothing beside them), 2 min each: at their own time, not at
    # the others' overlap (14 x 30 s at 2 at a time, then 2 x 120 s: 7.5 min, where 11 min / 2 would be 5.5)
    big = pd.DataFrame([{**r, "gpu_shared": False, "measuring_time_s": 120.0} if i >= 14 else r
                        for i, r in enumerate(rows)])
    line = next(x for x in V.markdown(big, "t", configs).splitlines() if x.startswith("Run time"))
    assert "14 of them shared the GPU" in line and "2.0 at a time" in line
    assert "the whole grid's workers take about 8 min (2 measured alone, counted at their own 4.0 min). That is a floor" in line

def test_the_summary_holds_the_calls_wall_time_against_the_target_once(tmp_path):
    """With the calls' own clock (calls.jsonl), the target is held against their wall time, not the workers' sum nor
    the projection at their overlap, which say no verdict; a grid not measured whole is said to be part of one."""
    configs = V.grid(["unet"])
    t0 = pd.Timestamp("2026-11-27T02:53:36+00:00")
    rows = pd.DataFrame([{"key": c.key(), "arch": "unet", "stage": "", "size": "x", "batch": 4, "mode": str(c.mode),
                          "precision": str(c.precision), "cudnn_benchmark": c.cudnn_benchmark, "status": R.OK,
                          "allocated_error": 0.0, "reserved_error": 0.0, "measuring_time_s": 60.0,
                          "worker_time_s": 60.0, "gpu_shared": True,
                          "started": (t0 + pd.Timedelta(seconds=30 * i)).isoformat()} for i, c in enumerate(configs)])
    assert V.calls(tmp_path) is None  # a run recorded before the calls were noted
    V.note_call(tmp_path, command_s=498.0, measuring_s=470.0, measured=12)
    V.note_call(tmp_path, command_s=122.0, measuring_s=100.0, measured=4)
    made = V.calls(tmp_path)
    md = V.markdown(rows, "t", configs, made=made)
    assert ("Wall time: 2 calls of bench validate measured 16 configurations in 10.3 min from the command's start to the "
            "end of its measuring (8.3 + 2.0 min), 9.5 min of it in the sweep") in md
    assert "the whole grid, over the 10-minute target (the target's: one call on one GPU)." in md
    (tmp_path / "b").mkdir()
    V.note_call(tmp_path / "b", command_s=500.0, measuring_s=470.0, measured=12)
    V.note_call(tmp_path / "b", command_s=40.0, measuring_s=30.0, measured=4)  # 9.0 min together: within
    within = V.markdown(rows, "t", configs, made=V.calls(tmp_path / "b"))
    assert ("the whole grid, within the 10-minute target (the target's is one call on one GPU: the calls' sum counts "
            "the start-up of each, which one call makes once).") in within
    assert md.count("-minute target") == 1 and "That is the whole grid, the sum of its workers' times." in md
    assert "workers take about 8 min. That is a floor of its wall time, which adds the time when no worker ran" in md
    assert "notes it in calls.jsonl).\n" in md and "No call of this run" not in md  # (the Wall time line judges)
    without = V.markdown(rows, "t", configs)  # no calls: the projection at the overlap is the one held against it
    assert without.count("-minute target") == 1 and "in calls.jsonl): the 10-minute target leaves 2 min for them." in without
    slow = V.markdown(rows.assign(measuring_time_s=120.0), "t", configs)  # a floor over the target: over, whatever ran
    assert "about 17 min. That is a floor" in slow and ": over the 10-minute target even before those." in slow
    V.note_call(tmp_path, command_s=1.0, measuring_s=1.0, measured=0, source="typed in")  # one noted afterwards
    assert "(noted afterwards: calls.jsonl's source says from what)" in V.markdown(rows, "t", configs, made=V.calls(tmp_path))
    part = V.markdown(rows.iloc[:8], "t", configs, made=made.iloc[:1])
    assert "in 8.3 min from the command's start" in part and ": part of the grid (see Run time for the rest)." in part


def test_a_lent_gpu_measures_what_no_gpu_measured_first(tmp_path):
    def run(name, records):
        for r in records:
            store.append(tmp_path / name, r)

    ok = lambda c, **kw: {**R.config_columns(c), R.STATUS: R.OK, **kw}  # noqa: E731
    unet, vnet = V.grid(["unet"]), V.grid(["vnet"])
    run("gpu-a", [ok(c) for c in unet[:10]] + [ok(vnet[0])])
    run("gpu-b", [ok(c) for c in unet[5:12]]  # the same configurations on another GPU count once
        + [ok(c, **{R.STATUS: R.OOM}) for c in vnet] + [ok(c, **{R.BACKEND: "predict"}) for c in vnet])
    (tmp_path / "notes").mkdir()  # a folder that is no run
    archs = ["unet", "meunet", "vnet", "unet3d"]
    assert V.least_measured_first(archs, tmp_path) == ["meunet", "unet3d", "vnet", "unet"]
    assert V.least_measured_first(archs, tmp_path / "nothing") == archs  # no run yet: the given order
    committed = V.least_measured_first(["cascade", "unet", "unet3d"], Path("reports/validation"))
    # the committed runs measured every configuration between them (the H100 all 32 of the cascade's and 14 of the
    # 3D U-Net's 16, the H200 the other 2 and all 16 of unet's): the counts are the grid's, its 16s before its 32
    assert committed == ["unet", "unet3d", "cascade"]


def test_fixtures_keep_the_code_version_that_recorded_them(tmp_path):
    """A run that keeps earlier measurements (--keep-measured) writes fixtures of the new snapshots only: one
    newer than its snapshot keeps the header of the code that recorded it; a snapshot recorded again is converted
    again."""
    import gzip
    import os
    import shutil

    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    committed = Path("reports/validation/nvidia-h100-80gb-hbm3-2.11.0+cu130/snapshots")
    snap = Path(shutil.copy(committed / "unet3d-infer-64x64x64-b1-fp32-2af51ff9.cuda.pickle.gz", snaps))
    os.utime(snap, (1e9, 1e9))
    (first,) = V.fixtures(snaps, tmp_path / "fx", {"source": "s", "commit": "aaa", "license": "l"})
    assert traces.read_events(first).header["commit"] == "aaa"
    V.fixtures(snaps, tmp_path / "fx", {"source": "s", "commit": "bbb", "license": "l"})
    assert traces.read_events(first).header["commit"] == "aaa"
    os.utime(snap, (first.stat().st_mtime + 10,) * 2)  # recorded again
    V.fixtures(snaps, tmp_path / "fx", {"source": "s", "commit": "bbb", "license": "l"})
    assert traces.read_events(first).header["commit"] == "bbb"
    # one written plain, before they were compressed, and newer than its snapshot: kept, no compressed one beside it
    plain = first.with_name(traces.event_name(first) + ".events.csv")
    plain.write_bytes(gzip.decompress(first.read_bytes()))
    first.unlink()
    os.utime(plain, (snap.stat().st_mtime + 10,) * 2)
    assert V.fixtures(snaps, tmp_path / "fx", {"source": "s", "commit": "ccc", "license": "l"}) == [plain]
    assert not first.exists() and traces.read_events(plain).header["commit"] == "bbb"


@pytest.mark.slow
def test_bench_validate_on_the_fake_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(executor, "WORKER", fake_cuda.WORKER)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda device=None: fake_cuda.NAME)
    monkeypatch.setattr(V, "two_sizes", lambda spec: [(32, 32, 32)])  # the CPU runs the fake GPU's steps
    monkeypatch.setattr(V, "PRECISIONS", ("fp32",))
    res = CliRunner().invoke(app, ["validate", "--arch", "unet", "--out", str(tmp_path / "v"),
                                   "--fixtures", str(tmp_path / "fx")])
    name = V.report_name(fake_cuda.NAME, __import__("torch").__version__)
    df = pd.read_csv(tmp_path / "v" / f"{name}.csv")
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["mode"]) == {"train", "infer"}
    # compressed once recorded (about 15 times smaller: what lets a run's snapshots be committed)
    assert all(Path(p).exists() and p.endswith(".cuda.pickle.gz") for p in df["measured_snapshot"])
    assert df["measured_allocated_bytes"].gt(0).all() and df["allocated_error"].notna().all()
    # predicted ahead, apart from the measuring workers, for the live GPU as a measuring worker would
    recs = store.load(tmp_path / "v" / V.report_name(fake_cuda.NAME, __import__("torch").__version__))
    assert recs[R.PRED_STEP_TIME].gt(0).all() and recs[R.PEAK_ALLOCATED].gt(0).all()
    passed, med, worst = V.verdict(df["allocated_error"])
    # on the fake the device model is the tracker's own rule: the workers sent their configuration ahead (all but the
    # first) measure what the prediction says too, their network copied from the host at their turn
    assert passed and worst < 0.001 and res.exit_code == 0, res.output
    assert "validation passed" in res.output
    summary = (tmp_path / "v" / f"{name}.md").read_text()
    assert f"{med:.2%}" in summary and "| unet | 4 |" in summary
    assert "Worker time (worker_time_s, each worker process from its start to its record: median" in summary
    assert "by phase over 4 configurations): env " in summary  # where time went
    assert "while its prediction was made), 4 workers made" in summary
    assert ", after imports of a median " in summary
    # every phase of the worker's, in order: each configuration sent ahead of its turn to a worker that made its
    # CPU-side parts while the one before measured (the first, while its prediction was made); the others account for
    # the worker's time
    phases = [json.loads(p) for p in recs.sort_values(R.TIMESTAMP, kind="stable")[R.CUDA_PHASES]]
    assert all(R.AHEAD_PHASE in p for p in phases) and len(phases) == 4
    # each of those three imported torch and segmem first, in a process of its own (seconds on this CPU)
    assert [R.IMPORTS_PHASE in p for p in phases] == [R.AHEAD_PHASE in p for p in phases]
    assert all(0.5 < p[R.IMPORTS_PHASE] < 120 for p in phases if R.IMPORTS_PHASE in p), phases
    assert all(tuple(p) == tuple(n for n in R.CUDA_PHASE_NAMES if n in p) for p in phases), phases
    for p, worker in zip(phases, recs.sort_values(R.TIMESTAMP, kind="stable")[R.WORKER_TIME]):
        assert 0 <= worker - sum(v for k, v in p.items() if k not in R.BEFORE_TURN_PHASES) < 0.5, (worker, p)
    assert "Run time: 4 configurations measured in " in summary and "That is the whole grid" in summary
    assert "Run time: 4 configurations measured in " in res.output  # on the console too
    # the call's own clock, beside the records: the command's wall time is what the target is held against, once
    [call] = V.calls(tmp_path / "v" / name).to_dict("records")
    assert call["measured"] == 4 and 0 < call["measuring_s"] <= call["command_s"] and call["share_gpu"] == 1
    # where the start-up goes: the grid made, then the first workers and predictions, before the first record
    assert 0 <= call["sweep_start_s"] < call["first_record_s"] <= call["sweep_start_s"] + call["measuring_s"] + 0.1, call
    assert call["sweep_start_s"] + call["measuring_s"] <= call["command_s"] + 0.1, call
    assert call["spares"] == executor.spares_ahead(call["cores"], 1) and call["prediction_jobs"] >= 1, call
    assert "Wall time: 1 call of bench validate measured 4 configurations in " in summary
    assert "the whole grid, within the 10-minute target." in summary and summary.count("-minute target") == 1
    assert "Wall time: 1 call of bench validate" in res.output
    snaps = sorted((tmp_path / "v" / name / "snapshots").iterdir())
    assert len([p for p in snaps if p.name.endswith(".cuda.pickle.gz")]) == 4 and not list(snaps[0].parent.glob("*.cuda.pickle"))
    assert len([p for p in snaps if p.name.endswith(".predicted.pickle")]) == 4
    made = sorted((tmp_path / "fx" / name).glob("*.events.csv.gz"))  # compressed
    assert len(made) == 4
    assert {traces.read_events(f).header["snapshot"] for f in made} == {
        p.name.removesuffix(".gz") for p in snaps if p.name.endswith(".cuda.pickle.gz")}  # the name as recorded
    again = CliRunner().invoke(app, ["validate", "--arch", "unet", "--out", str(tmp_path / "v"),
                                     "--fixtures", str(tmp_path / "fx")])  # resumes: nothing left to measure
    assert again.exit_code == res.exit_code and "4 configuration(s) already measured" in again.output
    assert len(V.calls(tmp_path / "v" / name)) == 1  # a call that measured nothing notes no time
    # measured by another code version: measured again, unless --keep-measured (GPU time is the scarce part), which
    # predicts every kept measurement again with this code for the summary
    results = store.path(tmp_path / "v" / name)
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    results.write_text("".join(json.dumps({**r, R.CODE_VERSION: "0.0.1+older"}) + "\n" for r in lines))
    kept = CliRunner().invoke(app, ["validate", "--arch", "unet", "--out", str(tmp_path / "v"),
                                    "--fixtures", str(tmp_path / "fx"), "--keep-measured"])
    assert kept.exit_code == res.exit_code and "4 configuration(s) already measured" in kept.output, kept.output
    assert len(results.read_text().splitlines()) == len(lines)  # nothing measured again
    resummed = (tmp_path / "v" / f"{name}.md").read_text()
    assert ", predicted by segmem " in resummed and f"{med:.2%}" in resummed and "| unet | 4 |" in resummed
    for f in made:  # each recorded snapshot covers the whole run and replays to its own recorded peak
        trace = traces.read_events(f)
        assert trace.whole_run and trace.address_ordered
        assert traces.model_peaks(trace).reserved == int(trace.header["real_peak_reserved"])



def test_bench_validate_shares_the_gpu_through_one_gate(monkeypatch, tmp_path):
    """--share-gpu N: N measuring executors, one gate sized by the GPU's memory, one pool of predictions (what they
    do is tested in tests/sweep/test_predict_ahead.py; the records' columns in tests/test_record.py)."""
    given = []
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda device=None: fake_cuda.NAME)
    monkeypatch.setattr("torch.cuda.get_device_properties", lambda device=None: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(executor, "run_sweep", lambda configs, out, *a, **k: given.append(a[3]) or [])
    for share in (1, 3):
        res = CliRunner().invoke(app, ["validate", "--arch", "unet", "--out", str(tmp_path / "v"),
                                       "--fixtures", str(tmp_path / "fx"), "--share-gpu", str(share)])
        assert res.exit_code == 1 and "nothing to summarise" in res.output, res.output  # (nothing measured here)
    [alone], shared = given
    assert isinstance(alone, executor.PredictAheadExecutor) and alone.gate is None and alone.measure.prestart
    assert len(shared) == 3 and len({id(ex.gate) for ex in shared}) == 1 and len({id(ex.ahead) for ex in shared}) == 1
    assert shared[0].gate.capacity == int(80 * 2**30 * SHARE_OF_MEMORY) and shared[0].gate.slots == 3
    assert all(ex.measure.prestart and ex.live_gpu == fake_cuda.NAME for ex in shared)
    assert len({id(ex.measure) for ex in shared}) == 3  # a worker of its own each
    monkeypatch.setattr(executor, "run_sweep", lambda configs, out, *a, **k: [k["on_skip"](c, executor.TIME_LIMIT)
                                                                            for c in configs] and [])
    res = CliRunner().invoke(app, ["validate", "--arch", "unet", "--out", str(tmp_path / "v"), "--time-limit", "1"])
    assert res.exit_code == 1 and "16 configuration(s) not started" in res.output
    assert "nothing to summarise (--time-limit was reached before the first started)" in res.output, res.output


def test_bench_validate_bad_input(monkeypatch):
    res = CliRunner().invoke(app, ["validate"])
    assert res.exit_code == 2 and "measures on a CUDA GPU" in res.output
    res = CliRunner().invoke(app, ["validate", "--arch", "nope"])  # the bad name is said first, GPU or not
    assert res.exit_code == 2 and "nope" in res.output
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    res = CliRunner().invoke(app, ["validate", "--arch", "nope"])
    assert res.exit_code == 2 and "nope" in res.output
    for bad in ("0", "-5"):
        res = CliRunner().invoke(app, ["validate", "--time-limit", bad])
        assert res.exit_code == 2 and "--time-limit" in res.output and "positive" in res.output
    res = CliRunner().invoke(app, ["validate", "--published", "--time-limit", "60"])
    assert res.exit_code == 2 and "--time-limit" in res.output
    for other in (["--published"], ["--recorded", "reports/validation/nvidia-h200-2.11.0+cu130"]):
        res = CliRunner().invoke(app, ["validate", "--keep-measured", *other])
        assert res.exit_code == 2 and "--keep-measured" in res.output, res.output
    for bad in ("0", "-2"):
        res = CliRunner().invoke(app, ["validate", "--share-gpu", bad])
        assert res.exit_code == 2 and "--share-gpu must be a whole number >= 1" in res.output, res.output
    res = CliRunner().invoke(app, ["validate", "--published", "--share-gpu", "2"])
    assert res.exit_code == 2 and "--share-gpu is for the grid measured on a GPU" in res.output, res.output


def test_configurations_that_run_the_same_step_are_measured_once():
    """A cascade's stage 1 is the meU-net itself (its spec, its arguments): the grid's 184 configurations are 160 steps,
    told apart by what a worker steps, not by name (what the H100 measured of both cascades' stage 1 was equal to the
    byte, and equal to the H200's meU-net)."""
    groups = V.same_step(V.grid())
    assert sum(len(g) for g in groups) == 184 and len(groups) == 160
    shared = [sorted((c.arch, c.stage) for c in g) for g in groups if len(g) > 1]
    assert len(shared) == 16 and all(c.mode == "train" for g in groups if len(g) > 1 for c in g)
    k15 = [("cascade", "stage1_k1.5"), ("cascade_pre", "stage1_k1.5"), ("meunet", "")]
    assert shared.count(k15) == 8 and shared.count([("cascade", "stage1_k1.75"), ("cascade_pre", "stage1_k1.75")]) == 8
    # by the network's arguments, not its name: the meU-net with k = 1.75 is that stage 1; fp16 or 80^3 are not
    meunet = next(c for c in V.grid(["meunet"]) if c.mode == "train")
    k175 = next(c for c in V.grid(["cascade"]) if c.stage == "stage1_k1.75" and (c.size, c.precision, c.cudnn_benchmark)
                == (meunet.size, meunet.precision, meunet.cudnn_benchmark))
    assert len(V.same_step([dataclasses.replace(meunet, overrides=(("expansion", 1.75),)), k175])) == 1
    assert len(V.same_step([meunet, k175])) == 2
    assert len(V.same_step([meunet, dataclasses.replace(meunet, precision="fp16" if meunet.precision == "fp32"
                                                                                else "fp32")])) == 2


def test_a_configuration_takes_the_measurement_of_its_step():
    """The record of a configuration whose step another measured: that measurement and prediction, its own names and
    columns, ``measured_as`` naming the measured one, no worker time (no worker ran), every column declared."""
    h100 = Path("reports/validation/nvidia-h100-80gb-hbm3-2.11.0+cu130")
    measured = {r[R.KEY]: r for r in V.measured(h100)}
    meunet = [c for c in V.grid(["meunet"]) if c.mode == "train"]
    stage1 = [c for c in V.grid(["cascade"]) if c.stage == "stage1_k1.5"]
    assert not any(c.key() in measured for c in meunet) and all(c.key() in measured for c in stage1)
    made = V.shares(measured, meunet + stage1)
    assert sorted(r[R.KEY] for r in made) == sorted(c.key() for c in meunet)  # the measured ones keep their own
    for rec in made:
        cfg = next(c for c in meunet if c.key() == rec[R.KEY])
        source = measured[rec[R.MEASURED_AS]]
        assert (source[R.ARCH], source[R.STAGE]) == ("cascade", "stage1_k1.5") and rec[R.ARCH] == "meunet"
        assert (source[R.SIZE], source[R.PRECISION], source[R.CUDNN_BENCHMARK]) == (
            rec[R.SIZE], rec[R.PRECISION], rec[R.CUDNN_BENCHMARK] or False) == (
            "x".join(map(str, cfg.size)), cfg.precision, cfg.cudnn_benchmark)
        for col in (R.PEAK_ALLOCATED, R.PEAK_RESERVED, R.PRED_DEVICE_ALLOCATED, R.CUDA_SNAPSHOT_PATH, R.CODE_VERSION):
            assert rec[col] == source[col]
        assert rec[R.WORKER_TIME] is None and rec[R.CUDA_PHASES] is None and V.measuring_time(rec) is None
        assert R.undeclared(rec) == [] and rec[R.STAGE] == ""
    # a usable measurement only (a GPU run without --keep-measured: this code version's)
    assert V.shares(measured, meunet + stage1, usable=lambda r: False) == []
    df = V.table(pd.DataFrame(list(measured.values()) + made))
    assert set(df.loc[df["arch"] == "meunet", "measured_as"]) == {c.key() for c in stage1}  # other rows' keys
    assert df.loc[df["arch"] == "cascade", "measured_as"].isna().all()


def test_bench_validate_measures_each_step_once(monkeypatch, tmp_path):
    """On the GPU, the first configuration of each step is measured and the others of its step take its record as it
    comes (stored at once: a hard stop loses none); a step measured by an earlier run is theirs from the start."""
    from bench.version import code_version

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda device=None: fake_cuda.NAME)
    given: list = []

    oom: set[str] = set()  # the configurations whose step runs out of memory

    def sweep(configs, out, *a, on_done, **k):  # a measurement per configuration, stored as run_sweep stores it
        for n, c in enumerate(configs):
            given.append(c)
            rec = {**R.config_columns(c), R.STATUS: R.OOM if c.key() in oom else R.OK, R.CODE_VERSION: code_version(),
                   R.DEVICE_NAME: fake_cuda.NAME, R.PEAK_ALLOCATED: 2**30 + n, R.PEAK_RESERVED: 2**31,
                   R.PRED_DEVICE_ALLOCATED: 2**30, R.PRED_DEVICE_RESERVED: 2**31}
            store.append(out, rec)
            on_done(c, rec)
        return []

    monkeypatch.setattr(executor, "run_sweep", sweep)
    args = ["validate", "--arch", "meunet", "--arch", "cascade", "--out", str(tmp_path / "v"), "--fixtures",
            str(tmp_path / "fx")]
    res = CliRunner().invoke(app, args)
    grid = V.grid(["meunet", "cascade"])  # 16 + 32: the meU-net's 8 training ones are the cascade's stage 1 (k = 1.5)
    assert len(given) == 40 and {c.key() for c in given} < {c.key() for c in grid}, res.output
    assert "8 configuration(s) took the measurement of one that runs the same step" in res.output, res.output
    runs = tmp_path / "v" / V.report_name(fake_cuda.NAME, __import__("torch").__version__)
    latest = store.latest(runs)
    assert {c.key() for c in grid} == set(latest)  # every configuration has its record
    took = {k: r for k, r in latest.items() if r.get(R.MEASURED_AS)}
    assert len(took) == 8 and all(latest[r[R.MEASURED_AS]][R.PEAK_ALLOCATED] == r[R.PEAK_ALLOCATED]
                                  for r in took.values())
    summary = (tmp_path / "v" / f"{runs.name}.md").read_text()
    assert "48 of 48 configurations measured" in summary
    assert "8 of these 48 took the measurement of another configuration that runs the same step" in summary
    assert "40 measurements. Each configuration counts" in summary
    given.clear()
    again = CliRunner().invoke(app, args)  # all measured: nothing given to measure, all kept
    assert given == [] and "48 configuration(s) already measured" in again.output, again.output
    # a step the store holds under one name only (a run from before): the others take it without a worker
    lines = [json.loads(x) for x in store.path(runs).read_text().splitlines()]
    store.path(runs).write_text("".join(json.dumps(r) + "\n" for r in lines if not r.get(R.MEASURED_AS)))
    third = CliRunner().invoke(app, args)
    assert given == [] and "8 configuration(s) took the measurement" in third.output, third.output
    assert "40 configuration(s) already measured" in third.output
    # a step that fails fails alike for each of its configurations: said for each, and measured again next time
    fresh = ["validate", "--arch", "meunet", "--arch", "cascade", "--out", str(tmp_path / "w"), "--fixtures",
             str(tmp_path / "fx")]
    first = next(c for c in grid if c.arch == "meunet" and c.mode == "train")
    oom.add(first.key())
    CliRunner().invoke(app, fresh)
    failed = {k: r for k, r in store.latest(tmp_path / "w" / runs.name).items() if r[R.STATUS] == R.OOM}
    assert len(failed) == 2 and [bool(r.get(R.MEASURED_AS)) for r in failed.values()].count(True) == 1
    summary = (tmp_path / "w" / f"{runs.name}.md").read_text()
    assert "46 of 48 configurations measured" in summary and summary.count(": oom") == 2, summary
    oom.clear()
    given.clear()
    CliRunner().invoke(app, fresh)
    assert [c.key() for c in given] == [first.key()]  # the step measured again, and its others take it
    assert all(r[R.STATUS] == R.OK for r in store.latest(tmp_path / "w" / runs.name).values())
