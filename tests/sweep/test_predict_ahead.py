"""The prediction of a configuration made by CPU workers ahead of its measurement
(``PredictAheadExecutor``, ``bench validate``), and a worker's part of it (``wire.Instructions``)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench import record as R
from bench.sweep import wire, worker
from bench.sweep.config import RunConfig
from bench.sweep.executor import PredictAheadExecutor, Predictions, run_sweep
from bench.sweep.share import GateClosed, MemoryGate
from bench.version import code_version

CFGS = [RunConfig("unet", (s, s, s), 1, backend="cuda") for s in (32, 48, 64)]


def record(cfg, status=R.OK):
    return {R.KEY: cfg.key(), R.STATUS: status, R.PRED_ALLOCATED: cfg.size[0], R.PEAK_ALLOCATED: 7,
            R.WORKER_TIME: 1.0, R.CODE_VERSION: code_version()}


class Measure:
    """A measuring executor that says what it was given and when; each measurement takes ``delay`` s."""

    prestart = 1

    def __init__(self, log, delay=0.0, meeting=None):
        self.log, self.delay, self.meeting = log, delay, meeting

    def run(self, cfg, timeout_s, how=None, upcoming=()):
        self.log.append(("measure", cfg.size[0], how, time.monotonic(), tuple(c.size[0] for c in upcoming)))
        if self.meeting is not None:
            self.meeting.arrive()
        time.sleep(self.delay)
        return record(cfg)

    def cancel(self):
        pass

    def close(self):
        pass


class Meeting:
    """Where the first ``n`` measurements wait for each other (up to 10 s), so that each executor has started one
    before any ends, however the test processes' threads are scheduled; the later ones pass."""

    def __init__(self, n):
        self.n, self.count, self.lock, self.all = n, 0, threading.Lock(), threading.Event()

    def arrive(self):
        with self.lock:
            self.count += 1
            if self.count >= self.n:
                self.all.set()
        self.all.wait(10)


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
    assert [e[4] for e in measured] == [(48,), (64,), ()]


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
    log, meeting = [], Meeting(2)
    one = ahead(log, jobs=2, live_gpu="H100-SXM")
    one.measure.meeting = meeting  # (else a busy machine may let one executor run two before the other starts)
    two = PredictAheadExecutor(Measure(log, meeting=meeting), one.ahead, "H100-SXM")  # a second GPU of the same kind
    run_sweep(CFGS, tmp_path, 60, executor=[one, two])
    assert sorted(e[1] for e in log if e[0] == "predict") == [32, 48, 64]  # each predicted once
    assert sorted(e[1] for e in log if e[0] == "measure") == [32, 48, 64]
    # each executor takes its next configuration as it starts one: the first to start is told 48, the other runs 64
    assert sorted(e[4] for e in log if e[0] == "measure") == [(), (), (48,)]


def test_executors_of_a_pool_take_their_next_configuration_as_they_start_one():
    """Several executors (GPUs, or --share-gpu's slots): each is dealt the configuration after the one it starts, so
    that its worker for it is sent it ahead; one that finds nothing left runs another's next at once."""
    from bench.sweep.executor import _Lanes

    lanes = _Lanes([1, 2, 3, 4, 5])
    assert lanes.take("a") == (1, (2,)) and lanes.take("b") == (3, (4,))  # in the sweep's order
    assert lanes.take("a") == (2, (5,)) and lanes.take("b") == (4, ())
    assert lanes.take("b") == (5, ())  # a's next: b is idle and a busy with 2
    assert lanes.take("a") == (None, ())
    stopped = _Lanes([1, 2])
    stopped.stop()
    assert stopped.take("a") == (None, ())  # interrupted: nothing more starts


