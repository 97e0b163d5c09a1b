"""`bench plan` and `bench run --plans`: nnU-Net's plans out of a fingerprint, and into a run."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from architectures import nnunet_plans
from bench.cli import app
from bench.results.paper import PAPER_PLANS
from bench.sweep import store

runner = CliRunner()
WIDE = {"COLUMNS": "300"}


def _one_line(res) -> str:
    """The error as shown, and that it is one line."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("plans") / "plans.json"
    res = runner.invoke(app, ["plan", "--shape", "500x512x512", "--spacing", "1x0.78x0.78", "--channels", "CT,PET",
                              "--classes", "4", "--planner", "resenc_xl", "-o", str(out)], env=WIDE)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_plan_writes_nnunets_plans_and_dataset_json(written):
    out, shown = written
    plans = json.loads(out.read_text())
    assert plans["experiment_planner_used"] == "nnUNetPlannerResEncXL"
    assert plans["segmem"]["gpu_memory_target_in_gb"] == 40
    assert nnunet_plans.data_shape(out) == (2, 4)  # the dataset.json beside: CT + PET, 4 classes
    for name in nnunet_plans.three_d_configurations(plans):
        c = nnunet_plans.configuration(plans, name)
        # every configuration is printed with its patch, batch, network class and stage count
        assert any(name in ln and "x".join(map(str, c.patch)) in ln and f" {c.batch} " in ln
                   and "ResidualEncoderUNet" in ln and f" {len(c.strides)} " in ln for ln in shown.splitlines()), shown


def test_run_takes_network_patch_batch_and_data_shape_from_the_plans(tmp_path, monkeypatch):
    """nnU-Net's elongated microCT plan (224x112x96: per-axis divisors 32x16x16) runs at its own patch."""
    conf = nnunet_plans.configuration(PAPER_PLANS, "3d_fullres")
    res = runner.invoke(app, ["run", "--backend", "predict", "--arch", "nnunet", "--plans", str(PAPER_PLANS),
                              "--configuration", "3d_fullres", "--mode", "infer", "--out", str(tmp_path)], env=WIDE)
    assert res.exit_code == 0, res.output
    rec = pd.DataFrame(store.records(tmp_path)).iloc[0]
    assert rec["status"] == "ok" and rec["size"] == "x".join(map(str, conf.patch)) and rec["batch"] == conf.batch
    assert rec["arch"] == nnunet_plans.spec_name(PAPER_PLANS, "3d_fullres")
    assert rec["arch_key"] == f"nnunet-plans:3d_fullres@sha256:{nnunet_plans.digest(PAPER_PLANS)[:16]}"
    assert (rec["in_channels"], rec["num_classes"]) == (1, 3)
    assert rec["params"] == sum(p.numel() for p in nnunet_plans.build_network(PAPER_PLANS, "3d_fullres").parameters())
    # shown by its short name (the file's stem and digest) on the console, in the report's tables and plots;
    # the record keeps the path (arch) and the digest (arch_key)
    short = f"nnunet-plans:3d_fullres@{PAPER_PLANS.stem}#{nnunet_plans.digest(PAPER_PLANS)[:6]}"
    assert rec["arch_label"] == short and f"{short} infer " in res.output and str(PAPER_PLANS) not in res.output
    from bench.results import plots

    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, reports, name: figures.setdefault(name, fig) and [])
    res = runner.invoke(app, ["report", "--out", str(tmp_path), "--arch", short], env=WIDE)
    assert res.exit_code == 0, res.output
    md = (tmp_path / "report.md").read_text()
    assert f"| {short} |" in md and str(PAPER_PLANS) not in md
    texts = [t.get_text() for fig in figures.values() for ax in fig.axes
             for t in [*ax.texts, *ax.get_yticklabels(), *(ax.get_legend().get_texts() if ax.get_legend() else [])]]
    assert any(short in t for t in texts) and not any(str(PAPER_PLANS) in t for t in texts), texts


