"""``--executor slurm`` without a cluster: the same path through submitit's ``local`` executor (job
processes on this machine: a finished job, a killed one and a timed-out one) and its ``debug``
executor (a real worker, in-process), the sbatch script submitit writes for our options (a fake
``sbatch`` on PATH captures it), job states that end without a result, and bad input."""

import os
import stat
import sys
import textwrap
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench import record as R
from bench.cli import app
from bench.sweep import slurm, store
from bench.sweep.config import RunConfig
from bench.sweep.executor import run_sweep
from bench.sweep.slurm import SlurmExecutor, SlurmOptions
from bench.version import code_version

pytest.importorskip("submitit", reason="the slurm extra (pip install 'segmem[slurm]') is part of the dev extra")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFGS = [RunConfig("unet", (32, 32, 32), b, backend="predict") for b in (1, 2, 3)]

# batch 1: a record; batch 2: kills its job (the process that runs it); batch 3: hangs past the timeout
MISBEHAVE = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, %r)
    from bench.record import config_columns
    from bench.sweep.config import RunConfig
    cfg = RunConfig.from_json(sys.stdin.read())
    if cfg.batch == 2:
        os.kill(os.getppid(), signal.SIGKILL)
    if cfg.batch == 3:
        time.sleep(600)
    print("RECORD:" + json.dumps({**config_columns(cfg), "status": "ok", "code_version": %r}), flush=True)
