"""Predicted time on a chosen GPU for the readers of results (``bench report --gpu``, ``bench fit --gpu``).

A record keeps its step's roofline work (``pred_work``), so any catalogue GPU's step time follows from
the record without a new trace (:func:`retime`). Time per epoch is :data:`EPOCH_STEPS` steps, nnU-Net's
250 iterations per epoch, the unit nnU-Net's published epoch times are given in.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import record as R

EPOCH_STEPS = 250  # nnU-Net's num_batches_per_epoch


def retime(df: pd.DataFrame, gpu: str) -> pd.DataFrame:
    """``df`` with the predicted time columns for ``gpu`` (a catalogue name), from each row's ``pred_work``."""
    from ..measure.gpus import lookup
    from ..measure.predict import time_columns
    from ..measure.roofline import work_from_json

    g = lookup(gpu)
    out = df.copy()
    if R.PRED_WORK not in out.columns:
        return out
    rows = []
    for work, batch, voxels in zip(out[R.PRED_WORK], out[R.BATCH], out.get(R.VOXELS_PER_STEP, out[R.BATCH] * 0),
                                   strict=True):
        ok = isinstance(work, str)
        rows.append(time_columns(work_from_json(work), g, int(batch), int(voxels) if voxels == voxels else None)
                    if ok else {})
    cols = pd.DataFrame(rows, index=out.index)
    for c in cols.columns:
        out[c] = cols[c]
    return out


def epoch_seconds(step_s: pd.Series) -> pd.Series:
    return step_s * EPOCH_STEPS


def predicted_epoch(name: str, overrides: dict[str, Any], size: tuple[int, int, int], batch: int, mode: str,
                    precision: str, gpu: str) -> float:
    """Seconds per epoch of an architecture on ``gpu`` (a cascade: its stages one after the other)."""
    import architectures

    from ..measure.gpus import lookup
    from ..measure.predict import count_flops
    from ..measure.roofline import step_time

    spec = architectures.spec(name)
    stages = spec.train_stages(**overrides) if (mode == "train" and spec.stages) else None
    parts = [(s.spec, dict(s.overrides)) for s in stages] if stages else [(spec, overrides)]
    g = lookup(gpu)
    return sum(step_time(count_flops(sp, ov, size, batch, mode, precision, False)[1], g)[0] for sp, ov in parts) \
        * EPOCH_STEPS
