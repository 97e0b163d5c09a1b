"""One training step or one inference of any architecture, driven only by its spec.

Every backend (CUDA measurement, CPU measurement, GPU-free prediction, pytest-benchmark) runs the
same :class:`StepRunner`, so what is predicted is exactly what is measured. A backend may supply the
autocast context (prediction emulates CUDA autocast, see :mod:`bench.measure.autocast`) and a
``phase`` callback that is told when forward, backward and the optimizer step start. How a step trains
(optimizer, criterion, grad scaler, clipping, deep supervision) is the spec's recipe
(:class:`architectures.recipe.Recipe`), or the one a run passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from architectures import ArchSpec, Shape
from architectures.recipe import Recipe

from ..options import Mode, Precision, choice
from .sample import draw, in_fake_mode, synthetic_batch

#: the dtype of each precision (every :class:`bench.options.Precision` has one)
DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
PhaseHook = Callable[[str], None]


@dataclass
class Prepared:
    """A step's CPU-side parts (:func:`prepare`): the network built and initialised on the CPU, the overrides it was
    built with, the batch's layout and its random values (None under FakeTensorMode: no values). A
    :class:`StepRunner` takes the network and the values, leaving None."""

    model: nn.Module | None
    overrides: Mapping[str, Any]
    layout: list
    drawn: list[torch.Tensor] | None


def prepare(spec: ArchSpec, overrides: Mapping[str, Any], size: Shape, batch: int, mode: str = "train",
            in_channels: int = 1, num_classes: int = 3, seed: int = 0, recipe: Recipe | None = None,
            fake: bool = False) -> Prepared:
    """What :class:`StepRunner` does before it touches a device, with its arguments: seed, build the network
    (the recipe's training overrides applied: deep supervision is training's, nnU-Net switches it off to infer),
    draw the batch's values. Made ahead, it takes this CPU work (seconds: nnU-Net ResEnc's 102 million
    parameters, the cascade's 240^3 batches) off the GPU's time; the device then sees the same allocations."""
    torch.manual_seed(seed)
    recipe = recipe or spec.recipe
    if mode == Mode.TRAIN:
        overrides = recipe.training_overrides(spec.parameters(), overrides)
    model = spec.build_model(in_channels, num_classes, **overrides)
    layout = spec.layout(size, in_channels, num_classes, spec.hparams(**overrides))
    if mode == Mode.INFER:
        layout = [t for t in layout if t.name == "image"]
    drawn = None if fake or in_fake_mode() else draw(layout, batch, num_classes, seed)
    return Prepared(model, overrides, layout, drawn)


@dataclass
class StepRunner:
    """A built model, its optimizer and one synthetic batch, ready to step.

    Args:
        spec: the (stage) spec to run.
        overrides: build overrides of that spec.
        size: the run's size (what it names is the spec's ``size_meaning``).
        batch: samples per step.
        mode: ``train`` (forward, loss, backward, clipping, optimizer step, all as the recipe says) or
            ``infer`` (the spec's inference path under ``torch.inference_mode``).
        precision: ``fp32`` or autocast ``bf16`` / ``fp16`` (fp16 with a gradient scaler unless the recipe
            has none).
        device: where tensors live (``cpu`` also under FakeTensorMode for prediction).
        channels_last: model and images in ``torch.channels_last_3d``.
        autocast: a factory of the autocast context; default ``torch.autocast(device.type, dtype)``.
        scaler: a GradScaler-like object for fp16; default the recipe's (``torch.amp.GradScaler(device.type)``).
        recipe: how to train; default the spec's (``spec.recipe``).
        criterion: the loss on (logits, label); default the recipe's (the paper's CE + soft Dice, or
            nnU-Net's DC_and_CE_loss with its deep-supervision wrapper).
        prepared: the step's CPU-side parts made ahead by :func:`prepare` with the same arguments (a measuring
            worker makes them while the GPU is still busy with the configuration before); default made here.
    """

    spec: ArchSpec
    overrides: Mapping[str, Any]
    size: Shape
    batch: int
    mode: str = "train"
    precision: str = "fp32"
    device: str = "cpu"
    channels_last: bool = False
    in_channels: int = 1
    num_classes: int = 3
    seed: int = 0
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None
    scaler: Any = None
    recipe: Recipe | None = None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    prepared: Prepared | None = field(default=None, repr=False)
    model: nn.Module = field(init=False)
    optimizer: torch.optim.Optimizer | None = field(init=False, default=None)
    inputs: dict[str, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.precision = choice(Precision, self.precision, "precision")
        self.mode = choice(Mode, self.mode, "mode")
        self.recipe = self.recipe or self.spec.recipe
        prepared, self.prepared = self.prepared, None
        if prepared is None:
            prepared = prepare(self.spec, self.overrides, self.size, self.batch, self.mode, self.in_channels,
                               self.num_classes, self.seed, self.recipe, fake=torch.device(self.device).type == "meta")
        self.overrides = prepared.overrides
        if self.criterion is None:
            self.criterion = self.recipe.build_criterion()
        self.model = prepared.model
        if torch.device(self.device).type != "cpu":  # (``.to`` cannot swap fake parameters in place)
            self.model = self.model.to(self.device)
        if self.channels_last:
            to_channels_last(self.model)
        self.inputs = synthetic_batch(prepared.layout, self.batch, self.num_classes, self.device, self.seed,
                                      prepared.drawn)
        # taken: whoever made it ahead holds neither the network (freed with this runner, before a Dice run trains
        # another) nor the host copy of the batch
        prepared.model, prepared.drawn = None, None
        if self.channels_last:
            self.inputs = {k: v.to(memory_format=torch.channels_last_3d) if v.dim() == 5 else v
                           for k, v in self.inputs.items()}
        if self.mode == "train":
            self.model.train()
            self.optimizer = self.recipe.build_optimizer(self.model.parameters())
            if self.scaler is None:
                self.scaler = self.recipe.build_scaler(self.precision, self.device)
            elif self.recipe.build_scaler(self.precision, "cpu") is None:
                self.scaler = None  # a backend's scaler, for a recipe that trains without one
        else:
            self.model.eval()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision != "fp32" and self.autocast is not None:
            return self.autocast()
        return autocast(self.device, self.precision)

    def step(self, phase: PhaseHook | None = None) -> torch.Tensor:
        """Run one step; returns the loss (train) or the logits (infer)."""
        phase = phase or (lambda _name: None)
        if self.mode == "infer":
            phase("forward")
            with torch.inference_mode(), self._autocast():
                out = self.spec.infer(self.model, self.inputs["image"])
            phase("done")
            return out
        assert self.optimizer is not None
        phase("forward")
        with self._autocast():
            loss = self.spec.loss(self.model, self.inputs, self.criterion)
        phase("backward")
        assert self.recipe is not None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            phase("optimizer")
            if self.recipe.clip is not None:  # nnUNetTrainer.train_step: unscale_, then clip_grad_norm_
                self.scaler.unscale_(self.optimizer)
            self.recipe.clip_gradients(self.model.parameters())
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            phase("optimizer")
            self.recipe.clip_gradients(self.model.parameters())
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        phase("done")
        return loss.detach()


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on the device's type at the precision's dtype; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def to_channels_last(model: nn.Module) -> None:
    """Put every 5-D parameter in ``channels_last_3d`` (re-wrapping; works on fake tensors too)."""
    with torch.no_grad():
        for m in model.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.dim() == 5:
                    m._parameters[name] = nn.Parameter(p.to(memory_format=torch.channels_last_3d),
                                                       requires_grad=p.requires_grad)
