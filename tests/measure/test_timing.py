"""CPU step times: warm-up until settled, repeats until the spread is small, threads pinned."""

import torch

from bench import parallel
from bench.measure import cpu, timing


class FakeClock:
    """A step whose durations are scripted: ``clock`` advances by the next duration at each step."""

    def __init__(self, durations):
        self.now, self.durations, self.steps = 0.0, list(durations), 0

    def clock(self):
        return self.now

    def step(self):
        self.now += self.durations[self.steps]
        self.steps += 1


def test_warm_up_runs_until_two_steps_agree():
    f = FakeClock([4.26, 1.0, 0.65, 0.62, 0.61])  # the first steps pay for kernel selection and caches
    assert timing.settle(f.step, budget_s=1000, clock=f.clock) == 4  # 0.65 then 0.62 agree within 10 %
    f = FakeClock([5.0] * 3)
    assert timing.settle(f.step, budget_s=1000, clock=f.clock) == 2
    f = FakeClock([5.0, 1.0, 3.0, 2.0])
    assert timing.settle(f.step, budget_s=6, clock=f.clock) == 2  # the budget ends it


def test_repeats_until_the_spread_is_small_and_never_fewer_than_asked():
    steady = FakeClock([1.0, 1.01, 0.99, 1.0, 1.02, 1.0] + [1.0] * 30)
    times = timing.timed_steps(steady.step, 3, budget_s=1000, clock=steady.clock)
    assert len(times) == timing.MIN_FOR_SPREAD and timing.spread(times) <= timing.TARGET_SPREAD
    noisy = FakeClock([1.0, 2.0] * 50)
    times = timing.timed_steps(noisy.step, 3, max_repeats=12, budget_s=1000, clock=noisy.clock)
    assert len(times) == 12 and timing.spread(times) > timing.TARGET_SPREAD  # gave up, and the spread says so
    slow = FakeClock([30.0, 60.0] * 10)
    assert len(timing.timed_steps(slow.step, 3, budget_s=60, clock=slow.clock)) == 3  # the budget, but >= repeats


def test_the_record_carries_the_spread_and_both_throughputs():
    rec = timing.summarize([1.0, 1.0, 2.0, 2.0], 100, 300, 2, None, None)
    assert rec["step_time_median_s"] == 1.5 and rec["step_time_spread"] == rec["step_time_iqr_s"] / 1.5 > 0
    assert rec["throughput_voxels_per_s"] == 100 / 1.5 and rec["throughput_input_voxels_per_s"] == 300 / 1.5


def test_threads_are_pinned(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(parallel.THREADS_ENV, "1")
        assert cpu.pin_threads() == 1 == torch.get_num_threads()
        monkeypatch.delenv(parallel.THREADS_ENV)
        monkeypatch.setattr(cpu.os, "getloadavg", lambda: (99.0, 0, 0))  # a machine busier than its cores
        assert cpu.pin_threads() == 1
        monkeypatch.setattr(cpu.os, "getloadavg", lambda: (0.0, 0, 0))
        assert cpu.pin_threads() == len(cpu.os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(timing.BUDGET_ENV, "7.5")
    assert timing.budget() == 7.5
    monkeypatch.delenv(timing.BUDGET_ENV)
    assert timing.budget() == 60.0