def test_executors_told_of_their_next_two_keep_two_ahead_and_an_idle_one_takes_the_last_of_the_longest_queue():
    from bench.sweep.executor import _Lanes

    lanes = _Lanes(list(range(1, 9)), depth=2)
    assert lanes.take("a") == (1, (2, 3)) and lanes.take("b") == (4, (5, 6))
    assert lanes.take("a") == (2, (3, 7)) and lanes.take("a") == (3, (7, 8))
    assert lanes.take("b") == (5, (6,))  # nothing left to deal
    assert lanes.take("c") == (8, ())  # a third, idle, takes a's last: a's worker for 7 keeps its head start
    assert lanes.take("a") == (7, ()) and lanes.take("b") == (6, ()) and lanes.take("b") == (None, ())


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
    """The cores the measuring workers and their spares leave, at least one process per executor."""
    from bench.sweep.executor import AHEAD_PER_GPU, ahead_jobs, spares_ahead

    assert ahead_jobs(2, 1) == 1 and ahead_jobs(1, 1) == 1  # at least one
    assert ahead_jobs(16, 1) == AHEAD_PER_GPU  # not every core for one GPU
    assert ahead_jobs(16, 3) == 4  # bench validate --share-gpu 3 on the lent H100: 12 workers, 4 cores left
    assert ahead_jobs(64, 4) == 4 * AHEAD_PER_GPU and ahead_jobs(16, 4) == 4  # (16 workers: one each)
    for cores in range(1, 65):
        for gpus in range(1, 9):
            jobs, workers = ahead_jobs(cores, gpus), gpus * (1 + spares_ahead(cores, gpus))
            assert gpus <= jobs <= max(gpus, AHEAD_PER_GPU * gpus), (cores, gpus)
            if jobs > gpus:  # more than the floor: every process, measuring, spare or predicting, has a core
                assert workers + jobs <= cores, (cores, gpus)


def test_how_many_spares_each_executor_keeps():
    """A core for each worker, measuring or spare, where the cores allow more than the one spare every executor
    keeps; no more than SPARES_AHEAD."""
    from bench.sweep.executor import SPARES_AHEAD, spares_ahead

    assert spares_ahead(16, 3) == 3  # the lent H100 machine, bench validate --share-gpu 3: 12 workers on 16 cores
    assert spares_ahead(2, 1) == 1 and spares_ahead(2, 3) == 1  # this machine: one each, whatever the cores
    for cores in range(1, 65):
        for executors in range(1, 9):
            spares = spares_ahead(cores, executors)
            assert 1 <= spares <= SPARES_AHEAD
            assert executors * (1 + spares) <= max(cores, 2 * executors), (cores, executors)
            if spares < SPARES_AHEAD:  # one more would leave a worker without a core
                assert executors * (2 + spares) > cores, (cores, executors)


def test_a_broken_pool_leaves_the_measuring_workers_to_predict(tmp_path):
    """A pool whose process died (the kernel's out-of-memory killer) refuses new work: the sweep goes on."""
    log = []

    class Broken(ThreadPoolExecutor):
        def submit(self, *a, **k):
            raise RuntimeError("A process in the process pool was terminated abruptly")

    ex = PredictAheadExecutor(Measure(log), Predictions(1, pool=Broken))
    recs = run_sweep(CFGS, tmp_path, 60, executor=ex)
    assert len(recs) == 3 and [e[2] for e in log] == [None, None, None]


# ----- several measurements on one GPU (bench validate --share-gpu) -----------------------------------------------

GiB = 2**30


class Side:
    """Measurements on one shared GPU: records who ran beside whom. A size in ``partner`` waits (up to 10 s) for its
    partner to have started before it ends, so that two the gate admits together are seen together however slowly
    the threads come; a size in ``oom_beside`` runs out of memory when another measurement ran during it (as on a
    GPU the others filled)."""

    def __init__(self, partner=None, oom_beside=()):
        self.partner, self.oom_beside = partner or {}, oom_beside
        self.running, self.started, self.beside, self.now, self.runs = set(), set(), {}, {}, []
        self.cond = threading.Condition()

    def wait_started(self, size):
        with self.cond:
            self.cond.wait_for(lambda: size in self.started, timeout=10)

    prestart = 1

    def run(self, cfg, timeout_s, how=None, upcoming=()):
        s = cfg.size[0]
        with self.cond:
            self.runs.append(s)
            self.now[s] = set()  # who ran beside this run
            self.running.add(s)
            self.started.add(s)
            for o in self.running:
                self.beside.setdefault(o, set()).update(self.running - {o})
                self.now[o].update(self.running - {o})
            self.cond.notify_all()
            if s in self.partner:
                self.cond.wait_for(lambda: self.partner[s] in self.started, timeout=10)
            self.running.discard(s)
            crowded = bool(self.now[s])
        rec = record(cfg, R.OOM if crowded and s in self.oom_beside else R.OK)
        rec.update({R.STEP_TIME_MEDIAN: 0.1, R.THROUGHPUT_SAMPLES: 10.0, R.NVML_PEAK: 5 * GiB})
        return rec

    def cancel(self):
        pass

    def close(self):
        pass


