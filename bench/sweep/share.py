"""Several measurements on one GPU at once, each admitted when its predicted memory fits beside the others'.

``bench validate --share-gpu N`` measures up to N configurations side by side on one GPU: most of a
validation worker's time is the CPU's (imports, the network built, the snapshot written) or cuDNN's
benchmark, which leave the GPU's memory mostly free. Each measuring process has its own caching
allocator, so its ``max_memory_allocated`` / ``max_memory_reserved`` are its own whatever else runs
on the device; its step times and NVML's figures are not (:func:`bench.record.shared` empties them).

:class:`MemoryGate` admits a measurement when the memory its prediction says it needs on the device
(``pred_nvidia_smi_bytes``: peak reserved with cuDNN's workspaces, plus the CUDA context) fits in the
gate's capacity beside those running, first come first served, so a large configuration is not
overtaken for ever by small ones; one with no prediction runs alone. What runs out of memory while
sharing is measured again alone (:class:`bench.sweep.executor.PredictAheadExecutor`): it may have
run out because of the others.

Imports no torch (the sweep's parent).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import record as R

#: the part of the GPU's memory the gate hands out: the rest covers the predictions' errors (a few percent at
#: most on the recorded runs) and what the device's driver and the measuring processes' NVML samplers hold
SHARE_OF_MEMORY = 0.85


class GateClosed(Exception):
    """The gate was closed (:meth:`MemoryGate.close`) while a measurement waited for its turn."""


@dataclass(eq=False)  # each one itself: two of the same need are two measurements
class Held:
    """A measurement admitted by the gate; ``shared``: another ran on the GPU at some point while it was held."""

    need: int
    shared: bool = False


@dataclass
class MemoryGate:
    """Admits measurements onto one GPU while their predicted needs fit ``capacity`` bytes together, at most
    ``slots`` at once, in the order they asked (see the module docstring)."""

    capacity: int
    slots: int
    _closed: bool = field(default=False, repr=False)
    _running: list[Held] = field(default_factory=list, repr=False)
    _queue: list[int] = field(default_factory=list, repr=False)
    _tickets: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @classmethod
    def for_gpu(cls, memory_bytes: int, slots: int) -> MemoryGate:
        """The gate of a GPU of ``memory_bytes``: :data:`SHARE_OF_MEMORY` of it handed out, ``slots`` at once."""
        if slots < 1:
            raise ValueError(f"--share-gpu must be >= 1; got {slots}")
        return cls(int(memory_bytes * SHARE_OF_MEMORY), slots)

    def need(self, prediction: Mapping[str, Any] | None) -> int:
        """What a configuration needs on the device by its prediction's columns; the whole capacity (it runs
        alone) where there is no prediction to go by."""
        smi = (prediction or {}).get(R.PRED_NVIDIA_SMI)
        return int(smi) if isinstance(smi, int | float) and smi == smi and smi > 0 else self.capacity

    @property
    def in_use(self) -> int:
        with self._cond:
            return sum(h.need for h in self._running)

    def _fits(self, need: int) -> bool:
        if not self._running:  # alone, whatever it needs: the measurement says whether it fits the GPU
            return True
        return len(self._running) < self.slots and sum(h.need for h in self._running) + need <= self.capacity

    def close(self) -> None:
        """Turn away every measurement waiting and every later one (:class:`GateClosed`): the sweep was interrupted,
        and a thread waiting here would keep its process from exiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @contextmanager
    def hold(self, need: int) -> Iterator[Held]:
        """Wait for the turn of a measurement needing ``need`` bytes (first come, first served) and hold them
        while it runs; ``need`` of the whole capacity or more: it runs alone. Raises :class:`GateClosed` once the
        gate is closed."""
        held = Held(need)
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            self._cond.wait_for(lambda: self._closed or (self._queue[0] == ticket and self._fits(need)))
            if self._closed:
                self._queue.remove(ticket)
                raise GateClosed("the sweep was interrupted")
            self._queue.pop(0)
            if self._running:
                held.shared = True
                for other in self._running:
                    other.shared = True
            self._running.append(held)
            self._cond.notify_all()  # the next in the queue may fit too
        try:
            yield held
        finally:
            with self._cond:
                self._running.remove(held)
                self._cond.notify_all()


__all__ = ["SHARE_OF_MEMORY", "GateClosed", "Held", "MemoryGate"]
