"""The paper's training loss: weighted cross-entropy + soft Dice averaged over classes.

Class weights are inverse class frequencies (normalised to sum to the number of classes) when given;
uniform otherwise. Soft Dice is computed in float32 whatever the autocast precision, as the softmax
of fp16 logits over millions of voxels would otherwise lose the small classes' sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class CEDiceLoss:
    """loss = CE(logits, label; weights) + (1 - mean soft Dice over classes).

    Args:
        class_weights: per-class CE weights (e.g. from :func:`inverse_frequency_weights`), or None.
        smooth: added to numerator and denominator of the soft Dice (avoids 0/0 on absent classes).
    """

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None, smooth: float = 1.0) -> None:
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.smooth = smooth

    def __call__(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        w = None if self.class_weights is None else self.class_weights.to(logits.device)
        ce = F.cross_entropy(logits.float(), label, weight=w)
        probs = logits.float().softmax(1)
        onehot = F.one_hot(label, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        dims = (0, *range(2, logits.dim()))
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return ce + (1 - dice.mean())


def inverse_frequency_weights(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Class weights proportional to 1 / frequency, normalised to mean 1 (absent classes get 0)."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    w = torch.where(c > 0, 1.0 / c.clamp(min=1), torch.zeros_like(c))
    return (w / w[w > 0].mean()).float()
