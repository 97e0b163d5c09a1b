"""Bring your own network: a network defined in this file, passed by import path, goes through every
feature of segmem (predict, CPU run, fit, report) with no change to ``bench/``; every bad factory is
one clear line; the user's data shape (channels, classes) is part of the configuration."""

import json

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import architectures
from bench import record
from bench.api import predict
from bench.cli import app
from bench.sweep import store
from bench.sweep.config import RunConfig
from bench.sweep.expand import expand

runner = CliRunner()
HERE = "tests.architectures.test_byo"


class TwoLevelNet(nn.Module):
    """A three-level 3D conv net (two stride-2 downsamplings: inputs must be multiples of 4)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 4):
        super().__init__()
        self.enc = nn.Conv3d(in_channels, width, 3, padding=1)
        self.down1 = nn.Conv3d(width, width, 3, stride=2, padding=1)
        self.down2 = nn.Conv3d(width, width, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose3d(width, width, 2, stride=2)
        self.up1 = nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.head = nn.Conv3d(2 * width, num_classes, 1)

    def forward(self, x):
        e = torch.relu(self.enc(x))
        d1 = torch.relu(self.down1(e))
        d2 = torch.relu(self.down2(d1))
        u1 = torch.cat([d1, self.up2(d2)], 1)
        return self.head(torch.cat([e, self.up1(u1)], 1))


def build_net(in_channels, num_classes, width=4):
    """The factory form: returns the network."""
    return TwoLevelNet(in_channels, num_classes, width)


def needs_depth(in_channels, num_classes, depth, width=4):
    return TwoLevelNet(in_channels, num_classes, width)


def not_a_module(in_channels, num_classes):
    return {"conv": nn.Conv3d(in_channels, num_classes, 1)}


def valid_convs(in_channels, num_classes):
    """Unpadded convolutions: the output is smaller than the label."""
    return nn.Sequential(nn.Conv3d(in_channels, 4, 3), nn.ReLU(), nn.Conv3d(4, num_classes, 3))


def _run(args, out):
    res = runner.invoke(app, [*args, "--out", str(out)])
    return res, " ".join(res.output.replace("│", " ").split())


@pytest.mark.slow  # a CPU sweep, a fit and a report
def test_a_network_by_import_path_is_predicted_run_fitted_and_reported(tmp_path):
    arch = f"{HERE}:build_net"
    res, text = _run(["run", "--arch", arch, "--size", "16", "--batch", "2", "--backend", "cpu", "--repeats", "1",
                      "--set", "width=6"], tmp_path)
    assert res.exit_code == 0, res.output
    assert "probed by fake-tensor forwards: 4" in text  # said what it found
    rec = store.load(tmp_path).iloc[0]
    assert rec["status"] == "ok" and rec["arch"] == arch and json.loads(rec["options"]) == {"width": 6}
    assert rec["params"] == sum(p.numel() for p in build_net(1, 3, 6).parameters())
    assert rec["pred_peak_live_bytes"] == pytest.approx(rec["cpu_live_peak_bytes"], rel=0.01)
    assert not record.undeclared(rec.dropna().to_dict())

    res, _ = _run(["fit", "--arch", arch, "--budget", "1.02GB", "--overhead", "0", "--batch", "1", "--size", "16"],
                  tmp_path)
    assert res.exit_code == 0, res.output
    fit = pd.read_csv(tmp_path / "fit.csv").iloc[0]
    assert fit["largest_cube"] % 4 == 0 and fit["largest_cube"] >= 16  # multiples of the probed divisor
    assert (tmp_path / "fit.md").read_text().splitlines()[0] == "# bench fit: 1.02GB, train"
    res, _ = _run(["fit", "--arch", arch, "--budget", "1.02GB", "--batch", "1", "--size", "16", "--set", "width=6"],
                  tmp_path)  # the answer depends on --set: the table says it was given
    assert res.exit_code == 0 and (tmp_path / "fit.md").read_text().splitlines()[0] == "# bench fit: 1.02GB, train, with width=6"
    res, _ = _run(["report"], tmp_path)
    assert res.exit_code == 0, res.output
    assert arch in (tmp_path / "report.md").read_text()
    assert (tmp_path / "memory_vs_voxels_train_cpu.png").stat().st_size > 0  # its own colour in the plots


def test_a_declared_divisor_replaces_the_probe():
    spec = architectures.spec(f"{HERE}:TwoLevelNet")  # the class itself
    assert spec.divisor_for() == 4 and "probed" in spec.divisor_note()
    assert spec.divisor_for(divisor=8) == 8 and spec.divisor_note(divisor=8) == ""
    with pytest.raises(ValueError, match="multiple of 8"):
        spec.check_size((20, 20, 20), divisor=8)
    spec.check_size((24, 24, 24), divisor=8)
    model = spec.build(2, 5, divisor=8, width=3)  # divisor is the suite's, not the network's
    assert model.enc.in_channels == 2 and model.head.out_channels == 5


@pytest.mark.parametrize(("arch", "sets", "message"), [
    ("no_such_pkg.nets:build", [], "cannot import module 'no_such_pkg.nets': ModuleNotFoundError"),
    (f"{HERE}:buidl_net", [], f"module {HERE} has no attribute 'buidl_net'; it defines: TwoLevelNet, build_net"),
    (f"{HERE}:needs_depth", [], "needs argument(s) that were not given: depth"),
    (f"{HERE}:not_a_module", [], "returned a dict, not an nn.Module"),
    (f"{HERE}:valid_convs", ["--set", "divisor=1"], "the output's spatial size 12x12x12 does not match the label's 16x16x16"),
    (f"{HERE}:valid_convs", [], "no input size ran in fake-tensor forwards"),
    (f"{HERE}:HERE", [], "is of type str, not a factory function"),
    (f"{HERE}:build_net", ["--set", "depth=3"], "unknown override(s) depth; valid: width, divisor"),
])
def test_each_bad_factory_is_one_clear_line(tmp_path, arch, sets, message):
    res, text = _run(["run", "--arch", arch, "--size", "16", "--backend", "cpu", *sets], tmp_path)
    assert res.exit_code == 2
    assert message in text
    assert not store.path(tmp_path).exists()


def test_missing_arguments_are_listed_from_the_signature():
    with pytest.raises(ValueError) as err:
        architectures.spec(f"{HERE}:needs_depth").build()
    assert "(in_channels, num_classes, depth, width=4)" in str(err.value) and "--set depth=..." in str(err.value)


def test_channels_and_classes_are_part_of_the_key_only_when_not_the_defaults():
    base = RunConfig("unet", (32, 32, 32), 2)
    assert RunConfig("unet", (32, 32, 32), 2, in_channels=1, num_classes=3).key() == base.key()
    keys = {base.key(), RunConfig("unet", (32, 32, 32), 2, in_channels=4).key(),
            RunConfig("unet", (32, 32, 32), 2, num_classes=100).key()}
    assert len(keys) == 3
    dice = RunConfig("unet", (32, 32, 32), 4, dice=True)
    assert RunConfig("unet", (32, 32, 32), 4, dice=True, inferer="segmem").key() == dice.key()
    assert RunConfig("unet", (32, 32, 32), 4, dice=True, inferer="monai").key() != dice.key()
    baseline = pd.read_csv("reports/baseline/memory.csv")  # keys made before these fields existed
    row = baseline.iloc[0]
    cfgs = expand([row["arch"]], [tuple(int(s) for s in row["size"].split("x"))], [int(row["batch"])],
                  [row["mode"]], [row["precision"]], "predict")
    assert row["key"] in {c.key() for c in cfgs}


def test_classes_and_channels_change_what_is_predicted_and_are_recorded():
    small = predict("unet", size=32, batch=1)
    wide = predict("unet", size=32, batch=1, in_channels=4, num_classes=20)
    assert (small["in_channels"], small["num_classes"]) == (1, 3)
    assert (wide["in_channels"], wide["num_classes"]) == (4, 20)
    assert wide["params"] == architectures.spec("unet").param_count(4, 20)
    # 17 more logit channels at full resolution, in the forward and its gradient
    assert wide["pred_peak_allocated_bytes"] > small["pred_peak_allocated_bytes"] + 17 * 32**3 * 4


def test_the_python_api_returns_the_record_as_a_dict():
    rec = predict(f"{HERE}:build_net", size=32, batch=2, precision="fp16", width=8)
    assert isinstance(rec, dict) and rec["status"] == "ok" and rec["backend"] == "predict"
    assert rec["size"] == "32x32x32" and rec["precision"] == "fp16" and json.loads(rec["options"]) == {"width": 8}
    assert rec["pred_peak_reserved_bytes"] >= rec["pred_peak_allocated_bytes"] > rec["pred_parameter_bytes"] > 0
    with pytest.raises(ValueError, match="multiple of 4"):
        predict(f"{HERE}:build_net", size=30)


def test_dice_runs_take_channels_and_classes_from_their_data(tmp_path):
    res, text = _run(["run", "--arch", "unet", "--dice", "--classes", "5", "--train-iterations", "1"], tmp_path)
    assert res.exit_code == 2 and "--classes 5 contradicts the data (phantom: 1 channel(s), 3 classes)" in text