@pytest.mark.parametrize("args,message", [
    (["--plans", "{dataset}"], "not an nnU-Net plans file"),
    (["--plans", "{plans}", "--configuration", "3d_huge"], "they have: 2d, 3d_lowres, 3d_fullres, 3d_cascade_fullres"),
    (["--plans", "{plans}", "--size", "224x112x100"], "multiples of 32x16x16"),
    (["--configuration", "3d_fullres"], "give it with --plans FILE"),
    (["--plans", "{plans}", "--arch", "unet"], "--plans builds the network the plans name"),
    (["--plans", "{plans}", "--dice"], "--dice does not take --plans yet"),
    (["--plans", "{plans}", "--arch", "nnunet_cascade", "--configuration", "3d_fullres"],
     "--arch nnunet_cascade --plans runs the cascade the plans name"),
])
def test_bad_plans_runs_fail_in_one_line_before_anything_runs(tmp_path, args, message):
    paths = {"plans": str(PAPER_PLANS), "dataset": str(PAPER_PLANS.with_name("dataset.json"))}
    res = runner.invoke(app, ["run", "--backend", "predict", "--out", str(tmp_path)] + [a.format(**paths) for a in args],
                        env=WIDE)
    assert res.exit_code == 2 and message in _one_line(res)
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize("args,message", [
    (["--shape", "500x512"], "three spatial dimensions"),
    (["--shape", "64x64x64", "--spacing", "nanx1x1"], "each of DxHxW must be a positive number"),
    (["--shape", "64x0x64"], "each of DxHxW must be a positive number"),
    ([], "give one fingerprint"),
    (["--fingerprint", "{plans}"], "not an nnU-Net dataset_fingerprint.json"),
    (["--shape", "64x64x64", "--classes", "1"], "at least 2"),
    (["--shape", "64x64x64", "--gpu-memory-target", "-8"], "--gpu-memory-target must be a positive number of GB"),
    (["--shape", "64x64x64", "--gpu-memory-target", "0"], "--gpu-memory-target must be a positive number of GB"),
])
def test_bad_fingerprints_fail_in_one_line(args, message):
    res = runner.invoke(app, ["plan"] + [a.format(plans=PAPER_PLANS) for a in args], env=WIDE)
    assert res.exit_code == 2 and message in _one_line(res)


def test_the_committed_paper_plans_are_what_nnunetv2_plans_now():
    """reports/plans/paper_microct is `bench plan`'s output for the paper's fingerprint (rewrite it when
    nnunetv2 changes its planner)."""
    from architectures import nnunet_planner as NP

    fp = NP.Fingerprint.from_median((1072, 470, 470), (0.00295,) * 3, 1, 3, cases=24)
    plans = NP.plan(fp)
    committed = json.loads(PAPER_PLANS.read_text())
    for name in ("3d_lowres", "3d_fullres"):
        assert nnunet_plans.configuration(plans, name) == nnunet_plans.configuration(committed, name)


def test_plan_into_a_folder_names_the_file_after_the_plans(tmp_path):
    """``-o DIR`` (an existing folder, or a path that is not a .json file) writes DIR/<plans name>.json beside
    dataset.json, as nnU-Net lays out a preprocessed dataset, instead of a file named like the folder."""
    res = runner.invoke(app, ["plan", "--shape", "64x64x64", "--spacing", "1x1x1", "--channels", "CT",
                              "-o", str(tmp_path / "out")], env=WIDE)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset.json", "nnUNetPlans.json"]


def test_a_different_dataset_json_beside_is_kept_and_not_said_written(tmp_path):
    args = ["plan", "--shape", "64x64x64", "--spacing", "1x1x1", "-o", str(tmp_path / "a.json")]
    assert runner.invoke(app, [*args, "--channels", "CT"], env=WIDE).exit_code == 0
    before = (tmp_path / "dataset.json").read_text()
    res = runner.invoke(app, [*args, "--channels", "MRI"], env=WIDE)
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and (tmp_path / "dataset.json").read_text() == before
    assert "exists and differs: left as it is" in text and f"{tmp_path / 'a.json'} was replaced" in text
    assert f"written: {tmp_path / 'a.json'}; run it with" in text  # not "and dataset.json"
