"""Time per epoch on a chosen GPU from recorded work (bench report --gpu), and --gpu in the configuration key."""

import pandas as pd
import pytest

import architectures
from bench import record as R
from bench.measure.predict import predict
from bench.results import report
from bench.results.throughput import EPOCH_STEPS, retime
from bench.sweep.config import RunConfig


def test_a_record_is_retimed_for_any_gpu_and_the_report_shows_its_epoch():
    rec = predict(architectures.spec("unet"), {}, (32, 32, 32), 2, "train", "fp16", with_memtracker=False)
    assert R.PRED_STEP_TIME not in rec  # no GPU asked: memory only
    df = pd.DataFrame([{**rec, R.ARCH: "unet", R.MODE: "train", R.BACKEND: "predict", R.STAGE: "", R.BATCH: 2, R.STATUS: R.OK,
                        R.VOXELS_PER_STEP: 2 * 32**3}])
    fast, slow = retime(df, "H100-SXM"), retime(df, "Titan-Xp")
    assert fast[R.PRED_GPU].iloc[0] == "H100-SXM" and 0 < fast[R.PRED_STEP_TIME].iloc[0] < slow[R.PRED_STEP_TIME].iloc[0]
    assert "no fast fp16" in slow[R.PRED_TIME_NOTE].iloc[0]
    table = report.summary(fast)
    epoch = table[f"pred_epoch_s ({EPOCH_STEPS} steps)"].iloc[0]
    assert epoch == pytest.approx(EPOCH_STEPS * fast[R.PRED_STEP_TIME].iloc[0])


def test_gpu_is_in_the_key_only_when_set():
    base = RunConfig("unet", (64, 64, 64), 2, backend="predict")
    assert RunConfig("unet", (64, 64, 64), 2, backend="predict", gpu="").key() == base.key()
    assert RunConfig("unet", (64, 64, 64), 2, backend="predict", gpu="A100-80GB").key() != base.key()
