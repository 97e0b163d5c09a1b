"""One rule for multi-stage architectures: a cascade's memory is its largest stage's.

A cascade's stages are trained one after the other, so the GPU must hold the largest of them, never
their sum; each stage is its own record (``stage`` column). Every reader that judges a whole
architecture (the report's equal-memory table, the memory and largest-input plots, ``bench fit``,
``bench paper``) folds the stages through this module, so that no table can judge a cascade by its
smallest stage (a 3d_lowres stage at 10 GiB beside a 3d_cascade_fullres one at 80 GiB).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd

import architectures

from .. import record as R

#: what identifies one run of a whole architecture (its stages' records differ only in ``stage``)
WHOLE_KEY = (R.ARCH, R.MODE, R.BACKEND, R.PRECISION, R.BATCH, R.SIZE, R.OPTIONS, R.CHANNELS_LAST, R.DICE)
#: status of a whole run some of whose stages have no record
INCOMPLETE = "incomplete"
#: column of :func:`whole_runs` naming the stage whose memory is the cascade's
LARGEST_STAGE = "largest_stage"
_TIMES = (R.STEP_TIME_MEDIAN, R.STEP_TIME_MIN, R.STEP_TIME_MAX, R.STEP_TIME_IQR)


def combine(peaks: Iterable[float]) -> float:
    """The rule: the memory of stages trained one after the other is the largest stage's."""
    return max(peaks)  # not the sum: the earlier stage's model, optimizer state and activations are freed


def _bytes_columns(columns: Iterable[str]) -> list[str]:
    return [c for c in columns if (col := R.column(c)) is not None and col.unit == "bytes" and c != R.OOM_REQUESTED]


def _stage_order(arch: str, mode: str, options: str) -> list[str]:
    spec = architectures.spec(arch)
    if mode != "train" or spec.stages is None:
        return [""]
    return [s.name for s in spec.train_stages(**json.loads(options or "{}"))]


def whole_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a whole architecture. Single-stage records pass through unchanged; a cascade's
    stage records become one row whose memory columns (every ``*_bytes``) are the largest stage's
    (:func:`combine`), whose times are the sum of its stages' (a training step of each), whose other
    columns are its last stage's (the full-resolution one: its patch, labelled voxels and Dice), with
    ``stage`` empty and ``largest_stage`` naming the stage that sets the memory. A run missing a stage
    is ``incomplete``; one with a failed stage has that stage's status."""
    if df.empty or R.STAGE not in df or not df[R.STAGE].fillna("").astype(bool).any():
        return df.assign(**{LARGEST_STAGE: ""})
    df = df.copy()
    for c in WHOLE_KEY:
        if c not in df:
            df[c] = None
    key = [df[c].astype(object).where(df[c].notna(), "").astype(str) for c in WHOLE_KEY]
    staged = df[R.STAGE].fillna("").astype(bool)
    rows = [df[~staged].assign(**{LARGEST_STAGE: ""})]
    memory = _bytes_columns(df.columns)
    for _, g in df[staged].groupby([k[staged] for k in key], sort=False, dropna=False):
        first = g.iloc[0]
        order = _stage_order(first[R.ARCH], first[R.MODE], first[R.OPTIONS])
        g = g.set_index(R.STAGE).reindex([s for s in order if s in set(g[R.STAGE])])
        last = g.iloc[-1].copy()
        missing = [s for s in order if s not in g.index]
        failed = g[g[R.STATUS] != R.OK]
        if missing:
            last[R.STATUS], last[R.ERROR] = INCOMPLETE, f"no record of stage(s) {', '.join(missing)}"
        elif len(failed):
            last[R.STATUS] = failed[R.STATUS].iloc[0]
            last[R.ERROR] = f"stage {failed.index[0]}: {failed[R.ERROR].iloc[0] if R.ERROR in failed else ''}"
        for c in memory:
            values = g[c].dropna()
            last[c] = combine(values) if len(values) == len(g) else None
        for c in _TIMES:
            if c in g:
                last[c] = g[c].sum(min_count=len(g)) if g[c].notna().all() else None
        # by the figure memory_bytes decides with: measured reserved, else predicted as max_memory_reserved counts it
        by = (g[R.PEAK_RESERVED] if R.PEAK_RESERVED in g and g[R.PEAK_RESERVED].notna().all()
              else R.predicted_on_device(g, reserved=True))
        last[LARGEST_STAGE] = by.astype(float).idxmax() if by is not None and by.notna().any() else ""
        last[R.STAGE] = ""
        if R.VOXELS_PER_STEP in g:  # every stage reads its inputs
            last[R.VOXELS_PER_STEP] = g[R.VOXELS_PER_STEP].sum(min_count=1)
        _recompute_rates(last)
        rows.append(last.to_frame().T)
    out = pd.concat(rows, ignore_index=True)
    return out.infer_objects()


def _recompute_rates(row: pd.Series) -> None:
    """Throughputs of a whole cascade: its full-resolution voxels over the sum of its stages' step times."""
    t = row.get(R.STEP_TIME_MEDIAN)
    if t is None or pd.isna(t) or not t:
        return
    for rate, amount in ((R.THROUGHPUT_VOXELS, R.LABELLED_VOXELS_PER_STEP),
                         (R.THROUGHPUT_INPUT_VOXELS, R.VOXELS_PER_STEP), (R.THROUGHPUT_SAMPLES, R.BATCH)):
        if amount in row and pd.notna(row[amount]):
            row[rate] = row[amount] / t
    if R.STEP_TIME_SPREAD in row and R.STEP_TIME_IQR in row and pd.notna(row[R.STEP_TIME_IQR]):
        row[R.STEP_TIME_SPREAD] = row[R.STEP_TIME_IQR] / t
