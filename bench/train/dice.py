"""Dice scores, and the plain intensity-threshold baseline they are compared with.

Dice per class and volume is 2TP / (2TP + FP + FN) (a class absent from both prediction and label
scores 1; the paper adds 1 to the denominator, which only matters for tiny structures). Scores are
averaged over test volumes; the mean foreground Dice averages the non-background classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dice(pred: np.ndarray, label: np.ndarray, cls: int) -> float:
    """2TP / (2TP + FP + FN) of class ``cls``; 1.0 when the class is in neither."""
    p, t = pred == cls, label == cls
    tp = int(np.count_nonzero(p & t))
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return 1.0 if denom == 0 else 2.0 * tp / denom


def dice_per_class(pred: np.ndarray, label: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    return {c: dice(pred, label, c) for c in classes}


def mean_over_volumes(per_volume: Sequence[dict[int, float]]) -> dict[int, float]:
    return {c: float(np.mean([d[c] for d in per_volume])) for c in per_volume[0]}


class ThresholdBaseline:
    """Segment each foreground class by one intensity interval [lo, hi] of the (first) image channel.

    The interval of each class is the one maximising that class's Dice over the training volumes
    (searched exactly over a 256-bin histogram); later classes win where intervals overlap. It shows
    how far plain intensity gets on a dataset: on the phantom, gut walls are as bright as muscle and
    gut contents as dark as yolk, so not far.
    """

    def __init__(self, bins: int = 256) -> None:
        self.bins = bins
        self.intervals: dict[int, tuple[float, float]] = {}

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], classes: Sequence[int]) -> ThresholdBaseline:
        lo = min(float(np.percentile(im[0], 0.1)) for im in images)
        hi = max(float(np.percentile(im[0], 99.9)) for im in images)
        edges = np.linspace(lo, hi, self.bins + 1)
        all_hist = sum(np.histogram(im[0], edges)[0] for im in images)
        for c in classes:
            cls_hist = sum(np.histogram(im[0][lb == c], edges)[0] for im, lb in zip(images, labels))
            total = cls_hist.sum()
            if total == 0:
                continue
            ca = np.concatenate([[0], np.cumsum(all_hist)])
            cc = np.concatenate([[0], np.cumsum(cls_hist)])
            i, j = np.triu_indices(self.bins + 1, 1)  # interval = bins i .. j-1
            tp = cc[j] - cc[i]
            score = 2 * tp / (ca[j] - ca[i] + total)
            k = int(np.argmax(score))
            self.intervals[c] = (float(edges[i[k]]), float(edges[j[k]]))
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        out = np.zeros(image.shape[1:], np.uint8)
        for c, (lo, hi) in self.intervals.items():
            out[(image[0] >= lo) & (image[0] < hi)] = c
        return out
