"""`bench run` end to end on a tiny CPU sweep, skipping, bad arguments, and worker isolation."""

import dataclasses
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench import record
from bench.cli import app
from bench.sweep import store

runner = CliRunner()
COLUMNS = {"key", "timestamp", "git_commit", "arch", "stage", "mode", "backend", "device_name", "precision", "batch",
           "size", "input_shapes", "options", "status", "voxels_per_step", "params", "flops_per_step",
           "cpu_live_peak_bytes", "cpu_rss_peak_increase_bytes", "pred_peak_allocated_bytes",
           "pred_peak_reserved_bytes", "memtracker_peak_bytes", "step_time_median_s", "step_time_iqr_s",
           "throughput_voxels_per_s", "throughput_samples_per_s", "env_torch", "env_python", "env_os"}


def test_tiny_sweep_records_then_skips(tmp_path):
    args = ["run", "--arch", "meunet", "--size", "32", "--batch", "1", "--mode", "train", "--mode", "infer",
            "--backend", "cpu", "--repeats", "1", "--out", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    df = pd.read_json(store.path(tmp_path), lines=True)
    assert len(df) == 2 and set(df["status"]) == {"ok"}
    assert COLUMNS <= set(df.columns)
    assert not record.undeclared(df.iloc[0].to_dict())
    train = df[df["mode"] == "train"].iloc[0]
    assert json.loads(train["input_shapes"]) == {"image": [32, 32, 32], "image_expanded": [48, 48, 48]}
    assert train["voxels_per_step"] == 32**3 + 48**3
    assert train["cpu_live_peak_bytes"] > 4 * train["params"]  # weights, Adam state and activations
    assert train["pred_peak_live_bytes"] == pytest.approx(train["cpu_live_peak_bytes"], rel=0.01)
    assert 0 < train["step_time_median_s"] < 60
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "2 skipped" in res.output
    assert len(store.load(tmp_path)) == 2


def test_predict_device_on_any_machine(tmp_path):
    res = runner.invoke(app, ["run", "--arch", "cascade", "--backend", "predict", "--size", "32", "--batch", "1",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    df = store.load(tmp_path)
    assert sorted(df["stage"]) == ["stage1_k1.5", "stage1_k1.75", "stage2"]  # in the order they finished
    assert (df["pred_peak_allocated_bytes"] > 0).all() and set(df["precision"]) == {"fp16"}


@pytest.mark.parametrize(("args", "message"), [
    (["--arch", "unet4d"], "unknown architecture 'unet4d'; valid:"),
    (["--arch", "unet", "--size", "40"], "multiple of 16"),
    (["--arch", "unet", "--batch", "0"], "batch must be >= 1"),
    (["--arch", "unet", "--size", "big"], "is not an edge"),
    (["--arch", "unet", "--precision", "fp8"], "'fp8' is not one of 'fp32', 'bf16', 'fp16'"),
    (["--arch", "meunet", "--set", "expansion=0.5"], "expansion must be >= 1"),
    (["--arch", "meunet", "--set", "expansion=abc"], "meunet: expansion takes a number (default 1.5); got 'abc'"),
    (["--arch", "unet", "--set", "norm=bogus"], "norm must be one of"),
    (["--arch", "nnunet", "--checkpointing"], "no gradient checkpointing option"),
    (["--arch", "unet", "--set", "widht=3"], "unknown override"),
    (["--arch", "unet", "--jobs", "0"], "--jobs must be >= 1; got 0"),
    (["--arch", "unet", "--timeout", "0"], "--timeout must be a positive number of seconds; got 0"),
    (["--arch", "unet", "--gpu-memory", "lots"], "'lots' is not a memory size"),
    (["--arch", "unet", "--executor", "ray"], "'ray' is not one of 'local', 'slurm'"),
    (["--arch", "unet", "--alloc-conf", "max_split_size_mb:5"], "--alloc-conf: bad value for allocator option max_split_size_mb"),
    (["--arch", "unet", "--alloc-conf", "expandable_segments"], "is not key:value"),
])
def test_bad_arguments_fail_before_anything_runs(tmp_path, args, message):
    res = runner.invoke(app, ["run", *args, "--backend", "cpu", "--out", str(tmp_path / "out"),
                              "--snapshot", str(tmp_path / "snaps")])
    assert res.exit_code == 2
    assert message in " ".join(res.output.replace("│", " ").split())
    assert not any(tmp_path.iterdir())  # no results folder, lock or snapshot folder made


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, cpu_only):
    res = runner.invoke(app, ["run", "--arch", "unet", "--backend", "cuda", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no CUDA GPU" in res.output
    res = runner.invoke(app, ["run", "--arch", "unet", "--device", "cuda", "--out", str(tmp_path)])  # the old name
    assert res.exit_code == 2 and "no CUDA GPU" in res.output


def test_a_timeout_is_a_row_with_its_configuration_and_fails_the_exit_code(tmp_path):
    args = ["run", "--arch", "unet", "--size", "32", "--size", "64", "--batch", "1", "--backend", "predict",
            "--out", str(tmp_path)]
    res = runner.invoke(app, [*args, "--timeout", "0.5"])
    assert res.exit_code == 1 and "2 configuration(s) failed" in res.output, res.output
    df = store.load(tmp_path).sort_values("size")  # (records are stored as configurations finish)
    assert list(df["status"]) == ["timeout", "timeout"]
    assert list(df["size"]) == ["32x32x32", "64x64x64"] and set(df["precision"]) == {"fp32"}
    assert (df["timeout_s"] == 0.5).all()
    # a timeout under a shorter limit is no result: a longer limit re-runs it without --force
    res = runner.invoke(app, [*args, "--timeout", "600"])
    assert res.exit_code == 0, res.output
    assert list(store.load(tmp_path)["status"]) == ["ok", "ok"]
    assert len(store.load(tmp_path, history=True)) == 4


def test_list_shows_pinned_counts():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for figure in ("2,512,515", "2,512,566", "19,072,899", "65,175,347", "31,196,399"):
        assert figure in res.output


def test_list_says_how_to_get_monai_when_it_is_missing(monkeypatch):
    from architectures import monai_nets

    monkeypatch.setattr(monai_nets, "available", lambda: False)
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "pip install 'segmem[monai]'" in " ".join(res.output.split())  # not eaten as markup


def test_dice_run_records_dice_beside_memory(tmp_path):
    res = runner.invoke(app, ["run", "--arch", "unet", "--dice", "--size", "32", "--batch", "2", "--backend", "cpu",
                              "--train-iterations", "3", "--data", "phantom:64x48x48", "--repeats", "1",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rec = store.load(tmp_path).iloc[0]
    assert rec["status"] == "ok" and rec["dice_status"] == "ok", rec.get("dice_error")
    assert not record.undeclared(rec.to_dict())
    assert rec["train_iterations"] == 3 and rec["test_volumes"] == 2
    for col in ("dice_mid_gut", "dice_hind_gut", "dice_mean_fg", "threshold_dice_mid_gut", "threshold_dice_hind_gut"):
        assert 0.0 <= rec[col] <= 1.0
    assert rec["infer_volume_cpu_live_peak_bytes"] > 0 and rec["cpu_live_peak_bytes"] > 0
    assert "unet: iteration 3" in res.output  # the worker's progress reaches the console


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/dataset"], "does not exist"),
    (["--data", "phantom:12x3"], "phantom size"),
    (["--weighting", "median"], "'median' is not one of 'centre', 'gaussian', 'uniform'"),
    (["--backend", "predict"], "use --backend cpu or cuda"),
    (["--mode", "infer"], "needs --mode train"),
])
def test_bad_dice_arguments(tmp_path, args, message):
    res = runner.invoke(app, ["run", "--arch", "unet", "--dice", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and message in " ".join(res.output.replace("│", " ").split()), res.output
    assert not store.path(tmp_path).exists()


def test_dice_on_an_absolute_data_path_runs_every_configuration(tmp_path):
    import numpy as np
    import tifffile

    data = tmp_path / "scans [red]"  # an absolute path with brackets: printed as text, never as markup
    for sub in ("images", "labels"):
        (data / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.zeros((40, 40, 40), np.uint8)
        label[10:30, 10:30, 10:20], label[12:20, 12:20, 24:32] = 1, 2
        tifffile.imwrite(data / "images" / f"v{i}.tif", (label * 50 + rng.normal(0, 5, label.shape)).astype(np.float32))
        tifffile.imwrite(data / "labels" / f"v{i}.tif", label)
    res = runner.invoke(app, ["run", "--arch", "unet", "--dice", "--data", str(data), "--size", "32", "--batch", "1",
                              "--batch", "2", "--backend", "cpu", "--train-iterations", "1", "--repeats", "1",
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "Dice runs: training 1 iterations per stage; timeout per configuration 15 min" in res.output
    df = store.load(tmp_path / "out").sort_values("batch")
    assert list(df["batch"]) == [1, 2] and set(df["dice_status"]) == {"ok"} and set(df["data"]) == {str(data)}
    assert str(data) in " ".join(res.output.split())


def _pred_columns(out) -> pd.DataFrame:
    df = store.load(out).set_index("key").sort_index()
    return df[[c for c in df.columns if c.startswith("pred_") and c != "pred_time_s"]]


@pytest.mark.slow
def test_a_parallel_prediction_sweep_gives_the_sequential_records(tmp_path):
    args = ["run", "--arch", "unet", "--size", "32", "--mode", "train", "--mode", "infer", "--backend", "predict"]
    res = runner.invoke(app, [*args, "--batch", "1", "--batch", "2", "--jobs", "1", "--out", str(tmp_path / "1")])
    assert res.exit_code == 0, res.output
    # two of them again in two processes at once, one a training step, the other an inference
    res = runner.invoke(app, [*args, "--batch", "2", "--jobs", "2", "--out", str(tmp_path / "2")])
    assert res.exit_code == 0, res.output
    seq, par = _pred_columns(tmp_path / "1"), _pred_columns(tmp_path / "2")
    assert len(seq) == 4 and len(par) == 2 and len(seq.columns) >= 9
    seq = seq.loc[par.index]
    pd.testing.assert_frame_equal(seq, par, check_exact=True)


@pytest.mark.slow
def test_gpu_memory_skips_what_is_predicted_not_to_fit_and_no_skip_measures_it(tmp_path, monkeypatch):
    """The screen skips a configuration exactly when the device model's nvidia-smi figure exceeds the GPU
    memory, the decision of --backend predict --gpu-memory on the same configurations."""
    from bench.sweep import worker
    from bench.sweep.config import RunConfig

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")  # restored after the test (the worker sets it)
    # (batch 2: at 16^3 the U-net's bottleneck is one voxel, whose batch norm needs two values per channel)
    small, large = (RunConfig("unet", (s, s, s), 2, "train", "predict", precision="fp32") for s in (16, 32))
    need = [worker.run(c, memtracker=False)[record.PRED_NVIDIA_SMI] for c in (small, large)]
    budget = (need[0] + need[1]) // 2
    args = ["run", "--arch", "unet", "--size", "16", "--size", "32", "--batch", "2", "--precision", "fp32",
            "--gpu-memory", f"{budget}B"]
    res = runner.invoke(app, [*args, "--backend", "cpu", "--repeats", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "1 predicted_oom, 1 ok" in res.output, res.output
    df = store.load(tmp_path).set_index("size")
    assert df.loc["32x32x32", "status"] == "predicted_oom" and pd.isna(df.loc["32x32x32", "cpu_live_peak_bytes"])
    assert df.loc["32x32x32", "gpu_budget_bytes"] == df.loc["32x32x32", "pred_capacity_bytes"] == budget
    assert df.loc["32x32x32", "pred_nvidia_smi_bytes"] > budget
    assert df.loc["16x16x16", "status"] == "ok" and df.loc["16x16x16", "cpu_live_peak_bytes"] > 0
    assert df.loc["16x16x16", "pred_nvidia_smi_bytes"] == need[0] <= budget  # the figure the run records
    # the same decision as the prediction at that GPU memory
    res = runner.invoke(app, [*args, "--backend", "predict", "--out", str(tmp_path / "predict")])
    assert res.exit_code == 0, res.output
    pred = store.load(tmp_path / "predict").set_index("size")
    assert dict(pred["status"]) == {"16x16x16": "ok", "32x32x32": "oom"}
    assert pred.loc["32x32x32", "pred_nvidia_smi_bytes"] == df.loc["32x32x32", "pred_nvidia_smi_bytes"]
    res = runner.invoke(app, [*args, "--backend", "cpu", "--repeats", "1", "--out", str(tmp_path), "--no-skip"])
    assert res.exit_code == 0, res.output
    df = store.load(tmp_path).set_index("size")
    assert df.loc["32x32x32", "status"] == "ok" and df.loc["32x32x32", "cpu_live_peak_bytes"] > 0


def test_allocator_options_are_in_the_key_the_record_and_the_prediction(monkeypatch):
    """A configuration run under expandable segments is another configuration: its own key, the option in its
    record, and a prediction that follows it (expandable segments map 2 MiB pages, not 20 MiB blocks)."""
    from bench import record as R
    from bench.sweep import worker
    from bench.sweep.config import RunConfig

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")  # restored after the test (the worker sets it)
    default = RunConfig("unet", (32, 32, 32), 1, backend="predict")
    expandable = dataclasses.replace(default, alloc_conf="expandable_segments:True")
    assert default.key() != expandable.key() and "alloc(expandable_segments:True)" in expandable.label()
    rec0, rec1 = worker.run(default, memtracker=False), worker.run(expandable, memtracker=False)
    assert (rec0[R.ALLOC_CONF], rec1[R.ALLOC_CONF]) == ("", "expandable_segments:True")
    assert rec1[R.PRED_RESERVED] < rec0[R.PRED_RESERVED]  # (allocated moves too: a block is handed out unsplit)


@pytest.mark.parametrize(("args", "message", "command"), [
    (["run", "--batch", "x"], "Invalid value for '--batch'", "run"),
    (["run", "--mode", "bogus"], "'bogus' is not one of 'train', 'infer'", "run"),
    (["run", "--nope"], "No such option: --nope", "run"),
    (["runn"], "No such command 'runn'", ""),
    (["replay"], "Missing argument", "replay"),
    (["run", "--out"], "Option '--out' requires an argument", "run"),
])
def test_values_typer_parses_are_one_error_line_too(args, message, command):
    """A value click itself refuses is one line naming the command's help, like every other bad input."""
    res = runner.invoke(app, args, prog_name="bench")
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert lines[0].endswith(f"(see: {' '.join(['bench', command]).strip()} --help)"), lines[0]


def test_a_bare_bench_prints_its_help_once():
    res = runner.invoke(app, [], prog_name="bench")
    assert res.output.count("Usage: bench") == 1 and "validate" in res.output, res.output


def test_a_list_override_runs(tmp_path):
    """--set may give a list (the channels of each level; the options of a configuration then do not hash); a
    value of the wrong kind for its override is one line naming it."""
    res = runner.invoke(app, ["run", "--arch", "unet", "--backend", "predict", "--size", "32", "--batch", "1",
                              "--set", "encoder_channels=[8,16,32,64,128]", "--set", "decoder_channels=[64,32,16,8]",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rec = store.load(tmp_path).iloc[0]
    assert rec["status"] == "ok" and json.loads(rec["options"])["encoder_channels"] == [8, 16, 32, 64, 128]
    for bad, said in (("encoder_channels=banana", "encoder_channels takes a list of positive whole numbers"),
                      ("encoder_channels=[0,16,32,64,128]", "encoder_channels takes a list of positive whole numbers"),
                      ("checkpointing=banana", "checkpointing is true or false"), ("conv_bias=2", "conv_bias is true")):
        res = runner.invoke(app, ["run", "--arch", "unet", "--backend", "predict", "--set", bad,
                                  "--out", str(tmp_path / "no")])
        assert res.exit_code == 2 and said in res.output, res.output


def test_version():
    from bench.version import code_version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"segmem {code_version()}"


def test_a_flag_override_is_one_configuration_whatever_its_word(tmp_path):
    args = ["run", "--arch", "unet", "--backend", "predict", "--size", "32", "--batch", "1", "--out", str(tmp_path)]
    assert runner.invoke(app, [*args, "--set", "checkpointing=on"]).exit_code == 0
    res = runner.invoke(app, [*args, "--set", "checkpointing=true"])
    assert res.exit_code == 0 and "1 skipped" in res.output, res.output  # the same configuration: recorded already
    rec = store.load(tmp_path, history=True)
    assert len(rec) == 1 and json.loads(rec.iloc[0]["options"]) == {"checkpointing": True}


def test_an_interrupted_sweep_says_what_is_kept(capsys, tmp_path):
    import typer

    from bench.cli.run import _said_if_interrupted

    with pytest.raises(typer.Exit) as stop, _said_if_interrupted({"ok": 3, "skipped (recorded)": 1}, 8, tmp_path):
        raise KeyboardInterrupt
    cap = capsys.readouterr()
    said = " ".join((cap.out + cap.err).split())
    assert stop.value.exit_code == 130
    assert "interrupted: 4 of 8 configuration(s) recorded or skipped" in said and "the same command again" in said
