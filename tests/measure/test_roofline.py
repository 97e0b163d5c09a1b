"""The GPU catalogue and the per-operator roofline step time (bench.measure.gpus, bench.measure.roofline)."""

import pytest
from typer.testing import CliRunner

import architectures
from bench import record as R
from bench.cli import app
from bench.measure import gpus, roofline
from bench.measure.predict import count_flops, predict

ISSUE_GPUS = ("A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "L40S", "V100-SXM2", "RTX-2080-Ti", "RTX-3090",
              "RTX-4090", "Titan-RTX", "Quadro-RTX-6000", "Titan-Xp", "P100")


def test_every_catalogue_gpu_has_its_figures_and_a_source():
    for name in ISSUE_GPUS:
        g = gpus.lookup(name)
        assert g.memory_bytes >= 11 * 2**30 and g.bandwidth_bytes_per_s > 5e11 and g.fp32 > 9e12
        assert "NVIDIA" in g.source
        for tc in (g.tf32_tc, g.fp16_tc, g.bf16_tc):
            assert tc is None or tc >= g.fp32  # a tensor-core rate is never below the CUDA cores (GeForce tf32: equal)


def test_live_device_names_are_recognised():
    assert gpus.find("NVIDIA A100-SXM4-80GB").name == "A100-80GB"
    assert gpus.find("Tesla V100-PCIE-32GB").name == "V100-PCIe"
    assert gpus.find("NVIDIA GeForce RTX 4090").name == "RTX-4090"
    assert gpus.find("NVIDIA H100 PCIe").name == "H100-PCIe"
    assert gpus.find("a gpu nobody makes") is None


def test_a100_80gb_pcie_has_its_own_bandwidth_and_memory_is_what_nvidia_smi_reports():
    """A100 datasheet: the 80GB PCIe card has 1,935 GB/s, the SXM4 card 2,039 GB/s (same rates); its live name
    ("NVIDIA A100 80GB PCIe") must not fall to the SXM entry. Memory: nvidia-smi totals (modal-labs/modal-client
    PR 2797) where public - L40S 46068 MiB (48 GB with ECC on), H100 81559 MiB, A100 80GB 81920 MiB."""
    pcie, sxm = gpus.find("NVIDIA A100 80GB PCIe"), gpus.find("NVIDIA A100-SXM4-80GB")
    assert (pcie.name, pcie.bandwidth_bytes_per_s, sxm.bandwidth_bytes_per_s) == ("A100-80GB-PCIe", 1935e9, 2039e9)
    assert pcie.fp16_tc == sxm.fp16_tc == 312e12
    assert [gpus.lookup(n).memory_bytes // 2**20 for n in ("L40S", "H100-SXM", "A100-80GB")] == [46068, 81559, 81920]
    assert gpus.lookup("H200").memory_bytes > gpus.lookup("H100-SXM").memory_bytes * 1.7  # 141 GB, not 141e9 bytes


def test_a_dtype_a_gpu_cannot_run_fast_gets_the_rate_it_really_gets_with_a_note():
    v100 = gpus.lookup("V100-SXM2")
    r = gpus.rate(v100, "bf16", True)
    assert r.flops_per_s == v100.fp32 and not r.tensor_core and "no fast bf16" in r.note
    assert gpus.rate(v100, "fp16", True) == gpus.Rate(125e12, True, "")
    assert gpus.rate(gpus.lookup("Titan-Xp"), "fp16", True).flops_per_s == 12.1e12  # not the 1/64 fp16 rate


@pytest.fixture(scope="module")
def unet_work():
    return count_flops(architectures.spec("unet"), {}, (32, 32, 32), 2, "train", "fp16", False)


def test_the_work_holds_every_flop_and_the_step_classes(unet_work):
    flops, work = unet_work
    classes = roofline.by_class(work)
    assert sum(d["flops"] for d in classes.values()) == pytest.approx(flops)
    assert {roofline.CONV_FWD, roofline.CONV_BWD_DATA, roofline.CONV_BWD_WEIGHT, roofline.ELEMENTWISE,
            roofline.OPTIMIZER} <= set(classes)
    # backward convolutions cost about twice the forward ones
    bwd = classes[roofline.CONV_BWD_DATA]["flops"] + classes[roofline.CONV_BWD_WEIGHT]["flops"]
    assert 1.5 < bwd / classes[roofline.CONV_FWD]["flops"] < 2.1
    assert roofline.work_from_json(roofline.work_to_json(work)) == work


def test_step_time_is_the_roofline_of_its_buckets(unet_work):
    _, work = unet_work
    a100, p100 = gpus.lookup("A100-40GB"), gpus.lookup("P100")
    f = roofline.STATED
    t, _ = roofline.step_time(work, a100, f)
    floor = sum(w.ops for w in work) * f.launch_s + max(
        sum(w.nbytes for w in work) / a100.bandwidth_bytes_per_s, 0)
    assert t > floor  # never faster than launches plus moving the bytes at full bandwidth
    assert roofline.step_time(work, p100, f)[0] > t  # the slower GPU is slower
    fwd, _ = roofline.step_time(work, a100, f, keep=lambda w: w.forward)
    assert 0 < fwd < t


def test_predict_records_the_step_time_for_a_gpu():
    rec = predict(architectures.spec("unet"), {}, (32, 32, 32), 2, "train", "bf16", with_memtracker=False,
                  gpu=gpus.lookup("V100-SXM2"), voxels=2 * 32**3)
    assert rec[R.PRED_GPU] == "V100-SXM2" and rec[R.PRED_STEP_TIME] > 0
    assert rec[R.PRED_THROUGHPUT_SAMPLES] == pytest.approx(2 / rec[R.PRED_STEP_TIME])
    assert "no fast bf16" in rec[R.PRED_TIME_NOTE]
    assert not R.undeclared(rec)


def test_unknown_gpu_lists_the_known_ones_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["run", "--backend", "predict", "--gpu", "GTX 480", "--out", str(tmp_path)])
    assert res.exit_code == 2
    line = [x for x in res.output.splitlines() if "unknown GPU" in x]
    assert line and all(g in line[0] for g in ISSUE_GPUS)
