"""Whole-volume evaluation: class probabilities of a volume by sliding window over an inference path,
and its Dice against the label. The trainer validates with it, and a Dice run scores its test volumes
with it, so validation and test are computed the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from architectures import ArchSpec, Shape

from ..measure.step import autocast
from ..options import Inferer, Weighting, choice
from .data.datasets import Volume
from .dice import dice_per_class, mean_over_volumes
from .infer import sliding_window

if TYPE_CHECKING:
    from .trainer import TrainConfig


def predictor(fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device, precision: str):
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return fn(x)

    return predict


def evaluate(fn: Callable[[torch.Tensor], torch.Tensor], volumes: list[Volume], tile: Shape, num_classes: int,
             cfg: TrainConfig, device: torch.device) -> tuple[dict[int, float], list[dict[int, float]]]:
    """Mean and per-volume Dice of ``fn`` (an inference path on a tile) over ``volumes``."""
    per_volume = [dice_per_class(labels(probabilities(fn, v, tile, num_classes, cfg, device)), v.label,
                                 range(num_classes)) for v in volumes]
    return mean_over_volumes(per_volume), per_volume


def probabilities(fn: Callable[[torch.Tensor], torch.Tensor], volume: Volume, tile: Shape, num_classes: int,
                  cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """Class probabilities of a whole volume by sliding window over ``fn`` (an inference path): segmem's
    own (:func:`bench.train.infer.sliding_window`) or MONAI's ``sliding_window_inference`` (same tile and
    overlap; its Gaussian blend for ``gaussian``, else a constant one), per ``cfg.inferer``."""
    if choice(Inferer, cfg.inferer, "inferer") is Inferer.MONAI:
        from architectures.monai_nets import import_monai

        sliding_window_inference = import_monai().inferers.sliding_window_inference
        with torch.inference_mode():
            image = torch.from_numpy(volume.image)[None]
            probs = sliding_window_inference(
                image, tile, 1, lambda x: predictor(fn, device, cfg.precision)(x).float().softmax(1),
                overlap=1 - cfg.step, mode="gaussian" if cfg.weighting == Weighting.GAUSSIAN else "constant",
                sw_device=device, device=torch.device("cpu"))
        return probs[0]
    return sliding_window(predictor(fn, device, cfg.precision), torch.from_numpy(volume.image), tile, num_classes,
                          cfg.step, cfg.weighting, device)


def labels(probs: torch.Tensor) -> np.ndarray:
    """The label map (uint8) of class probabilities (K x D x H x W)."""
    return probs.argmax(0).numpy().astype(np.uint8)


def mean_foreground(d: Mapping[int, float]) -> float:
    return float(np.mean([v for c, v in d.items() if c != 0]))


def inference_tile(spec: ArchSpec, cfg: TrainConfig, hp: Mapping[str, Any], num_classes: int, in_channels: int) -> Shape:
    """The sliding-window tile: ``cfg.infer_tile``, or ``infer_scale`` x the spec's standard image patch
    (rounded to a multiple of the patch's divisor)."""
    if cfg.infer_tile is not None:
        return cfg.infer_tile
    image = next(t for t in spec.layout(cfg.patch, in_channels, num_classes, hp) if t.name == "image")
    div = max(image.divisor, spec.infer_divisor or spec.divisor_for(**cfg.overrides))
    return tuple(max(div, div * round(s * cfg.infer_scale / div)) for s in image.shape)  # type: ignore[return-value]
