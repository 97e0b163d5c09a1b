"""Predictions on every core: an order-keeping map over a process pool (``concurrent.futures``).

A prediction is single-threaded Python work (tracing fake tensors, replaying an allocator model), so
``bench compare``, ``baseline``, ``fit`` and ``paper`` spread their independent predictions over one
process per core (and ``bench validate`` predicts ahead of its GPU in such a pool:
:func:`process_pool`). Results come back in the order of the inputs, and a prediction is deterministic,
so the output is the same as a sequential run's (a test checks this). Processes are started by ``spawn``
(never ``fork``: the parent may hold torch's thread pools, which do not survive a fork) and each runs
one intra-op thread, as the cores are already shared out between processes.

Imports nothing heavy: the function given is imported by name in the children.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

#: environment variable that fixes the CPU threads of a measurement (:func:`bench.measure.cpu.pin_threads`); a
#: ``--jobs`` slot on the CPU is given its share of the cores in it
THREADS_ENV = "SEGMEM_CPU_THREADS"

T = TypeVar("T")
U = TypeVar("U")


def cores() -> int:
    """The processors this process may run on (its affinity, e.g. under SLURM or taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _one_thread(hide_gpus: bool = False) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    if hide_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def process_pool(jobs: int, hide_gpus: bool = False) -> ProcessPoolExecutor:
    """``jobs`` processes started by ``spawn``, one intra-op thread each; ``hide_gpus``: they see no GPU
    (``CUDA_VISIBLE_DEVICES`` empty before torch loads), so that none makes a CUDA context beside a
    measurement."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread,
                               initargs=(hide_gpus,))


def call(target: str, *args: Any) -> Any:
    """``target`` (``module:function``) imported and called here: a pool's task whose module the parent
    never imports (the sweep's parent loads no torch)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def pmap(fn: Callable[[T], U], items: Iterable[T], jobs: int | None = None,
         progress: Callable[[T], Any] | None = None) -> list[U]:
    """``[fn(x) for x in items]`` on ``jobs`` processes (default: every core); ``progress(x)`` is called
    in this process as each item finishes. ``fn`` must be a module-level function (it is pickled by
    name). With one job or one item, everything runs here, in order."""
    items = list(items)
    jobs = min(jobs or cores(), len(items))
    if jobs <= 1:
        out = []
        for x in items:
            out.append(fn(x))
            if progress:
                progress(x)
        return out
    with process_pool(jobs) as pool:
        futures = {pool.submit(fn, x): i for i, x in enumerate(items)}
        results: list[Any] = [None] * len(items)
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                if progress:
                    progress(items[i])
        except BaseException:  # Ctrl-C or a failed item: the rest are not wanted
            _stop(pool)
            raise
    return results


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the processes at once. Leaving the pool's ``with`` waits for the running
    items, and a process interrupted by Ctrl-C sends its KeyboardInterrupt back and goes on to the next it was handed:
    ``bench validate --recorded`` interrupted took 25-30 s to exit after saying so."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())  # (before shutdown, which forgets them)
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
