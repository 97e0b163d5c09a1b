"""Bad input across the commands: one ``error:`` line before any work, never a traceback. Paths first (a
folder where a file goes, a file where a folder goes, a file of the wrong kind), then values that used to
pass the checks (0 channels, an infinite memory size, a learning rate of nan, a negative seed)."""

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import console
from bench.cli import app

runner = CliRunner()
RECORDED = "reports/validation/nvidia-h200-2.11.0+cu130"


@pytest.fixture
def paths(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not what a command reads\n")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    events = tmp_path / "folder.events.csv"
    events.mkdir()
    store_folder = tmp_path / "run"
    (store_folder / "results.jsonl").mkdir(parents=True)
    bench_json = tmp_path / "other.json"
    bench_json.write_text(json.dumps({"not": "a benchmark"}))
    return {"TEXT": str(text), "FOLDER": str(folder), "EVENTS_FOLDER": str(events), "STORE_FOLDER": str(store_folder),
            "JSON": str(bench_json), "UNDER_TEXT": str(text / "sub")}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["compare", "--baseline", "TEXT"], 2, "is not a baseline CSV"),
    (["compare", "--tolerance", "200"], 2, "--tolerance 200 is a fraction, 20000%: write 200% for 200 percent"),
    (["compare", "--baseline", "FOLDER"], 2, "is a folder, not a baseline CSV"),
    (["compare", "--from-pytest-benchmark", "TEXT", "TEXT"], 2, "is not a saved pytest-benchmark run"),
    (["compare", "--from-pytest-benchmark", "JSON", "JSON"], 2, "is not a saved pytest-benchmark run"),
    (["baseline", "--path", "TEXT"], 2, "is not a baseline CSV"),
    (["baseline", "--update", "--path", "FOLDER"], 2, "is a folder: give a file name"),
    (["baseline", "--update", "--path", "UNDER_TEXT/m.csv"], 2, "Not a directory"),
    (["report", "--out", RECORDED, "--to", "UNDER_TEXT"], 2, "Not a directory"),
    (["fit", "--arch", "unet", "--out", "UNDER_TEXT"], 2, "Not a directory"),
    (["paper", "--out", "UNDER_TEXT"], 2, "Not a directory"),
    (["validate", "--published", "--out", "UNDER_TEXT"], 2, "Not a directory"),
    (["validate", "--recorded", RECORDED, "--out", "UNDER_TEXT"], 2, "Not a directory"),
    (["validate", "--recorded", RECORDED, "--fixtures", "FOLDER"], 2, "--fixtures is for the grid measured on a GPU"),
    (["validate", "--published", "--timeout", "5"], 2, "--timeout is for the grid measured on a GPU"),
    (["replay", "TEXT", "--plot", "FOLDER"], 2, "is a folder: give a file name"),
    (["trace2events", "TEXT", "EVENTS_FOLDER"], 2, "is a folder: give a file name"),
    (["run", "--backend", "predict", "--out", ""], 2, "--out is empty: give a path"),  # not the current folder
    (["run", "--backend", "predict", "--snapshot="], 2, "--snapshot is empty: give a path"),
    (["plan", "--shape", "128x128x128", "-o", ""], 2, "-o is empty: give a path"),
    (["report", "--to", ""], 2, "--to is empty: give a path"),
    (["replay", ""], 2, "an empty path: give a file"),
    (["status", "--out", "STORE_FOLDER"], 1, "results.jsonl: Is a directory"),
    (["report", "--out", "STORE_FOLDER"], 1, "results.jsonl: Is a directory"),
])
def test_a_path_of_the_wrong_kind_is_one_line(paths, args, code, message):
    args = [paths.get(a.split("/")[0], a.split("/")[0]) + a[len(a.split("/")[0]):] for a in args]
    res = runner.invoke(app, args)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == code and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--in-channels", "0"], "--in-channels must be >= 1; got 0"),
    (["run", "--classes", "0"], "--classes must be >= 2"),
    (["fit", "--in-channels", "0"], "--in-channels must be >= 1"),
    (["run", "--gpu-memory", "infGB"], "a memory size must be a positive, finite number"),
    (["fit", "--budget", "1e400GB"], "a memory size must be a positive, finite number"),
    (["run", "--gpu-memory", "1MB"], "'1MB' is 976.6 KiB, less than a CUDA context alone"),  # a capacity: nothing fits
    (["run", "--dice", "--gpu-memory", "1MB"], "less than a CUDA context alone"),  # the CPU run's screen
    (["run", "--set", "recipe.lr=nan"], "recipe.lr='nan' is not valid"),
    (["run", "--set", "recipe.lr=inf"], "recipe.lr='inf' is not valid"),
    (["run", "--dice", "--seed", "-1"], "Invalid value for '--seed'"),
    (["paper", "--dice", "--seed", "-1"], "Invalid value for '--seed'"),
    (["paper", "--dice", "--precision", "bf16"], "--precision is for the memory tables"),
    (["paper", "--dice", "--cascade-reading", "paper"], "--cascade-reading is for the memory tables"),
    (["fit", "--confirm"], "--confirm measures the fitted configurations on a CUDA GPU"),
    (["run", "--train-iterations", "5"], "--train-iterations is an option of Dice runs: add --dice"),
    (["run", "--data", "/no/such/data"], "--data is an option of Dice runs: add --dice"),
    (["run", "--weighting", "gaussian"], "--weighting is an option of Dice runs: add --dice"),
    (["run", "--no-skip"], "--no-skip measures configurations predicted not to fit"),
    (["run", "--arch", "unet", "--size", "16", "--batch", "1"], "leaves its BatchNorm3d one value per channel"),
    (["run", "--dice", "--no-skip"], "nothing is screened here: screening needs --gpu-memory"),  # a CPU Dice run
    (["run", "--alloc-conf", "expandable_segment:True"], "did you mean expandable_segments?"),  # a typo PyTorch refuses
    (["run", "--device", "cpu"], "--device is the old name of --backend: give one of them"),  # --backend predict too
    (["run", "--snapshot", "/proc/segmem-nope"], "cannot write into /proc/segmem-nope: No such file"),  # only mkdir tells
    (["run", "--arch", "cascade", "--size", "16", "--batch", "2", "--batch", "1"], "cascade's stage1_k1.5: meunet"),
])
def test_values_that_used_to_pass_are_refused(tmp_path, cpu_only, args, message):
    backend = ["--backend", "predict"] if args[0] == "run" and "--dice" not in args else []
    res = runner.invoke(app, [*args, *backend, "--out", str(tmp_path / "out")])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.output
    assert not (tmp_path / "out").exists()  # refused before anything was made