""") % (ROOT, code_version())


@pytest.mark.slow
def test_local_jobs_end_to_end_finished_killed_and_timed_out(tmp_path):
    ex = SlurmExecutor(SlurmOptions(gpus_per_task=0), tmp_path / "slurm", cluster="local",
                       command=[sys.executable, "-c", MISBEHAVE], poll_s=0.5)
    recs = {r[R.BATCH]: r for r in run_sweep(CFGS, tmp_path, 5, executor=ex)}
    assert recs[1][R.STATUS] == R.OK
    assert recs[2][R.STATUS] == R.ERROR_STATUS and "without a record" in recs[2][R.ERROR]
    assert recs[2][R.BATCH] == 2 and recs[2][R.SIZE] == "32x32x32"  # the whole configuration is kept
    assert recs[3][R.STATUS] == R.TIMEOUT_STATUS and recs[3][R.TIMEOUT] == 5
    assert len({r[R.JOB_ID] for r in recs.values()}) == 3 and all(r[R.NODE] for r in recs.values())
    df = pd.read_json(store.path(tmp_path), lines=True)  # each record once: jobs store theirs, we the lost one
    assert len(df) == 3 and df["key"].is_unique
    # resume: nothing is submitted again; --retry-failed submits the killed job's configuration only
    skipped = []
    assert run_sweep(CFGS, tmp_path, 5, executor=ex, on_skip=lambda c, why: skipped.append(why)) == []
    assert skipped == ["recorded"] * 3
    again = run_sweep(CFGS, tmp_path, 5, retry_failed=True, executor=ex)
    assert sorted(r[R.BATCH] for r in again) == [2, 3]


def test_a_real_worker_through_the_debug_executor(tmp_path):
    cfg = RunConfig("unet", (32, 32, 32), 1, "infer", backend="predict")
    ex = SlurmExecutor(SlurmOptions(gpus_per_task=0), tmp_path / "slurm", cluster="debug")
    (rec,) = run_sweep([cfg], tmp_path, 300, executor=ex)
    assert rec[R.STATUS] == R.OK and rec[R.PRED_ALLOCATED] > 0 and rec[R.JOB_ID] and rec[R.NODE]
    assert store.latest(tmp_path)[cfg.key()][R.PRED_ALLOCATED] == rec[R.PRED_ALLOCATED]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that accepts every script as job 4242, and ``srun`` (submitit looks for it)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("srun", "exit 0")):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    return bin_


def test_the_sbatch_script_asks_for_what_the_options_say(tmp_path, fake_slurm):
    opts = SlurmOptions(partition="gpu", account="lab", mem="64G", array_parallelism=2, gpus_per_task=1,
                        sbatch=("--exclusive", "--mail-type=END"), setup=("module load cuda",))
    cfgs = [RunConfig("unet", (32, 32, 32), b, backend="cuda") for b in (1, 2, 3)]
    jobs = SlurmExecutor(opts, tmp_path / "slurm").submit(cfgs, 600, tmp_path)
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    lines = set((tmp_path / "slurm" / "4242" / "4242_submission.sh").read_text().splitlines())
    assert {"#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --array=0-2%2", "#SBATCH --gres=gpu:1",
            "#SBATCH --mem=64G", "#SBATCH --time=20", "#SBATCH --exclusive", "#SBATCH --mail-type=END",
            "module load cuda"} <= lines  # time: the 600 s timeout + 10 min
    assert f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" in lines


def test_a_job_that_ends_without_a_result_gets_its_state_as_status(tmp_path):
    ex = SlurmExecutor(SlurmOptions(), tmp_path / "slurm", cluster="local")
    cfg = CFGS[0]
    for state, status in (("PREEMPTED", R.PREEMPTED), ("TIMEOUT", R.TIMEOUT_STATUS), ("OUT_OF_MEMORY", R.OOM),
                          ("NODE_FAIL", R.ERROR_STATUS), ("CANCELLED by 0", R.ERROR_STATUS)):
        job = SimpleNamespace(job_id="7_1", state=state, stderr=lambda: "slurmstepd: error")
        rec, stored = ex._lost(cfg, job, RuntimeError("Job 7_1 has not produced any output"), 60, tmp_path)
        assert (rec[R.STATUS], stored, rec[R.JOB_ID], rec[R.KEY]) == (status, False, "7_1", cfg.key()), state
        assert state.split()[0] in rec[R.ERROR] and rec[R.STDERR_TAIL] == "slurmstepd: error"
    # a job that stored its record before it was killed keeps it
    store.append(tmp_path, {**R.config_columns(cfg), R.STATUS: R.OK, R.JOB_ID: "7_1"})
    job = SimpleNamespace(job_id="7_1", state="PREEMPTED", stderr=lambda: "")
    rec, stored = ex._lost(cfg, job, RuntimeError("gone"), 60, tmp_path)
    assert rec[R.STATUS] == R.OK and stored


ARGS = ["run", "--arch", "unet", "--size", "32", "--backend", "predict", "--executor", "slurm"]


def test_slurm_options_from_a_file_and_flags(tmp_path):
    conf = tmp_path / "slurm.toml"
    conf.write_text('[slurm]\npartition = "a100"\ntime_min = 90\nsbatch = ["--qos=high"]\n')
    opts = SlurmOptions(**SlurmOptions.from_file(conf)).merged(partition="h100", mem=None, sbatch=[])
    assert (opts.partition, opts.time_min, opts.sbatch) == ("h100", 90, ("--qos=high",))
    assert opts.parameters(60, ROOT)["slurm_additional_parameters"] == {"qos": "high"}


@pytest.mark.parametrize("content, message", [
    ('partiton = "gpu"\n', "unknown SLURM option(s) partiton; known: partition"),
    ("array_parallelism = 0\n", "array_parallelism must be a whole number >= 1"),
    ('mem = "lots"\n', "mem must be like 64G"),
    ('sbatch = ["qos=high"]\n', "an sbatch option must be like --name"),
    ("partition = \n", "is not TOML"),
])
def test_bad_slurm_options_are_one_line_before_anything_is_submitted(tmp_path, fake_slurm, content, message):
    conf = tmp_path / "slurm.toml"
    conf.write_text(content)
    res = CliRunner().invoke(app, [*ARGS, "--slurm-config", str(conf), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "out" / "slurm").exists()


def test_slurm_without_sbatch_or_submitit_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "needs SLURM's sbatch on PATH" in res.output
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit fails
    res = CliRunner().invoke(app, [*ARGS, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "pip install 'segmem[slurm]'" in res.output
    with pytest.raises(ValueError, match="submitit"):
        slurm.check_available("local")
    res = CliRunner().invoke(app, ["run", "--arch", "unet", "--partition", "gpu", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "--partition is a SLURM option: add --executor slurm" in res.output

