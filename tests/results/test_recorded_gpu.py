"""The prediction against real GPU figures that segmem recorded itself: ``bench validate`` on an H200
(``reports/validation/nvidia-h200-2.11.0+cu130/``: the records, and the ``torch.cuda.memory._snapshot()`` of
each measured step) and on an H100 (``nvidia-h100-80gb-hbm3-2.11.0+cu130/``: nnU-Net ResEnc and the cascades'
stages, none of which the H200 measured). The smaller configurations are predicted again by this code on every
run of the tests, each within the validation's 5% limit of its measured peak allocated (``bench validate
--recorded`` does all of them and writes ``NAME.repredicted.csv``)."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench import record as R
from bench.cli import app
from bench.results import validate as V

RUNS = Path(__file__).resolve().parents[2] / "reports" / "validation" / "nvidia-h200-2.11.0+cu130"
H100 = RUNS.with_name("nvidia-h100-80gb-hbm3-2.11.0+cu130")


def small(rec: dict) -> bool:
    """One configuration of each architecture and mode at the smaller size, benchmark off (2-core CI budget)."""
    return (rec[R.SIZE] in ("80x80x80", "64x64x32", "64x64x64") and not rec.get(R.CUDNN_BENCHMARK)
            and rec[R.PRECISION] == ("fp16" if rec[R.MODE] == "infer" else "fp32"))


@pytest.mark.slow
def test_the_recorded_h200_configurations_are_predicted_within_the_validation_limit():
    df = V.repredict(RUNS, V.measured(RUNS, where=small))
    assert set(df["arch"]) == {"unet", "meunet", "vnet", "nnunet"} and set(df["mode"]) == {"train", "infer"}
    assert (df["status"] == R.OK).all() and df["measured_allocated_bytes"].gt(0).all()
    worst = df.loc[df["allocated_error"].abs().idxmax()]
    assert df["allocated_error"].abs().max() <= V.MAX_LIMIT, worst.to_dict()
    assert set(df["split"]) == {"read", "held out"}  # rows the rules were read from are told apart


def h100_few(rec: dict) -> bool:
    """nnU-Net ResEnc's smaller training and inference, benchmark off: an architecture no rule of the model was read
    from (the cascades' stages, at 160^3 only, take a minute to predict on two cores: ``bench validate --recorded``);
    and the 3D U-Net's smaller fp32 inference, benchmark off, 8.93% high before the model knew that cuDNN's heuristic
    engine writes a 64-channel fp32 output in place (bench.measure.device.HEURISTIC_OUTPUT_IN_PLACE)."""
    return rec[R.SIZE] == "64x64x64" and rec[R.PRECISION] == "fp32" and not rec.get(R.CUDNN_BENCHMARK) and (
        rec[R.ARCH] == "nnunet_resenc" or (rec[R.ARCH], rec[R.MODE]) == ("unet3d", "infer"))


@pytest.mark.slow
def test_the_recorded_h100_configurations_are_predicted_within_the_validation_limit():
    df = V.repredict(H100, V.measured(H100, where=h100_few))
    assert set(zip(df["arch"], df["mode"])) == {("nnunet_resenc", "train"), ("nnunet_resenc", "infer"),
                                                ("unet3d", "infer")}
    assert (df["status"] == R.OK).all()
    # ResEnc: no rule was read from it; the 3D U-Net's inference led to the 64-channel rule, so it counts as read
    assert dict(zip(df["arch"], df["split"])) == {"nnunet_resenc": "held out", "unet3d": "read"}
    assert df["measured_allocated_bytes"].gt(0).all() and df["measured_snapshot"].str.endswith(".cuda.pickle.gz").all()
    worst = df.loc[df["allocated_error"].abs().idxmax()]
    assert df["allocated_error"].abs().max() <= V.MAX_LIMIT, worst.to_dict()
    # the 3D U-Net's peak is at its last 64-channel convolution's workspace: allocated and reserved to 1%
    unet3d = df[df["arch"] == "unet3d"].iloc[0]
    assert abs(unet3d["allocated_error"]) <= 0.01 and abs(unet3d["reserved_error"]) <= 0.01, unet3d.to_dict()


def test_bench_validate_recorded_bad_input(tmp_path):
    res = CliRunner().invoke(app, ["validate", "--recorded", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "--recorded: no such folder: " in res.output
    res = CliRunner().invoke(app, ["validate", "--recorded", str(tmp_path)])
    assert res.exit_code == 2 and "no bench validate records" in res.output and "the runs in it" not in res.output
    res = CliRunner().invoke(app, ["validate", "--recorded", str(RUNS.parent)])  # the folder of the runs: named
    runs = sorted(p.parent.name for p in RUNS.parent.glob("*/results.jsonl"))
    assert len(runs) >= 4 and {H100.name, RUNS.name} <= set(runs)
    assert res.exit_code == 2 and f"the runs in it: {', '.join(runs)}" in " ".join(res.output.split()), res.output
    res = CliRunner().invoke(app, ["validate", "--recorded", str(RUNS.parent / f"{RUNS.name}.csv")])
    assert res.exit_code == 2 and "not a file" in res.output
    res = CliRunner().invoke(app, ["validate", "--recorded", str(RUNS), "--arch", "unet"])
    assert res.exit_code == 2 and "--recorded" in res.output
    res = CliRunner().invoke(app, ["validate", "--jobs", "2"])
    assert res.exit_code == 2 and "--jobs applies only with --recorded" in res.output
    res = CliRunner().invoke(app, ["validate", "--recorded", str(RUNS), "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs" in res.output


def test_bench_validate_recorded_exits_with_the_verdict(tmp_path, monkeypatch):
    """--recorded holds this code's predictions against a GPU's figures: like the GPU run, it exits 1 when they fail
    the limits (a check a CI can run), 0 when they pass."""
    from bench.cli import validation

    runs = tmp_path / "gpu-run"
    runs.mkdir()
    (runs / "results.jsonl").write_text("")
    row = {"split": "held out", "arch": "unet", "stage": "", "size": "32x32x32", "batch": 1, "mode": "train",
           "precision": "fp32", "cudnn_benchmark": False, "status": R.OK, "reserved_error": 0.0}
    for errors, code, said in (([0.0, 0.01], 0, "validation passed"), ([0.0, 0.09], 1, "validation failed")):
        df = pd.DataFrame([{**row, "allocated_error": e} for e in errors])
        monkeypatch.setattr(validation, "_repredicted", lambda *a, df=df, **k: df)
        res = CliRunner().invoke(app, ["validate", "--recorded", str(runs), "--out", str(tmp_path / "out")])
        assert res.exit_code == code and said in res.output, res.output
        assert "Largest |error| of peak allocated: unet train 32x32x32 b1 fp32" in (
            tmp_path / "out" / "gpu-run.repredicted.md").read_text()


def test_records_of_this_code_version_keep_their_own_prediction():
    """``bench validate --keep-measured`` on a GPU predicts again only what another code version recorded: the second
    call of the H100's first session spent 30 s of GPU time predicting the first call's 22 again, with the same code.
    The H100's run holds two sessions' records: 26 of one code version, 126 of a later one."""
    rows = V.measured(H100)
    by_version: dict[str, list] = {}
    for r in rows:
        by_version.setdefault(r[R.CODE_VERSION], []).append(r)
    assert sorted(len(v) for v in by_version.values()) == [26, 126]
    first = next(v for v, rs in by_version.items() if len(rs) == 26)
    assert V.predicted_again(rows, first) == [r for r in rows if r[R.CODE_VERSION] != first]
    assert V.predicted_again(rows, first + ".dirty") == rows == V.predicted_again(rows, None)  # (dirty: may differ)
    mine = by_version[first]
    df = V.repredict(H100, mine, keep_from=first)  # nothing to predict: the records' own predictions
    assert len(df) == 26 and (df["split"] == "held out").all()
    # the later session's summary predicted them again with its code: the same figures
    as_measured = pd.read_csv(H100.with_name(f"{H100.name}.csv"))
    assert set(df["predicted_allocated_bytes"]) <= set(as_measured["predicted_allocated_bytes"])


def test_an_interrupted_recorded_prediction_says_what_it_kept(monkeypatch, tmp_path):
    """Ctrl-C while --recorded predicts: one line saying how far it got and that nothing was written (exit 130);
    any other command interrupted says it stopped, where Typer would exit 130 in silence."""

    def two_then_ctrl_c(runs, rows, jobs, progress, **kw):
        progress(None), progress(None)
        raise KeyboardInterrupt

    monkeypatch.setattr(V, "repredict", two_then_ctrl_c)
    res = CliRunner().invoke(app, ["validate", "--recorded", str(RUNS), "--out", str(tmp_path)])
    steps = len(V.prediction_steps(V.measured(RUNS)))
    assert res.exit_code == 130 and f"interrupted: 2 of {steps} prediction(s) made, none written" in res.output
    assert not list(tmp_path.iterdir())
    monkeypatch.setattr(V, "grid", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))  # a command saying nothing
    res = CliRunner().invoke(app, ["validate", "--recorded", str(RUNS), "--out", str(tmp_path)])
    assert res.exit_code == 130 and res.output.strip() == "interrupted: the command stopped before its end"