def sharing(side, needs, slots=3, capacity=10 * GiB, after=None):
    """``slots`` executors measuring on one GPU through one gate; ``needs``: each size's predicted bytes; ``after``:
    a size's prediction is ready only once the given size's measurement started (the order they reach the gate)."""
    def predictor(config_json, live_gpu):
        s = RunConfig.from_json(config_json).size[0]
        if s in (after or {}):
            side.wait_started(after[s])
        return {R.STATUS: R.OK, R.PRED_ALLOCATED: s, **({R.PRED_NVIDIA_SMI: needs[s]} if s in needs else {})}

    predictions = Predictions(3, pool=ThreadPoolExecutor, predictor=predictor)
    gate = MemoryGate(capacity, slots)
    return [PredictAheadExecutor(side, predictions, "H100-SXM", gate=gate) for _ in range(slots)], gate


def test_the_gate_admits_in_turn_what_fits_beside_the_running():
    gate, order = MemoryGate(10, 3), []
    first = gate.hold(6)
    held = first.__enter__()

    def take(name, need):
        with gate.hold(need) as h:
            order.append(name)
            time.sleep(0.2)
        return h

    with ThreadPoolExecutor(2) as pool:
        big = pool.submit(take, "big", 6)  # 6 + 6 > 10: waits for the first
        time.sleep(0.1)
        small = pool.submit(take, "small", 3)  # would fit now, but the big one asked first
        time.sleep(0.2)
        assert order == [] and gate.in_use == 6
        first.__exit__(None, None, None)
    assert order == ["big", "small"]  # first come, first served: the large one is not overtaken
    assert held.shared is False and big.result().shared and small.result().shared  # 6 + 3 fit together
    assert gate.in_use == 0
    assert MemoryGate(10, 3).need({R.PRED_NVIDIA_SMI: 4}) == 4 and MemoryGate(10, 3).need(None) == 10  # none: alone
    with pytest.raises(ValueError, match="--share-gpu must be >= 1"):
        MemoryGate.for_gpu(80 * GiB, 0)


def test_measurements_that_fit_together_share_the_gpu_and_keep_only_their_own_figures(tmp_path):
    side = Side(partner={32: 48, 48: 32})  # each ends only once the other has started: admitted together, or stuck
    needs = {32: 3 * GiB, 48: 3 * GiB, 64: 9 * GiB}  # 32 and 48 fit together; 64 needs the GPU to itself
    pool, _ = sharing(side, needs, after={32: 64, 48: 64})  # 64 reaches the gate first
    recs = {r[R.KEY]: r for r in run_sweep(CFGS, tmp_path, 60, executor=pool)}
    by_size = {c.size[0]: recs[c.key()] for c in CFGS}
    assert side.beside[32] == {48} and not side.beside.get(64)
    for s in (32, 48):  # the allocator's figures kept; times and NVML's device figure, which the other disturbed, not
        assert by_size[s][R.GPU_SHARED] is True and by_size[s][R.PEAK_ALLOCATED] == 7
        assert by_size[s][R.STEP_TIME_MEDIAN] is None and by_size[s][R.NVML_PEAK] is None
        assert by_size[s][R.THROUGHPUT_SAMPLES] is None
    assert R.GPU_SHARED not in by_size[64] and by_size[64][R.STEP_TIME_MEDIAN] == 0.1  # alone: all its own


def test_what_runs_out_of_memory_beside_another_is_measured_again_alone(tmp_path):
    # the two executors start 32 (48 next) and 64: they run together, and 64 runs out of memory
    side = Side(partner={32: 64, 64: 32}, oom_beside=(64,))
    pool, _ = sharing(side, {32: 3 * GiB, 48: 3 * GiB, 64: 3 * GiB}, slots=2)
    recs = {r[R.KEY]: r for r in run_sweep(CFGS, tmp_path, 60, executor=pool)}
    again = recs[CFGS[2].key()]
    assert side.runs.count(64) == 2 and again[R.STATUS] == R.OK  # alone the second time: it fits
    assert R.GPU_SHARED not in again and again[R.STEP_TIME_MEDIAN] == 0.1


def test_an_interrupted_sweep_turns_away_what_waits_for_its_turn():
    """Ctrl-C (or the device script's hard stop) cancels the executors: a thread waiting in the gate must not keep
    the process from exiting, and what waited is not measured (nothing recorded: the next sweep runs it)."""
    side = Side()
    pool, gate = sharing(side, {32: 9 * GiB, 48: 9 * GiB}, slots=2)
    busy = gate.hold(9 * GiB)
    busy.__enter__()  # the GPU is taken: 48 waits
    with ThreadPoolExecutor(1) as threads:
        waiting = threads.submit(pool[0].run, CFGS[1], 60)
        time.sleep(0.3)
        assert not waiting.done()
        pool[0].cancel()
        assert waiting.result(timeout=5) is None
    assert side.runs == []
    with pytest.raises(GateClosed):
        gate.hold(1).__enter__()
