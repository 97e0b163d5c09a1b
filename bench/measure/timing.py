"""Step-time statistics: median and spread over repeats, and the throughput derived from them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .. import record as R


def summarize(times_s: Sequence[float], voxels: int, samples: int, flops: int | None,
              peak_flops_per_s: float | None) -> dict[str, Any]:
    med = statistics.median(times_s)
    q = statistics.quantiles(times_s, n=4) if len(times_s) >= 2 else [med, med, med]
    rec: dict[str, Any] = {
        R.STEP_TIME_MEDIAN: med,
        R.STEP_TIME_MIN: min(times_s),
        R.STEP_TIME_MAX: max(times_s),
        R.STEP_TIME_IQR: q[2] - q[0],
        R.REPEATS: len(times_s),
        R.THROUGHPUT_VOXELS: voxels / med if med > 0 else None,
        R.THROUGHPUT_SAMPLES: samples / med if med > 0 else None,
        R.ACHIEVED_FLOPS: (flops / med) if (flops and med > 0) else None,
    }
    rec[R.PEAK_FLOPS] = peak_flops_per_s
    rec[R.FLOPS_FRACTION] = (
        rec[R.ACHIEVED_FLOPS] / peak_flops_per_s if (peak_flops_per_s and rec[R.ACHIEVED_FLOPS]) else None
    )
    return rec
