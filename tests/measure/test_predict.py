"""GPU-free prediction: the traced live-tensor peak equals a real CPU step's, and it is fast."""

import resource
import time

import pytest

import architectures
from bench import record as R
from bench.measure import cpu
from bench.measure.predict import CATEGORIES, predict
from bench.measure.step import StepRunner

CASES = [  # (arch, stage, size, overrides)
    ("unet", "", 32, {}),
    ("meunet", "", 32, {}),
    ("unet3d", "", 16, {}),
    ("vnet", "", 16, {}),
    ("nnunet", "", 64, {}),
    pytest.param("nnunet_resenc", "", 64, {}, marks=pytest.mark.slow),  # 102M parameters stepped on the CPU
    ("cascade", "stage2", 32, {}),
    ("cascade_pre", "stage2", 32, {}),
    ("nnunet_cascade", "3d_cascade_fullres", 32, {"n_stages": 4}),
]


@pytest.mark.parametrize(("name", "stage", "edge", "ov"), CASES)
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_predicted_live_peak_equals_real_cpu_step(name, stage, edge, ov, mode):
    spec = architectures.spec(name)
    if stage:
        if mode == "infer":
            pytest.skip("a stage's inference is part of its cascade's")
        st = next(s for s in spec.train_stages(**ov) if s.name == stage)
        spec, ov = st.spec, dict(st.overrides)
    size = (edge,) * 3
    real, _ = cpu.measure(lambda: StepRunner(spec, ov, size, 1, mode), repeats=0, timed=False)
    pred = predict(spec, ov, size, 1, mode, with_memtracker=False, with_flops=False)
    assert pred["pred_peak_live_bytes"] == pytest.approx(real["cpu_live_peak_bytes"], rel=0.01)
    assert pred["pred_peak_allocated_bytes"] >= pred["pred_peak_live_bytes"]
    assert pred["pred_peak_reserved_bytes"] >= pred["pred_peak_allocated_bytes"]


def test_breakdown_adds_up_and_names_the_training_state():
    pred = predict(architectures.spec("unet"), {}, (32, 32, 32), 1, with_memtracker=True)
    cats = sum(pred[R.pred_category(c)] for c in CATEGORIES)
    assert cats == pred["pred_peak_live_bytes"]
    n_params = architectures.spec("unet").param_count()
    assert pred["pred_parameter_bytes"] >= 4 * n_params  # fp32 weights (+ BatchNorm buffers)
    assert pred["pred_optimizer_bytes"] == 2 * 4 * n_params  # Adam's two moments
    assert pred["memtracker_peak_bytes"] == pytest.approx(pred["pred_peak_live_bytes"], rel=0.02)
    assert pred["flops_per_step"] > 0
    # memory only (bench compare): the same memory figures, without the FLOPs' trace
    memory = predict(architectures.spec("unet"), {}, (32, 32, 32), 1, with_memtracker=False, with_flops=False)
    assert R.FLOPS_PER_STEP not in memory and R.PRED_WORK not in memory
    figures = [k for k in memory if k.endswith("_bytes") or k == R.PRED_EVENTS]
    assert len(figures) > 10 and {k: memory[k] for k in figures} == {k: pred[k] for k in figures}


def test_mixed_precision_is_emulated_as_on_cuda():
    spec = architectures.spec("unet")
    fp32 = predict(spec, {}, (64, 64, 64), 2, "infer", "fp32", with_memtracker=False, with_flops=False)
    fp16 = predict(spec, {}, (64, 64, 64), 2, "infer", "fp16", with_memtracker=False, with_flops=False)
    # convolutions in half precision, but upsampling (and so the decoder's concatenations) in float32, as CUDA
    # autocast does: more than half the activation bytes (on the H200 the U-net's inference at 80^3, batch 4,
    # peaked at 0.80 of fp32's allocated bytes)
    ratio = fp16["pred_activation_bytes"] / fp32["pred_activation_bytes"]
    assert 0.55 < ratio < 0.85


def test_paper_size_meunet_prediction_is_fast_and_allocates_nothing_real():
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    pred = predict(architectures.spec("meunet"), {"expansion": 1.75}, (160, 160, 160), 4, "train", "fp16",
                   with_memtracker=False, with_flops=False)
    elapsed = time.perf_counter() - t0
    print(f"meU-net 160^3 (expanded 280^3) batch 4 fp16: predicted {pred['pred_peak_allocated_bytes'] / 2**30:.2f} "
          f"GiB allocated in {elapsed:.1f} s")
    assert pred["pred_time_s"] > 0
    assert pred["pred_peak_allocated_bytes"] > 4 * 2**30  # tens of GB of activations at this size
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    assert grown < 2**30  # a real step would need many GiB


def test_whole_volume_inference_prediction():
    pred = predict(architectures.spec("unet"), {}, (1072, 480, 480), 1, "infer", "fp16", with_memtracker=False, with_flops=False)
    assert pred["pred_peak_allocated_bytes"] > 2**30


def test_an_empty_memtracker_figure_says_why():
    from bench.measure.predict import memtracker_peak

    peak, note = memtracker_peak(architectures.spec("meunet"), {}, (32,) * 3, 1, "train", "fp32", False)
    assert peak is None and note.startswith("MemTracker cannot track this step") and "multiple" in note
    peak, note = memtracker_peak(architectures.spec("unet"), {}, (32,) * 3, 1, "train", "fp32", False)
    assert peak > 0 and note is None
