"""The step-time prediction held against nnU-Net's published epoch times (``bench validate-published``).

Truth: nnU-Net's ``documentation/expected_epoch_times.md`` (github.com/MIC-DKFZ/nnUNet, nnU-Net v1,
PyTorch 1.7.1 with cuDNN 8.1.0.77, mixed precision): the "3d_fullres dummy" rows, epochs of
nnUNetTrainerV2_5epochs_dummyLoad (random inputs, no data loading or augmentation: GPU time) for
three Medical Segmentation Decathlon tasks on seven GPUs. An nnU-Net v1 epoch is 250 training
iterations plus 50 validation iterations (forward pass and loss only, ``num_val_batches_per_epoch``),
so the predicted epoch is ``250 * step + 50 * forward``.

The networks: patch size, batch size and median spacing of each task's nnU-Net v1 3d_fullres plan
(``nnUNetPlansv2.1``) as published in the nnU-Net paper's supplementary material (Isensee et al.,
Nature Methods 2021); kernels and strides are *re-planned* from patch and spacing with nnunetv2's
planner function (``get_pool_and_conv_props``, the same algorithm as v1's), through this suite's
``nnunet`` spec with deep supervision on and v1's 30 base features. Differences from the benchmarked
v1 step, said here because they bias the prediction: one input channel and three output classes for
every task (Prostate has two input modalities, Heart two classes). The step trains by the ``nnunet``
spec's recipe (:func:`architectures.recipe.nnunet`: SGD with Nesterov momentum 0.99, weight decay 3e-5,
DC + CE with deep supervision, clipping at 12), which is v1's ``nnUNetTrainerV2`` recipe too; the
efficiency scales were fitted on traces with Adam and the paper's loss, before recipes existed, and
were not re-fitted.

The efficiency scales are fitted (log-error least squares) on the *fit* rows only: GPUs A100, V100
SXM3, RTX 2080 Ti and Titan Xp (one per generation) on Heart and Liver. Every other row is held out:
held-out GPUs (V100 PCIe, Quadro RTX 6000, Titan RTX), the held-out task (Prostate), or both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SOURCE = ("nnU-Net documentation/expected_epoch_times.md, table 'Pytorch 1.7.1 compiled with cuDNN 8.1.0.77', "
          "row '{task} 3d_fullres dummy', column '{column}' (github.com/MIC-DKFZ/nnUNet, commit 13b2fa98)")
PLANS_SOURCE = ("nnU-Net v1 3d_fullres plan (nnUNetPlansv2.1): patch, batch and median spacing as published in "
                "Isensee et al., Nature Methods 18:203-211 (2021), supplementary material; kernels/strides re-planned "
                "with nnunetv2 get_pool_and_conv_props")
TABLE = Path("reports/validation/published_epoch_times.csv")
TRAIN_ITERATIONS, VAL_ITERATIONS = 250, 50  # nnU-Net v1's num_batches_per_epoch / num_val_batches_per_epoch
FIT_GPUS = ("A100-40GB", "V100-SXM3", "RTX-2080-Ti", "Titan-Xp")
FIT_TASKS = ("Task002_Heart", "Task003_Liver")
# ranking: published times closer than this (relative) are a tie (the documentation: "fluctuations of a couple
# of seconds are normal")
TIE = 0.03


@dataclass(frozen=True)
class Task:
    patch: tuple[int, int, int]
    batch: int
    spacing: tuple[float, float, float]


TASKS = {
    "Task002_Heart": Task((80, 192, 160), 2, (1.37, 1.25, 1.25)),
    "Task003_Liver": Task((128, 128, 128), 2, (1.0, 0.77, 0.77)),
    "Task005_Prostate": Task((20, 320, 256), 2, (3.6, 0.62, 0.62)),
}

# the documentation's column heading -> catalogue name
COLUMNS = {
    "A100 40GB (DGX A100) 400W": "A100-40GB",
    "V100 32GB SXM3 (DGX2) 350W": "V100-SXM3",
    "V100 32GB PCIe 250W": "V100-PCIe",
    "Quadro RTX6000 24GB 260W": "Quadro-RTX-6000",
    "Titan RTX 24GB 280W": "Titan-RTX",
    "RTX 2080 ti 11GB 250W": "RTX-2080-Ti",
    "Titan Xp 12GB 250W": "Titan-Xp",
}
PUBLISHED = {  # seconds per epoch, "3d_fullres dummy" rows, columns in COLUMNS' order
    "Task002_Heart": (48.53, 79, 89.66, 105.16, 105.56, 138.4, 501.64),
    "Task003_Liver": (41.1, 70.96, 80.1, 79.43, 79.43, 101.54, 289.03),
    "Task005_Prostate": (43.87, 70.58, 81.32, 97.48, 98.99, 124.73, 410.12),
}


def split(task: str, gpu: str) -> str:
    held = [what for what, fit in (("gpu", gpu in FIT_GPUS), ("task", task in FIT_TASKS)) if not fit]
    return "fit" if not held else "held-out " + "+".join(held)


def published_rows() -> pd.DataFrame:
    """One row per published figure, with its source and its split."""
    rows = [{"task": task, "gpu": gpu, "published_gpu": column, "config": "3d_fullres dummy",
             "published_epoch_s": secs, "split": split(task, gpu),
             "source": SOURCE.format(task=task, column=column), "plans": PLANS_SOURCE}
            for task, times in PUBLISHED.items() for (column, gpu), secs in zip(COLUMNS.items(), times, strict=True)]
    return pd.DataFrame(rows)


def task_work(task: str) -> list:
    """The roofline work of one nnU-Net v1 3d_fullres training step of ``task`` (a fake-tensor trace)."""
    import architectures

    from ..measure.predict import count_flops

    t = TASKS[task]
    overrides = {"planned_for": t.patch, "spacing": t.spacing, "deep_supervision": True, "base_features": 30}
    return count_flops(architectures.spec("nnunet"), overrides, t.patch, t.batch, "train", "fp16", False)[1]


def epoch_seconds(work: list, gpu: str, factors) -> float:  # noqa: ANN001
    from ..measure import gpus
    from ..measure.roofline import step_time

    g = gpus.lookup(gpu)
    step, _ = step_time(work, g, factors)
    forward, _ = step_time(work, g, factors, keep=lambda w: w.forward)
    return TRAIN_ITERATIONS * step + VAL_ITERATIONS * forward


def predict_rows(rows: pd.DataFrame, works: dict[str, list], factors) -> pd.DataFrame:  # noqa: ANN001
    out = rows.copy()
    out["pred_epoch_s"] = [epoch_seconds(works[t], g, factors) for t, g in zip(out["task"], out["gpu"], strict=True)]
    out["error"] = out["pred_epoch_s"] / out["published_epoch_s"] - 1
    return out


def fit(rows: pd.DataFrame, works: dict[str, list]) -> tuple[float, float, float, float]:
    """Scales (tensor-core compute, CUDA-core compute, bandwidth, launch s) minimising the squared log error
    of the fit rows."""
    from scipy.optimize import least_squares

    from ..measure.roofline import STATED

    train = rows[rows["split"] == "fit"]

    def residuals(x):  # noqa: ANN001, ANN202
        f = STATED.scaled(*map(math.exp, x))
        return [math.log(epoch_seconds(works[t], g, f) / p)
                for t, g, p in zip(train["task"], train["gpu"], train["published_epoch_s"], strict=True)]

    x0 = [0.0, 0.0, 0.0, math.log(5e-6)]
    res = least_squares(residuals, x0, bounds=([-5, -5, -5, math.log(1e-7)], [1, 1, 1, math.log(1e-3)]))
    return tuple(float(f"{math.exp(v):.4g}") for v in res.x)  # type: ignore[return-value]


def ranking(pred: pd.DataFrame) -> pd.DataFrame:
    """Per task: GPU pairs whose published times differ by more than TIE, and how many the prediction
    orders the other way round."""
    out = []
    for task, d in pred.groupby("task", sort=False):
        recs = list(d.itertuples())
        pairs = [(a, b) for i, a in enumerate(recs) for b in recs[i + 1:]
                 if abs(a.published_epoch_s / b.published_epoch_s - 1) > TIE]
        wrong = [f"{a.gpu}/{b.gpu}" for a, b in pairs
                 if (a.published_epoch_s < b.published_epoch_s) != (a.pred_epoch_s < b.pred_epoch_s)]
        out.append({"task": task, "pairs": len(pairs), "misordered": len(wrong), "which": ", ".join(wrong),
                    "predicted order": " < ".join(d.sort_values("pred_epoch_s")["gpu"]),
                    "published order": " < ".join(d.sort_values("published_epoch_s")["gpu"])})
    return pd.DataFrame(out)


def summary(pred: pd.DataFrame) -> pd.DataFrame:
    """Median and worst absolute error per split (fit rows and each kind of held-out row, and all held out)."""
    groups = [(s, pred[pred["split"] == s]) for s in sorted(pred["split"].unique())]
    groups.append(("held-out (all)", pred[pred["split"] != "fit"]))
    return pd.DataFrame([{"split": s, "rows": len(d), "median_abs_error": d["error"].abs().median(),
                          "worst_abs_error": d["error"].abs().max()} for s, d in groups])


def validate(refit: bool, progress: Callable[[str], None] = lambda _s: None) -> tuple[pd.DataFrame, tuple | None]:
    """Trace the three tasks, optionally re-fit the scales on the fit rows, predict every row."""
    from ..measure.roofline import FITTED, STATED

    rows = published_rows()
    works = {}
    for task in TASKS:
        progress(task)
        works[task] = task_work(task)
    scales = fit(rows, works) if refit else None
    factors = STATED.scaled(*scales) if scales else FITTED
    return predict_rows(rows, works, factors), scales