@pytest.mark.parametrize(("args", "message"), [
    (["--shape", "128x128x128", "--channels", "-2"], "--channels is a count of 1 or more"),
    (["--shape", "128x128x128", "--channels", "0"], "--channels is a count of 1 or more"),
    (["--fingerprint", "fp.json", "--spacing", "5x5x5"], "--spacing describes a fingerprint given by --shape"),
    (["--dataset", "raw", "--classes", "4"], "--dataset reads channels and classes from its dataset.json"),
])
def test_plan_options_that_would_be_ignored_or_misread_are_refused(args, message):
    res = CliRunner().invoke(app, ["plan", *args])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and message in lines[0], res.output


def test_checking_a_folder_leaves_nothing(tmp_path):
    """The check tries what it checks (makes the folders, writes a file) and takes it back."""
    from bench.cli.common import check_writable_dir

    check_writable_dir(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []


SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_validate.sh"


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"FRESH": "2"}, [], "FRESH must be 0 or 1"),
    ({"SMOKE": "yes"}, [], "SMOKE must be 0 or 1"),
    ({"GRACE": "1.5"}, [], "GRACE must be a whole number; got '1.5'"),
    ({"SHARE": "0"}, [], "SHARE must be 1 or more"),
    ({}, ["abc"], "LIMIT_S must be a whole number; got 'abc'"),
    ({}, [], "no wheels in .whl/"),  # run where there are none
    ({}, ["WHEEL"], "no CUDA GPU visible to torch here"),  # a wheel there: the GPU is checked next
])
def test_device_script_refuses_before_any_work(tmp_path, env, args, message):
    """scripts/device_validate.sh spends lent GPU time: a typo or the wrong machine is one error line on stderr and
    exit 2 before it installs or measures anything (nothing is made, not even its output folder)."""
    import os
    import subprocess

    import torch

    if args == ["WHEEL"]:
        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is here: the script would run")
        (tmp_path / ".whl").mkdir()
        (tmp_path / ".whl" / "segmem_stand_in-0-py3-none-any.whl").write_bytes(b"")
        args = []
    res = subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OUT": str(tmp_path / "out"), **env})
    assert res.returncode == 2 and res.stdout == "", (res.returncode, res.stdout)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


AHEAD_DEPTH = SCRIPT.with_name("ahead_depth.py")


@pytest.mark.parametrize(("args", "message"), [
    (["--executors", "0", "x"], "--executors must be 1 or more"),
    (["--executors", "x", "x"], "argument --executors: invalid int value: 'x'"),
    (["/nonexistent"], "no bench validate records in /nonexistent"),
    ([], "the following arguments are required: run"),
])
def test_ahead_depth_refuses_in_one_line(args, message):
    """scripts/ahead_depth.py's bad input is one line on stderr and exit 2, as bench's (argparse's own error
    would print its usage line first)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, str(AHEAD_DEPTH), *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == "", (res.returncode, res.stdout)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr


def test_a_recorded_run_with_nothing_measured_on_cuda_makes_no_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps({"key": "unet-train-32", "status": "ok", "backend": "cpu"}) + "\n")
    res = runner.invoke(app, ["validate", "--recorded", str(run), "--out", str(tmp_path / "summary" / "x")])
    assert res.exit_code == 2 and "no configuration of the validation grid was measured on CUDA" in res.output
    assert not (tmp_path / "summary").exists()


def test_a_network_that_warns_before_it_fails_is_one_line(tmp_path, monkeypatch):
    """Building with a bad value warns (torch: zero-element tensors) and then fails: the error line alone."""
    (tmp_path / "warning_nets.py").write_text(
        "from torch import nn\n"
        "def build(in_channels, num_classes, width=8):\n"
        "    return nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.Conv3d(width, num_classes, 1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(warnings, "showwarning", console._show_store_warning)  # as bench shows them, not pytest
    warnings.simplefilter("always")
    res = runner.invoke(app, ["run", "--backend", "predict", "--arch", "warning_nets:build", "--set", "width=0",
                              "--size", "32", "--out", str(tmp_path / "out")])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: warning_nets:build"), res.output
