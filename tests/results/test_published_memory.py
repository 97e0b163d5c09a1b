"""The memory prediction against public GPU figures: the committed table
(reports/validation/published_memory.csv) is re-predicted and no row's error may grow; the constants
that no document states are the ones the fit rows give; a prediction at a GPU's capacity is an oom
record where the GPU would run out."""

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from bench import record as R
from bench.measure import device
from bench.results import published_memory as M
from bench.sweep import worker
from bench.sweep.config import RunConfig

TABLE = Path(__file__).resolve().parents[2] / M.TABLE


def test_the_table_has_one_row_per_published_figure_with_its_source_and_configuration():
    t = pd.read_csv(TABLE)
    assert list(t["id"]) == [f.id for f in M.FIGURES]
    assert t["url"].str.match(r"https://github.com/(MIC-DKFZ/nnUNet|Project-MONAI/(MONAI|research-contributions|tutorials))/").all()
    assert set(t["measured"]) == {"nvidia-smi", "allocated", "reserved", "oom"}
    planned = t[t["planner"].notna()]
    assert planned["plans"].str.contains("nnunetv2's").all() and len(planned) == 7
    presets = t[t["id"].str.startswith("presets:")].set_index("id")
    assert list(presets["published_gib"]) == [7.70, 9.10, 22.70, 36.60]  # resenc_presets.md, column VRAM
    assert M.PRESETS_COMMIT in presets["url"].iloc[0]
    # rebuilt from nnunetv2's own plans for the CT-like fingerprint: the networks and patches its planners choose
    assert list(presets["network"]) == ["PlainConvUNet"] + ["ResidualEncoderUNet"] * 3
    assert list(presets["patch"]) == ["128x128x128", "128x128x128", "192x192x192", "224x256x224"]
    assert set(presets["batch"]) == {2}
    assert set(t["split"]) == {"fit", "held-out"}
    # UNETR/BTCV's two batch sizes: the same network by the source's recipe (AdamW), crops = batch x num_samples 4
    unetr = t[t["id"].str.startswith("UNETR-BTCV")].set_index("id")
    assert list(unetr["published_gib"]) == [16.0, 9.0] and list(unetr["batch"]) == [8, 4]
    assert set(unetr["recipe"]) == {'{"optimizer": "adamw", "lr": 0.0001, "weight_decay": 1e-05}'}
    assert M.UNETR_BTCV_COMMIT in unetr["url"].iloc[0] and set(unetr["split"]) == {"held-out"}
    # the AMP tutorial's memory_summary() peaks (MiB) of three runs, each in fp16 and fp32, all held out
    amp = t[t["id"].str.startswith("MONAI-AMP-tutorial")]
    assert sorted((amp["published_gib"] * 1024).round().astype(int)) == [1152, 1730, 1829, 1876, 2788, 2892]
    assert set(amp["measured"]) == {"allocated"} and set(amp["split"]) == {"held-out"} and set(amp["batch"]) == {8}


def test_oom_rows_are_counted_as_met_or_not_and_kept_out_of_the_error_statistics():
    t = pd.read_csv(TABLE)
    assert "oom" not in set(M.summary(t)["measured"])  # an oom row's "error" is no distance to a figure
    assert M.oom_line(t) == "oom rows (the GPU ran out of memory): the model runs out too on 1 of 2"
    assert M.oom_line(t[t["measured"] != "oom"]) is None


def test_a_figure_is_traced_by_its_sources_recipe_and_its_cuda_sets_the_context():
    from bench.measure.device import context_bytes

    unetr = next(f for f in M.FIGURES if f.id == "UNETR-BTCV:batch 1")
    adamw = M.predict_figure(unetr)
    adam = M.predict_figure(dataclasses.replace(unetr, recipe="{}"))
    assert adamw["pred_gib"] == pytest.approx(adam["pred_gib"])  # AdamW holds Adam's two moments: the same bytes
    sgd = M.predict_figure(dataclasses.replace(unetr, recipe='{"optimizer": "sgd"}'))
    assert sgd["pred_gib"] < adam["pred_gib"]  # no moments at all (momentum 0)
    # CUDA 11.1 (2021) loads every kernel at start: the eager context, not the lazy one a current CUDA has
    assert f"context {context_bytes(unetr.gpu, '11.1') / 2**30:.2f} GiB" in adamw["pred_note"]
    assert context_bytes(unetr.gpu, "11.1") > context_bytes(unetr.gpu, None)


@pytest.mark.slow  # 38 s of CPU: four nnunetv2 plannings and eleven traces
def test_repredicting_the_table_makes_no_row_worse():
    recorded = pd.read_csv(TABLE).set_index("id")
    now = M.predict_rows().set_index("id")
    grown = (now["error"].abs() - recorded.loc[now.index, "error"].abs()) > 0.005
    assert not grown.any(), now.loc[grown, ["published_gib", "pred_gib", "error"]]


@pytest.mark.slow
def test_the_fitted_constants_are_those_the_fit_rows_give():
    factor, kernels = M.fit()
    assert factor == device.WORKSPACE_FACTOR and kernels == device.TRAINING_KERNELS


def test_a_prediction_at_a_gpus_capacity_is_an_oom_record_where_the_gpu_would_run_out():
    cfg = RunConfig("unet", (32, 32, 32), 2, backend="predict", precision="fp16", gpu_memory=10**9)
    rec = worker.run(cfg, memtracker=False)  # 1 GB less the context (0.9 GiB) cannot hold the step
    assert rec[R.STATUS] == R.OOM and "tried to allocate" in rec[R.ERROR] and rec[R.OOM_REQUESTED] > 0
    assert rec[R.PRED_CAPACITY] == 10**9 and rec[R.PRED_CONTEXT] == device.context_bytes(None)
    roomy = worker.run(RunConfig("unet", (32, 32, 32), 2, backend="predict", precision="fp16", gpu_memory=8 * 2**30),
                       memtracker=False)
    assert roomy[R.STATUS] == R.OK
    assert roomy[R.PRED_NVIDIA_SMI] == roomy[R.PRED_DEVICE_RESERVED] + roomy[R.PRED_CONTEXT]
    assert roomy[R.PRED_DEVICE_RESERVED] == roomy[R.PRED_RESERVED]  # benchmark off: no workspace modelled


def test_gpu_memory_is_in_the_key_only_when_set():
    base = RunConfig("unet", (64, 64, 64), 2, backend="predict")
    assert RunConfig("unet", (64, 64, 64), 2, backend="predict", gpu_memory=0).key() == base.key()
    assert RunConfig("unet", (64, 64, 64), 2, backend="predict", gpu_memory=40 * 2**30).key() != base.key()


def test_validate_published_is_one_command_and_fit_needs_it():
    from typer.testing import CliRunner

    from bench.cli import app

    res = CliRunner().invoke(app, ["validate", "--fit"])
    assert res.exit_code == 2 and "--fit re-fits the constants on the published figures: add --published" in res.output
    res = CliRunner().invoke(app, ["validate", "--published", "--arch", "unet"])
    assert res.exit_code == 2 and "--published predicts every published figure" in res.output
