"""segmem from Python: the figure inside your own code or notebook.

>>> from bench.api import predict
>>> rec = predict("my_pkg.nets:build", size=96, batch=2, precision="fp16", width=32)  # doctest: +SKIP
>>> rec["pred_peak_reserved_bytes"] / 2**30  # doctest: +SKIP

:func:`predict` returns the record ``bench run --backend predict`` writes (a dict keyed by the columns of
:mod:`bench.record`), without a subprocess or a results store; :func:`run` does the same for a CPU or
CUDA measurement. Arguments are validated as the command line validates them (``ValueError``, one line).
"""

from __future__ import annotations

from typing import Any

from .options import Backend, Mode, parse_size
from .record import predicted_on_device


def run(arch: str, size: int | str | tuple[int, int, int] = 128, batch: int = 2, mode: str = Mode.TRAIN,
        precision: str | None = None, backend: str = Backend.PREDICT, in_channels: int = 1, num_classes: int = 3,
        stage: str | None = None, channels_last: bool = False, repeats: int = 3, memtracker: bool = False,
        **overrides: Any) -> dict[str, Any]:
    """The record of one configuration of ``arch`` (a registered name, ``monai:<Network>`` or
    ``module:factory``); ``overrides`` are the architecture's (``--set``).

    A multi-stage architecture's training is one record per stage: ``stage`` picks one, else the stage
    with the largest predicted peak is returned (the cascade's training memory). ``memtracker`` adds
    torch's MemTracker figure (a second trace, as slow as the prediction itself).
    """
    from .sweep import worker
    from .sweep.expand import expand, resolve_backend

    shape = parse_size(size) if isinstance(size, str) else (size,) * 3 if isinstance(size, int) else tuple(size)
    configs = expand([arch], [shape], [batch], [mode], [precision] if precision else [], resolve_backend(backend),
                     channels_last=channels_last, overrides=overrides, repeats=repeats, in_channels=in_channels,
                     num_classes=num_classes)
    if stage is not None:
        configs = [c for c in configs if c.stage == stage]
        if not configs:
            raise ValueError(f"{arch} has no stage {stage!r} at {mode}")
    records = [worker.run(c, memtracker=memtracker) for c in configs]
    return max(records, key=lambda r: predicted_on_device(r, reserved=True) or 0)


def predict(arch: str, size: int | str | tuple[int, int, int] = 128, batch: int = 2, mode: str = Mode.TRAIN,
            precision: str | None = None, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> dict[str, Any]:
    """The GPU-free prediction of CUDA's peak memory for one configuration, as a record (a dict): e.g.
    ``pred_peak_reserved_bytes``, ``pred_peak_allocated_bytes``, the breakdown ``pred_<category>_bytes``,
    ``params``, ``flops_per_step``. Keyword arguments other than the named ones are the network's
    overrides (``width=32``, ``feature_size=48``, ``divisor=16``)."""
    return run(arch, size, batch, mode, precision, Backend.PREDICT, in_channels, num_classes, **overrides)


__all__ = ["predict", "run"]
