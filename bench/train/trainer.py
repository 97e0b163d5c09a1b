"""One generic training loop for every architecture, driven only by its spec.

What a sample is comes from the spec's layout (:func:`bench.sample.crop_sample` cuts it from a
volume), the loss from the spec's ``loss``, the validation prediction from its ``infer``. A
multi-stage architecture is one built model whose stages (``Stage.module``) are trained one after the
other, each with the budget; a stage whose sample has a ``prior`` gets it from the earlier, already
trained stages through the spec's ``prior`` (computed on the fly for each patch, without gradient,
exactly as the cascade's own inference path computes it).

How each stage trains is its spec's recipe (:class:`architectures.recipe.Recipe`: optimizer, criterion,
deep supervision, grad scaler, clipping), as in the measured step; the paper's (the default): weighted
cross-entropy (inverse class frequencies) + soft Dice, Adam at 9e-4; nnU-Net's: SGD, nnunetv2's
DC_and_CE_loss with deep supervision, clipping at 12. Batch and patch as the run's, mixed precision and
checkpointing as the run's options, nnU-Net's poly learning-rate decay over the budget.
Patch sampling: a share of the samples is centred on a foreground voxel of a randomly chosen
foreground class (nnU-Net oversamples foreground the same way; choosing the class first keeps the
small hind-gut in view), the rest anywhere in the volume, and a random patch holding only background
is skipped with probability ``skip_background`` ("mostly skips all-background patches"). Training
stops at the budget (iterations or minutes, whichever first) or when ``patience`` validations in a
row bring no gain (the paper stopped after 30 epochs without one); the best validated weights are
kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from architectures import ArchSpec, Shape, Stage
from architectures.recipe import Recipe

from ..measure.sample import crop_sample, stack
from ..measure.step import autocast
from ..options import Inferer, Weighting
from .data.datasets import Dataset, Volume
from .evaluate import evaluate, inference_tile, mean_foreground
from .losses import inverse_frequency_weights

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    """The training budget and recipe.

    Args:
        patch: the run's size (what it names is the spec's ``size_meaning``).
        batch: samples per step.
        iterations / minutes: the budget per stage; training stops at whichever comes first.
        lr: the learning rate; None (default): the recipe's (paper: 9e-4, nnU-Net: 1e-2).
        recipe_overrides: changes to each stage spec's own recipe (``--set recipe.KEY=VALUE``).
        lr_schedule: ``constant`` (paper) or ``poly`` (nnU-Net's (1 - progress)^0.9 decay over the budget;
            the default, since a budget of minutes ends long before the paper's early stopping would).
        precision: fp32, or autocast bf16/fp16 (fp16 with a gradient scaler).
        foreground_fraction: share of samples centred on a foreground voxel.
        skip_background: probability of skipping a random patch that holds only background.
        class_weighting: ``sqrt`` (default: the square root of inverse class frequencies, normalised),
            ``inverse`` (the paper's inverse frequencies) or ``none``, for the paper's cross-entropy (nnU-Net's
            loss takes no class weights). The square
            root tempers the paper's extreme ratios (about 750:1 for a 0.1% class); only a single trial on
            an earlier phantom compares the two, so treat this default as a choice for short budgets.
        val_every: iterations between validations; patience: validations without gain before stopping.
        infer_tile: sliding-window tile for validation and test (None: ``infer_scale`` x the spec's
            standard image patch; the paper's notebook infers 240^3 tiles after 160^3 training, 1.5 x;
            2 x, the default, gives each voxel more context on small CPU patches).
        step / weighting: sliding-window overlap and vote (see :mod:`bench.infer`).
    """

    patch: Shape
    batch: int
    iterations: int | None = None
    minutes: float | None = None
    lr: float | None = None
    lr_schedule: str = "poly"
    precision: str = "fp32"
    foreground_fraction: float = 0.5
    skip_background: float = 0.9
    class_weighting: str = "sqrt"
    val_every: int = 100
    patience: int | None = 10
    infer_tile: Shape | None = None
    infer_scale: float = 2.0
    step: float = 0.5
    weighting: str = Weighting.CENTRE
    inferer: str = Inferer.SEGMEM
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    recipe_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.iterations is None and self.minutes is None:
            raise ValueError("a training budget is needed: iterations or minutes")
        if self.lr_schedule not in ("constant", "poly"):
            raise ValueError(f"lr_schedule must be constant or poly; got {self.lr_schedule!r}")
        if self.class_weighting not in ("inverse", "sqrt", "none"):
            raise ValueError(f"class_weighting must be inverse, sqrt or none; got {self.class_weighting!r}")


@dataclass
class StageLog:
    name: str
    iterations: int = 0
    seconds: float = 0.0
    best_val_dice: float | None = None
    best_iteration: int = 0
    stopped: str = ""
    losses: list[float] = field(default_factory=list)


class PatchSampler:
    """Random sample centres over a list of volumes (see the module docstring for the policy)."""

    def __init__(self, volumes: list[Volume], patch: Shape, foreground_fraction: float, skip_background: float,
                 rng: np.random.Generator, max_foreground_points: int = 200_000) -> None:
        self.volumes, self.patch, self.rng = volumes, patch, rng
        self.fg_fraction, self.skip = foreground_fraction, skip_background
        self.points: list[dict[int, np.ndarray]] = []
        for v in volumes:
            pts = {}
            for c in np.unique(v.label):
                if c == 0:
                    continue
                idx = np.flatnonzero(v.label == c)
                if len(idx) > max_foreground_points:
                    idx = rng.choice(idx, max_foreground_points, replace=False)
                pts[int(c)] = idx
            self.points.append(pts)

    def centre(self) -> tuple[int, tuple[int, int, int]]:
        """(volume index, centre voxel)."""
        while True:
            i = int(self.rng.integers(len(self.volumes)))
            shape = self.volumes[i].shape
            pts = self.points[i]
            if pts and self.rng.random() < self.fg_fraction:
                c = list(pts)[int(self.rng.integers(len(pts)))]
                flat = int(pts[c][int(self.rng.integers(len(pts[c])))])
                return i, tuple(int(x) for x in np.unravel_index(flat, shape))  # type: ignore[return-value]
            lo = [min(p // 2, s // 2) for p, s in zip(self.patch, shape)]
            hi = [max(lo_i + 1, s - (p - p // 2) + 1) for lo_i, p, s in zip(lo, self.patch, shape)]
            centre = tuple(int(self.rng.integers(a, b)) for a, b in zip(lo, hi))
            box = tuple(slice(max(0, c - p // 2), c - p // 2 + p) for c, p in zip(centre, self.patch))
            if self.volumes[i].label[box].any() or self.rng.random() >= self.skip:
                return i, centre  # type: ignore[return-value]


def class_weights(volumes: list[Volume], num_classes: int, kind: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    counts = np.zeros(num_classes, np.int64)
    for v in volumes:
        counts += np.bincount(v.label.ravel(), minlength=num_classes)[:num_classes]
    w = inverse_frequency_weights(counts)
    return w.sqrt() / w.sqrt()[w > 0].mean() if kind == "sqrt" else w


def train(
    spec: ArchSpec,
    data: Dataset,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    log: Log | None = None,
) -> tuple[nn.Module, list[StageLog]]:
    """Build ``spec`` and train it (stage by stage) on ``data.train``, validating on ``data.val``."""
    device = torch.device(device)
    log = log or (lambda _m: None)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    recipe = spec.recipe.with_overrides(cfg.recipe_overrides)
    model = spec.build(data.in_channels, data.num_classes,
                       **recipe.training_overrides(spec.parameters(), cfg.overrides)).to(device)
    weights = class_weights(data.train, data.num_classes, cfg.class_weighting)
    logs = []
    stages = spec.train_stages(**cfg.overrides)
    for stage in stages:
        stage_recipe = stage.spec.recipe.with_overrides(cfg.recipe_overrides)
        logs.append(_train_stage(spec, model, stage, data, cfg, stage_recipe, weights, device, rng, log,
                                 last=stage is stages[-1]))
    model.eval()
    return model, logs


def _train_stage(spec: ArchSpec, model: nn.Module, stage: Stage, data: Dataset, cfg: TrainConfig, recipe: Recipe,
                 weights: torch.Tensor | None, device: torch.device, rng: np.random.Generator, log: Log,
                 last: bool) -> StageLog:
    net = model.get_submodule(stage.module) if stage.module else model
    hp = stage.spec.hparams(**stage.overrides)
    layout = stage.spec.layout(cfg.patch, data.in_channels, data.num_classes, hp)
    priors = [t for t in layout if t.role == "prior"]
    crop_layout = [t for t in layout if t.role != "prior"]
    image_t = next(t for t in layout if t.name == "image")
    for t in priors:
        if t.crop != image_t.crop or t.stride != 1 or spec.prior is None:
            raise ValueError(f"{spec.name}.{stage.name}: a prior must be the image patch's size and the spec must "
                             "say how to compute it (ArchSpec.prior)")
    sampler = PatchSampler(data.train, image_t.crop, cfg.foreground_fraction, cfg.skip_background, rng)
    criterion = recipe.build_criterion(weights)
    lr = cfg.lr if cfg.lr is not None else recipe.lr
    optimizer = recipe.build_optimizer(net.parameters())
    scaler = recipe.build_scaler(cfg.precision, device)
    # validation: a stage fed by a prior is validated through the whole model's path, others on their own
    tile = inference_tile(stage.spec, cfg, hp, data.num_classes, data.in_channels)
    if priors or last:
        def val_fn(x: torch.Tensor) -> torch.Tensor:
            return spec.infer(model, x)
    else:
        def val_fn(x: torch.Tensor) -> torch.Tensor:
            return stage.spec.infer(net, x)
    st = StageLog(stage.name or spec.name)
    best_state, since_best = None, 0
    t0 = time.perf_counter()
    deadline = t0 + 60 * cfg.minutes if cfg.minutes is not None else float("inf")
    max_iters = cfg.iterations if cfg.iterations is not None else 10**12
    while True:
        if cfg.lr_schedule == "poly":
            progress = max(st.iterations / max_iters, (time.perf_counter() - t0) / (deadline - t0))
            for g in optimizer.param_groups:
                g["lr"] = lr * max(0.0, 1 - progress) ** 0.9
        net.train()
        samples = []
        for _ in range(cfg.batch):
            i, centre = sampler.centre()
            v = data.train[i]
            samples.append(crop_sample(crop_layout, torch.from_numpy(v.image), torch.from_numpy(v.label).long(), centre))
        batch = {k: t.to(device) for k, t in stack(samples).items()}
        for t in priors:
            batch[t.name] = _prior(spec, model, net, batch["image"], device, cfg.precision)
        with autocast(device, cfg.precision):
            loss = stage.spec.loss(net, batch, criterion)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if recipe.clip is not None:
                scaler.unscale_(optimizer)
            recipe.clip_gradients(net.parameters())
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            recipe.clip_gradients(net.parameters())
            optimizer.step()
        st.iterations += 1
        st.losses.append(float(loss.detach()))
        out_of_budget = st.iterations >= max_iters or time.perf_counter() >= deadline
        if st.iterations % cfg.val_every == 0 or out_of_budget:
            net.eval()
            mean, _ = evaluate(val_fn, data.val, tile, data.num_classes, cfg, device)
            score = mean_foreground(mean)
            log(f"{st.name}: iteration {st.iterations}, loss {np.mean(st.losses[-cfg.val_every:]):.3f}, "
                f"validation Dice {', '.join(f'{data.class_names()[c]} {d:.3f}' for c, d in mean.items() if c)}")
            if st.best_val_dice is None or score > st.best_val_dice:
                st.best_val_dice, st.best_iteration, since_best = score, st.iterations, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since_best += 1
            if cfg.patience is not None and since_best >= cfg.patience:
                st.stopped = f"no validation gain in {cfg.patience} validations"
                break
        if out_of_budget:
            st.stopped = "iteration budget" if st.iterations >= max_iters else "time budget"
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    st.seconds = time.perf_counter() - t0
    return st


def _prior(spec: ArchSpec, model: nn.Module, net: nn.Module, image: torch.Tensor, device: torch.device,
           precision: str) -> torch.Tensor:
    """The earlier stages' one-hot prior for a batch of patches (eval mode, no gradient)."""
    was = net.training
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        prior = spec.prior(model, image).float()  # type: ignore[misc]
    net.train(was)
    return prior

