import os

import pytest
import torch

torch.set_num_threads(2)
# CPU timing repeats until its spread is small, for up to a minute per configuration: the tests check
# what is recorded, not how stable a time is, so their workers (which inherit this) time briefly
os.environ.setdefault("SEGMEM_CPU_TIME_BUDGET_S", "1")


@pytest.fixture
def cpu_only():
    if torch.cuda.is_available():
        pytest.skip("asserts CPU-only behaviour")


def _race(target, *args, n: int = 2, timeout: float = 120) -> None:
    """Run ``target(*args)`` in ``n`` spawned processes at once (two sweeps on one directory) and check that
    each ended cleanly."""
    import multiprocessing as mp

    procs = [mp.get_context("spawn").Process(target=target, args=args) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0


@pytest.fixture
def race():
    """:func:`_race`, for tests that run processes side by side."""
    return _race
