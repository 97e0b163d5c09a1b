"""segmem's CUDA path, end to end, on the fake CUDA backend (``tests/fake_cuda.py``): so that it works the
first time it meets a GPU. The fake's memory figures come from the real step (tracked tensor bytes and
the caching-allocator model over them), so the assertions hold real properties of the run."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.append(str(Path(__file__).resolve().parents[1]))

import fake_cuda  # noqa: E402

from bench import record as R  # noqa: E402
from bench.cli import app  # noqa: E402
from bench.sweep import executor, store  # noqa: E402
from bench.sweep.config import RunConfig  # noqa: E402

GiB = 2**30


@pytest.fixture
def fake(monkeypatch):
    device = fake_cuda.FakeCuda()
    for obj, name, value in device.patches():
        monkeypatch.setattr(obj, name, value)
    device.enter()
    yield device
    device.exit()


def test_the_worker_measures_a_training_step_on_cuda(fake):
    from bench.sweep import worker

    rec = worker.run(RunConfig("unet", (32, 32, 32), 2, "train", "cuda", "fp32", repeats=2))
    assert rec[R.STATUS] == R.OK and rec[R.BACKEND] == "cuda" and rec[R.DEVICE_NAME] == fake_cuda.NAME
    # the fake replays the real step's allocations (cuDNN's workspaces inserted) through the allocator model: the
    # prediction of that figure, made on fake tensors, must agree
    assert rec[R.PEAK_ALLOCATED] == pytest.approx(R.predicted_on_device(rec), rel=0.01)
    assert rec[R.PEAK_ALLOCATED] > rec[R.PRED_LIVE]  # workspaces and block rounding on top of the live tensors
    assert rec[R.PEAK_ALLOCATED] <= rec[R.PEAK_RESERVED] < rec[R.NVML_PEAK]
    assert fake_cuda.CONTEXT_BYTES <= rec[R.CUDA_CONTEXT] < rec[R.NVML_PEAK]
    assert rec[R.ENV_GPU_NAME] == fake_cuda.NAME and rec[R.ENV_GPU_MEMORY] == 80 * GiB and rec[R.ENV_DRIVER]
    assert rec[R.STEP_TIME_MEDIAN] > 0 and rec[R.REPEATS] == 2
    assert rec[R.THROUGHPUT_VOXELS] == pytest.approx(rec[R.VOXELS_PER_STEP] / rec[R.STEP_TIME_MEDIAN])
    phases = json.loads(rec[R.CUDA_PHASES])  # where the worker's time went, phase by phase (none ahead of its turn)
    assert tuple(phases) == tuple(n for n in R.CUDA_PHASE_NAMES if n not in R.BEFORE_TURN_PHASES)
    assert all(t >= 0 for t in phases.values()) and phases["warmup"] > 0 and phases["build"] > 0
    assert not R.undeclared(rec)


def test_a_step_prepared_ahead_of_its_turn_gives_the_same_measurement(fake):
    """A measuring worker sent its configuration ahead builds the network and draws the batch on the CPU while the
    GPU is busy (``worker.prepare_ahead``); the device then sees the same allocations, in the same order. (On the
    fake, whose device is the CPU, a process's first run differs from its later ones, and the garbage of a run is
    live in the next until collected: so one run first, a collection after each.)"""
    import gc

    from bench.sweep import worker

    cfg = RunConfig("unet", (32, 32, 32), 2, "infer", "cuda", "fp32", repeats=1)
    worker.run(cfg)
    gc.collect()
    plain = worker.run(cfg)
    gc.collect()
    # as in a worker sent its configuration ahead: CUDA not initialised yet, so the network and batch are host memory,
    # copied to the device at its turn (Module.to must copy them there: the fake's _parse_to once turned it into
    # .to("cpu"), and the weights were missing from every ahead worker's peak)
    fake.tracker.initialised = False
    prepared = worker.prepare_ahead(cfg)
    assert all(fake.tracker.on_host(p) for p in prepared.model.parameters())
    assert all(p.device.type == "cpu" for p in prepared.model.parameters()) and len(prepared.drawn) == 1  # image
    ahead = worker.run(cfg, prepared=prepared, ahead_s=1.5, imports_s=2.5)
    assert prepared.model is None and prepared.drawn is None  # taken: the network is freed with its runner
    for col in (R.PEAK_ALLOCATED, R.PEAK_RESERVED, R.PRED_ALLOCATED):
        assert ahead[col] == plain[col], col
    phases = json.loads(ahead[R.CUDA_PHASES])
    assert tuple(phases) == R.CUDA_PHASE_NAMES and phases[R.AHEAD_PHASE] == 1.5 and phases[R.IMPORTS_PHASE] == 2.5


def test_cuda_out_of_memory_is_an_oom_record(monkeypatch):
    from bench.sweep import worker

    device = fake_cuda.FakeCuda(capacity_bytes=64 * 2**20)
    for obj, name, value in device.patches():
        monkeypatch.setattr(obj, name, value)
    device.enter()
    try:
        rec = worker.run(RunConfig("unet", (64, 64, 64), 2, "train", "cuda", "fp32", repeats=1))
    finally:
        device.exit()
    assert rec[R.STATUS] == R.OOM and "CUDA out of memory" in rec[R.ERROR]
    assert rec[R.OOM_REQUESTED] > 0 and rec[R.PRED_ALLOCATED] > 64 * 2**20  # the prediction said so too


@pytest.mark.slow
def test_bench_run_on_cuda_through_isolated_workers_with_dice(monkeypatch, tmp_path):
    """The CLI's path: backend auto finds the (fake) GPU; each worker process installs the fake device."""
    monkeypatch.setattr(executor, "WORKER", fake_cuda.WORKER)
    for obj, name, value in fake_cuda.FakeCuda().patches():  # the parent sees the GPU (count, memory) too
        monkeypatch.setattr(obj, name, value)
    res = CliRunner().invoke(app, ["run", "--arch", "unet", "--size", "32", "--batch", "2", "--repeats", "1",
                                   "--dice", "--data", "phantom:64x48x48", "--train-iterations", "2",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rec = store.load(tmp_path).iloc[0]
    assert rec[R.BACKEND] == "cuda" and rec[R.STATUS] == R.OK and rec[R.DICE_STATUS] == R.OK, rec.get(R.DICE_ERROR)
    assert rec[R.PRECISION] == "fp32" and rec[R.PEAK_ALLOCATED] > 0 and rec[R.INFER_VOLUME_PEAK_ALLOCATED] > 0
    # predicted ahead of the measurement, in a process without the GPU, for the live GPU all the same
    assert rec[R.PRED_ALLOCATED] > 0 and rec[R.PRED_GPU] == "H100-SXM" and rec[R.PRED_STEP_TIME] > 0
    assert "max allocated" in res.output


def test_a_cuda_run_has_the_predicted_step_time_of_its_live_gpu_beside_the_measured_one(fake):
    from bench.sweep import worker

    rec = worker.run(RunConfig("unet", (32, 32, 32), 2, "train", "cuda", "fp16", repeats=1))
    assert rec[R.DEVICE_NAME] == fake_cuda.NAME and rec[R.PRED_GPU] == "H100-SXM"  # recognised by its name
    assert rec[R.STEP_TIME_MEDIAN] > 0 and rec[R.PRED_STEP_TIME] > 0
    assert rec[R.PEAK_FLOPS] == 989.5e12  # the catalogue's fp16 tensor-core rate
