"""Local parallelism (``--jobs``): GPU-pinned slots never share a GPU, two parallel sweeps on one
directory run each configuration once, prediction screening (``--gpu-memory``) and ``bench status``.
Workers are small Python programs (``LocalExecutor(command=...)``) or fakes; CUDA is a fake backend."""

import dataclasses
import json
import os
import sys
import textwrap
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bench import record as R
from bench.cli import app
from bench.parallel import THREADS_ENV
from bench.sweep import executor, store
from bench.sweep.config import RunConfig
from bench.sweep.executor import LocalExecutor, ScreeningExecutor, local_pool, run_sweep
from bench.sweep.expand import gpu_memory, visible_gpus
from bench.version import code_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = [RunConfig("unet", (s, s, s), b, backend="cuda") for s in (32, 48, 64) for b in (1, 2)]

# a worker that notes its GPU and how long it held it, then sends a record
TIMED = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, %r)
    from bench.sweep.config import RunConfig
    cfg = RunConfig.from_json(sys.stdin.read())
    t0 = time.time(); time.sleep(0.6); t1 = time.time()
    with open(%r, "a") as fh:
        fh.write(json.dumps({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": t0, "end": t1}) + "\\n")
    print("RECORD:" + json.dumps({"key": cfg.key(), "status": "ok", "code_version": %r}), flush=True)
""")


def _intervals(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_cuda_slots_are_pinned_and_never_share_a_gpu(tmp_path):
    log = tmp_path / "held.jsonl"
    pool = local_pool("cuda", 2, ["3", "5"], cores=2)
    for ex in pool:
        ex.command = (sys.executable, "-c", TIMED % (ROOT, str(log), code_version()))
    recs = run_sweep(CONFIGS, tmp_path, 60, executor=pool)
    held = _intervals(log)
    assert len(recs) == len(CONFIGS) == len(held)
    assert {h["gpu"] for h in held} == {"3", "5"}
    assert {r[R.CUDA_DEVICES] for r in recs} == {"3", "5"}
    for gpu in ("3", "5"):
        mine = sorted((h["start"], h["end"]) for h in held if h["gpu"] == gpu)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(mine, mine[1:])), f"GPU {gpu} shared"
    first = min(held, key=lambda h: h["start"])
    assert any(h["gpu"] != first["gpu"] and h["start"] < first["end"] for h in held), "the slots did not run at once"


def test_more_jobs_than_gpus_and_no_jobs_are_refused():
    with pytest.raises(ValueError, match="2 GPU\\(s\\) visible"):
        local_pool("cuda", 3, ["0", "1"], cores=8)
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        local_pool("cpu", 0, [], cores=8)
    cpu = local_pool("cpu", 4, [], cores=8)
    assert len(cpu) == 4 and {ex.env["OMP_NUM_THREADS"] for ex in cpu} == {"2"}


def test_a_cpu_slot_measures_on_its_share_of_the_cores(monkeypatch):
    """Each --jobs slot's measurement pins its threads to the slot's share (2 workers of 2 threads each on 2 cores
    made a U-net step 19 times slower, with a small spread), and a user's SEGMEM_CPU_THREADS stands."""
    from bench.measure import cpu

    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(cpu.os, "getloadavg", lambda: (0.0, 0, 0))  # an idle machine: all the cores otherwise
    try:
        share = len(os.sched_getaffinity(0)) + 1  # not what the measurement would take by itself
        for ex in local_pool("cpu", 2, [], cores=2 * share):
            monkeypatch.setenv(THREADS_ENV, ex.env[THREADS_ENV])  # what the worker's environment holds
            assert cpu.pin_threads() == share == torch.get_num_threads()
        monkeypatch.setenv(THREADS_ENV, "3")
        assert {ex.env[THREADS_ENV] for ex in local_pool("cpu", 2, [], cores=8)} == {"3"}
    finally:
        torch.set_num_threads(before)


def test_visible_gpus_and_their_memory_come_from_the_cuda_backend(monkeypatch):
    sizes = {0: 80 * 10**9, 1: 40 * 10**9}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=sizes[i]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == ["0", "1"]
    assert gpu_memory("auto") == 40 * 10**9  # the smallest visible GPU decides what fits
    assert gpu_memory("16GB") == 16 * 10**9
    assert gpu_memory("a100 40gb") == 40 * 2**30  # a GPU of the catalogue: its memory


def test_the_screen_takes_the_context_of_the_named_or_visible_gpu(monkeypatch):
    """--gpu-memory A100-40GB names the GPU whose CUDA context the screen predicts with; otherwise a local cuda
    run's visible GPU (as that run's own prediction takes it); else none: the generic figure."""
    from bench.cli.run import _screen_gpu
    from bench.options import Backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    assert _screen_gpu("A100-40GB", Backend.CUDA) == _screen_gpu("a100 40gb", Backend.CPU) == "A100-40GB"
    assert _screen_gpu("auto", Backend.CUDA) == _screen_gpu("80GB", Backend.CUDA) == "H100-SXM"
    assert _screen_gpu("80GB", Backend.CPU) == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a SLURM login node
    assert _screen_gpu("80GB", Backend.CUDA) == ""


def test_gpu_memory_auto_without_a_gpu_is_one_line(tmp_path, cpu_only):
    res = CliRunner().invoke(app, ["run", "--arch", "unet", "--size", "32", "--gpu-memory", "auto", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--gpu-memory auto needs a visible CUDA GPU" in res.output
    res = CliRunner().invoke(app, ["run", "--arch", "unet", "--backend", "predict", "--gpu-memory", "A100-41GB",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "neither a size" in res.output and "A100-40GB" in res.output
    assert not store.path(tmp_path).exists()


def _parallel_sweep(out: str, code: str) -> None:
    configs = [RunConfig("unet", (s, s, s), b, backend="predict") for s in (32, 48, 64) for b in (1, 2, 3)]
    pool = [LocalExecutor(command=[sys.executable, "-c", code]) for _ in range(3)]
    run_sweep(configs, out, 60, executor=pool)


def test_two_parallel_sweeps_on_one_directory_run_each_configuration_once(tmp_path, race):
    log = tmp_path / "held.jsonl"
    race(_parallel_sweep, str(tmp_path), TIMED % (ROOT, str(log), code_version()))
    df = pd.read_json(store.path(tmp_path), lines=True)
    assert len(df) == 9 and df["key"].is_unique
    assert len(_intervals(log)) == 9  # no configuration was run twice


class FakePredictor:
    """A prediction worker (no torch): nvidia-smi figure = 1 MB per voxel edge + a 10 MB context; at a
    capacity (``gpu_memory``) an ``oom`` record where that figure exceeds it, as the device model's rule gives."""

    def __init__(self):
        self.asked = []

    def run(self, cfg, timeout_s):
        self.asked.append(cfg)
        smi = cfg.size[0] * 10**6 + 10 * 10**6
        status = R.OOM if cfg.gpu_memory and smi > cfg.gpu_memory else R.OK
        return {**R.config_columns(cfg), R.STATUS: status, R.PRED_RESERVED: cfg.size[0] * 10**6,
                R.PRED_NVIDIA_SMI: smi, R.PRED_CONTEXT: 10 * 10**6, R.PRED_CAPACITY: cfg.gpu_memory,
                R.FLOPS_PER_STEP: 7, R.PARAMS: 11}

    def cancel(self):
        pass


def test_screening_records_what_cannot_fit_without_running_it(tmp_path):
    cfgs = [RunConfig("unet", (s, s, s), 1, backend="cuda") for s in (32, 64)]
    inner = FakePredictor()
    screen = ScreeningExecutor(budget_bytes=50 * 10**6, inner=inner, gpu="A100-40GB")
    assert screen.run(cfgs[0], 60) is None  # 32 MB + 10 MB fits in 50 MB
    # the screen asks the prediction at the GPU's memory, for its GPU, and keeps the configuration's key
    asked = inner.asked[-1]
    assert (asked.backend, asked.gpu_memory, asked.gpu) == ("predict", 50 * 10**6, "A100-40GB")
    rec = screen.run(cfgs[1], 60)
    assert rec[R.STATUS] == R.PREDICTED_OOM and rec[R.BACKEND] == "cuda" and rec[R.KEY] == cfgs[1].key()
    assert rec[R.PRED_NVIDIA_SMI] == 74 * 10**6 and rec[R.GPU_BUDGET] == 50 * 10**6 and rec[R.PARAMS] == 11
    assert rec[R.PRED_CAPACITY] == 50 * 10**6
    assert "0.07 GiB" in rec[R.ERROR] and "--no-skip" in rec[R.ERROR]
    assert not R.undeclared(rec)
    # a configuration's own --gpu wins over the screen's
    screen.run(dataclasses.replace(cfgs[0], gpu="H100-SXM"), 60)
    assert inner.asked[-1].gpu == "H100-SXM"
    skipped = run_sweep(cfgs, tmp_path, 60, executor=[screen, screen], budget_bytes=50 * 10**6)
    assert [r[R.KEY] for r in skipped] == [cfgs[1].key()] and len(store.load(tmp_path)) == 1
    # the record stands for the same GPU; a larger GPU screens it again; --no-skip measures it
    assert executor.rerun_reason(skipped[0], 60, budget_bytes=50 * 10**6) is None
    assert "smaller GPU" in executor.rerun_reason(skipped[0], 60, budget_bytes=80 * 10**6)
    assert executor.rerun_reason(skipped[0], 60, no_skip=True) == "--no-skip"


def test_status_shows_pending_running_done_and_failed(tmp_path):
    cfgs = [RunConfig("unet", (s, s, s), 1, backend="predict") for s in (32, 48, 64, 80)]
    store.begin_sweep(tmp_path, cfgs)
    store.append(tmp_path, {**R.config_columns(cfgs[0]), R.STATUS: R.OK})
    store.append(tmp_path, {**R.config_columns(cfgs[1]), R.STATUS: R.PREEMPTED, R.ERROR: "job 7_1 ended PREEMPTED"})
    dead = tmp_path / store.RUNNING / f"{cfgs[3].key()}.json"  # a claim note whose process is gone: stale
    dead.parent.mkdir(parents=True, exist_ok=True)
    dead.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": 2**22 + 7, "since": "then"}))
    with store.claim(tmp_path, cfgs[2].key()):
        store.note_claim(tmp_path, cfgs[2].key(), job_id="4242_2")
        states = {r["key"]: r for r in store.progress(tmp_path)}
        res = CliRunner().invoke(app, ["status", "--out", str(tmp_path)])
    assert [states[c.key()]["state"] for c in cfgs] == ["done", "failed", "running", "pending"]
    assert "job 4242_2" in states[cfgs[2].key()]["detail"] and "PREEMPTED" in states[cfgs[1].key()]["detail"]
    assert res.exit_code == 0 and "1 pending, 1 running, 1 done, 1 failed" in res.output
    assert "4242_2" in res.output and "unet train 48x48x48 b1 fp32 predict" in res.output
    assert [r["state"] for r in store.progress(tmp_path)].count("running") == 0  # released with the claim
    res = CliRunner().invoke(app, ["status", "--out", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no sweep under" in res.output


CTRL_C_MAP = """
import functools
from bench.parallel import call, pmap
pmap(functools.partial(call, "busy:spin"), [3.0] * 12, jobs=2, progress=lambda _: print("done", flush=True))
"""
BUSY = "import time\n\ndef spin(s):\n    t = time.monotonic()\n    while time.monotonic() - t < s:\n        pass\n"


def test_a_map_interrupted_by_ctrl_c_ends_its_processes_at_once(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during pmap: the processes end at once,
    instead of each sending its KeyboardInterrupt back and going on with the items it was handed while the pool's
    exit waits for them (bench validate --recorded, interrupted, went on for 25-30 s after saying so)."""
    import signal
    import subprocess
    import time

    (tmp_path / "busy.py").write_text(BUSY)  # CPU work, as a prediction is (a sleep would end at the signal)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]))
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_MAP], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == "done\n"  # two 3 s items done, ten to go (15 s more on two processes)
    os.killpg(proc.pid, signal.SIGINT)
    t = time.monotonic()
    proc.wait(timeout=60)
    assert proc.returncode != 0 and time.monotonic() - t < 5
