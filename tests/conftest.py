import os

import pytest
import torch

#: test processes side by side (pytest-xdist's workers; 1 without it): two torch threads for one, else one each
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, 2 // WORKERS))
# CPU timing repeats until its spread is small, for up to a minute per configuration: the tests check
# what is recorded, not how stable a time is, so their workers (which inherit this) time briefly
os.environ.setdefault("SEGMEM_CPU_TIME_BUDGET_S", "1")


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): a test process per core, at most 4. Much of the suite is single-threaded
    Python (imports, tracing, worker processes starting), which one process leaves a core idle for (the README's
    developer section has the suite's times); each further process costs the memory of nnU-Net's networks
    stepped on the CPU (GBs)."""
    from bench.parallel import cores

    return max(1, min(4, cores()))


def pytest_collection_modifyitems(config, items) -> None:
    """The files that hold a test marked ``slow`` first (each file's tests kept together, in their order): under
    ``--dist loadfile`` a file is handed to the first free test process in this order, so the long files start
    early and the short ones fill in at the end, not a long one running alone at the end of the run."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: within a file, and among files, the given order


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
