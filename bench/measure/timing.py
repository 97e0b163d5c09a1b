"""Step-time statistics: median and spread over repeats, and the throughput derived from them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summarize(times_s: Sequence[float], voxels: int, samples: int, flops: int | None,
              peak_flops_per_s: float | None) -> dict[str, Any]:
    med = statistics.median(times_s)
    q = statistics.quantiles(times_s, n=4) if len(times_s) >= 2 else [med, med, med]
    rec: dict[str, Any] = {
        "step_time_median_s": med,
        "step_time_min_s": min(times_s),
        "step_time_max_s": max(times_s),
        "step_time_iqr_s": q[2] - q[0],
        "repeats": len(times_s),
        "throughput_voxels_per_s": voxels / med if med > 0 else None,
        "throughput_samples_per_s": samples / med if med > 0 else None,
        "achieved_flops_per_s": (flops / med) if (flops and med > 0) else None,
    }
    rec["peak_flops_per_s"] = peak_flops_per_s
    rec["achieved_flops_fraction"] = (
        rec["achieved_flops_per_s"] / peak_flops_per_s if (peak_flops_per_s and rec["achieved_flops_per_s"]) else None
    )
    return rec


# Dense tensor-core peaks from the vendors' datasheets (FLOP/s), by GPU name substring and precision.
# fp32 means plain FP32 (not TF32). Extend as needed; unknown devices report no fraction.
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "P100": {"fp16": 18.7e12, "fp32": 9.3e12},
}


def peak_flops(device_name: str | None, precision: str) -> float | None:
    if not device_name:
        return None
    for key, rates in PEAK_FLOPS.items():
        if key in device_name:
            return rates.get(precision)
    return None
