"""The prediction of a configuration made by CPU workers ahead of its measurement
(``PredictAheadExecutor``, ``bench validate``), and a worker's part of it (``wire.Instructions``)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import record as R
from bench.sweep import wire, worker
from bench.sweep.config import RunConfig
from bench.sweep.executor import PredictAheadExecutor, Predictions, run_sweep
from bench.version import code_version

CFGS = [RunConfig("unet", (s, s, s), 1, backend="cuda") for s in (32, 48, 64)]


def record(cfg, status=R.OK):
    return {R.KEY: cfg.key(), R.STATUS: status, R.PRED_ALLOCATED: cfg.size[0], R.PEAK_ALLOCATED: 7,
            R.WORKER_TIME: 1.0, R.CODE_VERSION: code_version()}


class Measure:
    """A measuring executor that says what it was given and when; each measurement takes ``delay`` s."""

    def __init__(self, log, delay=0.0):
        self.log, self.delay = log, delay

    def run(self, cfg, timeout_s, how=None, upcoming=None):
        self.log.append(("measure", cfg.size[0], how, time.monotonic(), upcoming and upcoming.size[0]))
        time.sleep(self.delay)
        return record(cfg)

    def cancel(self):
        pass

    def close(self):
        pass


def ahead(log, fail=(), hang=(), **kw):
    """A PredictAheadExecutor predicting in a thread pool; sizes in ``fail`` raise, those in ``hang`` take 5 s."""

    def predictor(config_json, live_gpu):
        cfg = RunConfig.from_json(config_json)
        log.append(("predict", cfg.size[0], live_gpu, time.monotonic()))
        if cfg.size[0] in fail:
            raise RuntimeError("the prediction failed")
        if cfg.size[0] in hang:
            time.sleep(5)
        return record(cfg)

    predictions = Predictions(kw.pop("jobs", 1), pool=ThreadPoolExecutor, predictor=predictor)
    return PredictAheadExecutor(Measure(log, kw.pop("delay", 0.0)), predictions, **kw)


def test_every_prediction_starts_before_the_first_measurement_and_is_handed_to_it(tmp_path):
    log = []
    recs = run_sweep(CFGS, tmp_path, 60, executor=ahead(log, jobs=2, delay=0.3, live_gpu="H100-SXM"))
    predicted = [e for e in log if e[0] == "predict"]
    measured = [e for e in log if e[0] == "measure"]
    assert [e[1] for e in measured] == [32, 48, 64] and len(recs) == 3
    assert max(e[3] for e in predicted) < measured[1][3]  # all three predicted before the second measurement
    assert {e[2] for e in predicted} == {"H100-SXM"}
    # the measuring worker is given the prediction's columns only (no status, no worker time)
    assert [e[2].prediction for e in measured] == [{R.PRED_ALLOCATED: s} for s in (32, 48, 64)]
    # alone, the executor runs them in order: each measurement is told the next, whose worker is sent it ahead
    assert [e[4] for e in measured] == [48, 64, None]


def test_a_failed_or_late_prediction_is_not_handed_on(tmp_path):
    log = []
    run_sweep(CFGS, tmp_path, 1, executor=ahead(log, fail=(48,), hang=(64,), jobs=3))
    hows = {e[1]: e[2] for e in log if e[0] == "measure"}
    assert hows[48] is None and hows[64] is None and hows[32].prediction == {R.PRED_ALLOCATED: 32}


def test_recorded_configurations_are_not_predicted_again(tmp_path):
    log = []
    run_sweep(CFGS[:1], tmp_path, 60, executor=ahead(log))
    log.clear()
    run_sweep(CFGS, tmp_path, 60, executor=ahead(log))
    assert sorted(e[1] for e in log if e[0] == "predict") == [48, 64]


def test_the_executors_of_one_sweep_share_the_predictions(tmp_path):
    log = []
    one = ahead(log, jobs=2, live_gpu="H100-SXM")
    two = PredictAheadExecutor(Measure(log), one.ahead, "H100-SXM")  # a second GPU of the same kind
    run_sweep(CFGS, tmp_path, 60, executor=[one, two])
    assert sorted(e[1] for e in log if e[0] == "predict") == [32, 48, 64]  # each predicted once
    assert sorted(e[1] for e in log if e[0] == "measure") == [32, 48, 64]
    assert {e[4] for e in log if e[0] == "measure"} == {None}  # which GPU runs which next is not known: none ahead


def test_a_predicting_worker_touches_no_gpu(monkeypatch):
    def no_gpu(*a, **k):
        raise AssertionError("the predicting worker touched CUDA")

    for name in ("init", "_lazy_init", "get_device_name", "get_device_properties", "current_device"):
        monkeypatch.setattr(f"torch.cuda.{name}", no_gpu)
    rec = worker.prediction(CFGS[0].to_json(), "H100-SXM")
    assert rec[R.STATUS] == R.OK and rec[R.PRED_ALLOCATED] > 0
    assert rec[R.PRED_STEP_TIME] > 0  # the live GPU's catalogue entry predicted the step time
    assert R.PEAK_ALLOCATED not in rec


def test_a_measuring_worker_takes_the_prediction_it_is_given(monkeypatch):
    cfg = RunConfig("unet", (32, 32, 32), 1, backend="cpu", repeats=1)
    given = R.prediction_columns(worker.run(RunConfig("unet", (32, 32, 32), 1, backend="predict"), memtracker=False))
    monkeypatch.setattr(worker, "predict", lambda *a, **k: pytest.fail("predicted again"))
    rec = worker.run(cfg, how=wire.Instructions(prediction=given))
    assert rec[R.STATUS] == R.OK and rec[R.STEP_TIME_MEDIAN] > 0  # measured
    assert R.prediction_columns(rec) == given


def test_how_many_processes_predict_ahead():
    from bench.sweep.executor import AHEAD_PER_GPU, ahead_jobs

    assert ahead_jobs(2, 1) == 1 and ahead_jobs(1, 1) == 1  # the core the GPU's worker leaves, at least one
    assert ahead_jobs(16, 1) == AHEAD_PER_GPU  # not every core for one GPU
    assert ahead_jobs(64, 4) == 4 * AHEAD_PER_GPU and ahead_jobs(16, 4) == 12


def test_a_broken_pool_leaves_the_measuring_workers_to_predict(tmp_path):
    """A pool whose process died (the kernel's out-of-memory killer) refuses new work: the sweep goes on."""
    log = []

    class Broken(ThreadPoolExecutor):
        def submit(self, *a, **k):
            raise RuntimeError("A process in the process pool was terminated abruptly")

    ex = PredictAheadExecutor(Measure(log), Predictions(1, pool=Broken))
    recs = run_sweep(CFGS, tmp_path, 60, executor=ex)
    assert len(recs) == 3 and [e[2] for e in log] == [None, None, None]
