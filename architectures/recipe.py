"""How an architecture is trained: its :class:`Recipe` (optimizer, loss, deep supervision, precision,
gradient scaling and clipping, ``cudnn.benchmark``, compile), declared by its spec (``ArchSpec.recipe``).

The one generic step (:class:`bench.measure.step.StepRunner`) and the one training loop
(:mod:`bench.train.trainer`) build their optimizer, criterion, scaler and clipping from it, so what
is predicted, measured and trained is each architecture's own recipe, and the engine never names an
architecture. Two recipes are declared here:

- :data:`PAPER` (the default of every spec): Adam at 9e-4, the paper's weighted cross-entropy + soft
  Dice (:class:`bench.train.losses.CEDiceLoss`), no clipping, ``cudnn.benchmark`` off, the spec's
  ``default_precision`` (fp16 autocast with a grad scaler for the paper's networks).
- :func:`nnunet` (nnU-Net's archs): nnunetv2 2.8's ``nnUNetTrainer`` exactly, each value cited
  below (``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``).

A recipe's fields can be changed per run (``bench run --set recipe.optimizer=adam --set
recipe.clip=none``: :meth:`Recipe.with_overrides`); the record holds the recipe in one short string
(:meth:`Recipe.describe`, column ``recipe``) and whether the figure assumes ``torch.compile``
(``compiled``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import nn


class Optimizer(StrEnum):
    """The optimizers a recipe can name (``torch.optim``'s, ``foreach=True`` as CUDA's default)."""

    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"


class Loss(StrEnum):
    """The criteria a recipe can name: the paper's CE + soft Dice (:class:`bench.train.losses.CEDiceLoss`),
    or nnU-Net's own ``DC_and_CE_loss`` (nnunetv2, wrapped in its ``DeepSupervisionWrapper`` when the
    network returns several resolutions)."""

    CE_DICE = "ce_dice"
    DC_CE = "dc_ce"


@dataclass(frozen=True)
class Recipe:
    """An architecture's training recipe (defaults: the paper's, :data:`PAPER`).

    Attributes:
        optimizer: ``adam`` (default), ``adamw`` or ``sgd`` (:class:`Optimizer`).
        lr: learning rate (default 9e-4, the paper's; nnU-Net: 1e-2).
        momentum: SGD's momentum (0: none; nnU-Net: 0.99). Only with ``sgd``.
        nesterov: SGD's Nesterov momentum (nnU-Net: on). Only with ``sgd`` and a momentum.
        weight_decay: L2 weight decay (default 0; nnU-Net: 3e-5). With ``foreach`` SGD adds it into a
            copy of the gradients, a transient as large as the gradients.
        loss: ``ce_dice`` (default, the paper's) or ``dc_ce`` (nnU-Net's, :class:`Loss`).
        batch_dice: ``dc_ce`` only: Dice over the whole batch instead of per sample (nnU-Net's plans
            set it: ``True`` for 3d_fullres where a 3d_lowres exists, ``False`` for 3d_lowres).
        deep_supervision: train on every decoder resolution (networks whose builder has a
            ``deep_supervision`` argument get it in training; inference never uses it, as nnU-Net
            switches it off there). Default off.
        precision: the precision a run gets when it names none (on CUDA and in prediction); None
            (default) leaves it to the spec's ``default_precision``. Change it with ``--precision``.
        grad_scaler: fp16 runs scale the loss with ``torch.amp.GradScaler`` (default on).
        clip: gradient clipping to this total norm (``clip_grad_norm_`` after the scaler's
            ``unscale_``), or None (default: none; nnU-Net: 12).
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` on CUDA (default off; nnU-Net: on). The
            prediction models the benchmark's trial workspaces and their release
            (:class:`bench.measure.device.Workspaces`); the record says which was assumed.
        compile: whether the figure assumes ``torch.compile`` of the network. segmem's steps are eager,
            so only False is accepted; nnunetv2 2.8 compiles by default on CUDA
            (``nnUNetTrainer._do_i_compile``: unless ``nnUNet_compile`` says otherwise), so its real
            runs may differ from an eager figure by what compile fuses away; this is not modelled.
    """

    optimizer: str = Optimizer.ADAM.value
    lr: float = 9e-4
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    loss: str = Loss.CE_DICE.value
    batch_dice: bool = False
    deep_supervision: bool = False
    precision: str | None = None
    grad_scaler: bool = True
    clip: float | None = None
    cudnn_benchmark: bool = False
    compile: bool = False

    #: the fields ``--set recipe.KEY=VALUE`` may change (precision: use ``--precision``)
    SETTABLE = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "loss", "batch_dice", "deep_supervision",
                "grad_scaler", "clip", "cudnn_benchmark", "compile")

    def __post_init__(self) -> None:
        _check(self)

    # ----- changing ---------------------------------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Recipe:
        """This recipe with ``--set recipe.KEY=VALUE`` changes applied (keys without ``recipe.``); values may
        be text (``none``, ``true``, ``0.01``). Switching the optimizer away from SGD drops SGD's momentum and
        Nesterov (the rest, ``lr`` included, stays). ValueError: one line listing the valid keys and values."""
        changes = parse(overrides)
        if not changes:
            return self
        if changes.get("optimizer", Optimizer.SGD) != Optimizer.SGD:  # SGD's own settings go with it
            changes = {"momentum": 0.0, "nesterov": False, **changes}
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as exc:
            raise ValueError(f"recipe: {exc}") from None

    # ----- building ---------------------------------------------------------------------------------
    def build_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer over ``params``; ``foreach=True`` (what CUDA uses by default) so that CPU, fake-CPU
        and CUDA runs match."""
        if self.optimizer == Optimizer.SGD:
            # nnUNetTrainer.configure_optimizers: SGD(params, initial_lr, weight_decay, momentum=0.99, nesterov=True)
            return torch.optim.SGD(params, self.lr, momentum=self.momentum, nesterov=self.nesterov,
                                   weight_decay=self.weight_decay, foreach=True)
        cls = torch.optim.AdamW if self.optimizer == Optimizer.ADAMW else torch.optim.Adam
        return cls(params, lr=self.lr, weight_decay=self.weight_decay, foreach=True)

    def build_criterion(self, class_weights: Sequence[float] | torch.Tensor | None = None) -> Callable[..., torch.Tensor]:
        """The criterion on (logits, label B x D x H x W); ``class_weights`` are the paper's CE weights
        (nnU-Net's loss takes none)."""
        if self.loss == Loss.DC_CE:
            return NNUNetLoss(self.batch_dice)
        from bench.train.losses import CEDiceLoss

        return CEDiceLoss(class_weights)

    def build_scaler(self, precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (None for other precisions or without ``grad_scaler``)."""
        if precision != "fp16" or not self.grad_scaler:
            return None
        return torch.amp.GradScaler(torch.device(device).type)

    def clip_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """``clip_grad_norm_`` to ``clip`` (nnUNetTrainer.train_step: ``clip_grad_norm_(params, 12)``);
        nothing without ``clip``."""
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip)

    def training_overrides(self, builder_parameters: Iterable[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Build overrides for training: the builder's ``deep_supervision`` argument switched on when the
        recipe (or the override itself) asks for it."""
        ov = dict(overrides)
        if DEEP_SUPERVISION_ARG in builder_parameters and (self.deep_supervision or ov.get(DEEP_SUPERVISION_ARG)):
            ov[DEEP_SUPERVISION_ARG] = True
        return ov

    # ----- describing -------------------------------------------------------------------------------
    def describe(self) -> str:
        """The recipe in one short canonical string (the record's ``recipe``), e.g.
        ``sgd(lr=0.01,m=0.99,nesterov,wd=3e-05)+dc_ce(batch_dice)+ds+clip12+cudnn_bench``."""
        args = [f"lr={self.lr:g}"]
        if self.momentum:
            args.append(f"m={self.momentum:g}")
        if self.nesterov:
            args.append("nesterov")
        if self.weight_decay:
            args.append(f"wd={self.weight_decay:g}")
        parts = [f"{self.optimizer}({','.join(args)})", self.loss + ("(batch_dice)" if self.batch_dice else "")]
        parts += ["ds"] if self.deep_supervision else []
        parts += [] if self.grad_scaler else ["no_scaler"]
        parts += [f"clip{self.clip:g}"] if self.clip is not None else []
        parts += ["cudnn_bench"] if self.cudnn_benchmark else []
        parts += ["compile"] if self.compile else []
        return "+".join(parts)


#: the builder argument that switches a network's deep-supervision outputs (nnU-Net's, MONAI's DynUNet's)
DEEP_SUPERVISION_ARG = "deep_supervision"

_EAGER = "segmem's steps run eager and what torch.compile does to memory is not modelled (valid: recipe.compile=false)"
#: the words a flag may be given as on the command line (--set recipe.nesterov=on, --set checkpointing=yes)
BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def as_flag(value: Any) -> bool | None:
    """A flag's value: a bool as it is, one of :data:`BOOL_WORDS` as its bool, anything else None (not a flag)."""
    return value if isinstance(value, bool) else BOOL_WORDS.get(str(value).strip().lower())
_KINDS = {"optimizer": Optimizer, "loss": Loss, "lr": float, "momentum": float, "weight_decay": float, "clip": "clip",
          "nesterov": bool, "batch_dice": bool, "deep_supervision": bool, "grad_scaler": bool,
          "cudnn_benchmark": bool, "compile": "compile"}


def valid_keys() -> str:
    """``optimizer=adam|adamw|sgd, lr=FLOAT, ..., clip=none|FLOAT``: what ``--set recipe.`` accepts."""
    def values(kind: Any) -> str:
        if isinstance(kind, type) and issubclass(kind, StrEnum):
            return "|".join(m.value for m in kind)
        return {float: "FLOAT", bool: "true|false", "clip": "none|FLOAT", "compile": "false"}[kind]

    return ", ".join(f"recipe.{k}={values(_KINDS[k])}" for k in Recipe.SETTABLE)


def parse(overrides: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``--set recipe.KEY=VALUE`` changes (keys without ``recipe.``) parsed to their values (``clip=none`` ->
    None, ``nesterov=true`` -> True); ValueError: one line listing the valid keys and values. Whether the
    changed recipe holds together (momentum only with SGD) is :meth:`Recipe.with_overrides`'s to say."""
    return {k: _parse(k, v) for k, v in dict(overrides).items()}


def _parse(key: str, value: Any) -> Any:
    if key not in Recipe.SETTABLE:
        raise ValueError(f"unknown recipe key {key!r}; valid: {valid_keys()}")
    kind = _KINDS[key]
    text = str(value).strip().lower()
    bad = ValueError(f"recipe.{key}={value!r} is not valid; valid: {valid_keys()}")
    if kind in (bool, "compile"):
        flag = as_flag(value)
        if flag is None:
            raise bad
        if kind == "compile" and flag:
            raise ValueError(f"recipe.compile=true is not supported: {_EAGER}")
        return flag
    if kind == "clip" and text in ("none", "off", "false", "0"):
        return None
    if kind in (float, "clip"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not 0 <= number < math.inf or (kind == "clip" and number == 0):  # nan and inf too
            raise bad
        return number
    if text not in {m.value for m in kind}:
        raise bad
    return text


def _check(r: Recipe) -> None:
    if r.optimizer not in {m.value for m in Optimizer} or r.loss not in {m.value for m in Loss}:
        raise ValueError(f"unknown optimizer or loss in {r.optimizer!r}, {r.loss!r}; valid: {valid_keys()}")
    if r.optimizer != Optimizer.SGD and (r.momentum or r.nesterov):
        raise ValueError(f"momentum and nesterov are SGD's; the optimizer is {r.optimizer} "
                         "(add --set recipe.optimizer=sgd, or drop them with recipe.momentum=0 recipe.nesterov=false)")
    if r.nesterov and not r.momentum:
        raise ValueError("nesterov needs a momentum above 0 (torch.optim.SGD)")
    if r.batch_dice and r.loss != Loss.DC_CE:
        raise ValueError("batch_dice is a setting of nnU-Net's loss (recipe.loss=dc_ce)")
    if r.compile:
        raise ValueError(f"compile=True is not supported: {_EAGER}")


class NNUNetLoss:
    """nnU-Net's training loss, built from nnunetv2's own classes as ``nnUNetTrainer._build_loss`` builds it
    for a dataset without regions or ignore label: ``DC_and_CE_loss({'batch_dice': ..., 'smooth': 1e-5,
    'do_bg': False, 'ddp': False}, {}, weight_ce=1, weight_dice=1, ignore_label=None,
    dice_class=MemoryEfficientSoftDiceLoss)``, and under deep supervision wrapped in
    ``DeepSupervisionWrapper`` with nnU-Net's weights (1/2^i per output, full resolution first, the lowest
    resolution 0, normalised to sum 1: ``_build_loss`` without DDP).

    Called on one output it is ``DC_and_CE_loss``; :meth:`supervise` takes the list of outputs and their
    labels (:func:`architectures.spec.supervised_loss` calls it), building the wrapper for that many
    outputs the first time (nnU-Net sizes it from its plans' pooling, which is the same count).
    Labels are B x D x H x W; nnU-Net's are B x 1 x D x H x W, so a channel axis is added (a view).
    """

    def __init__(self, batch_dice: bool) -> None:
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        self.loss = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                                   weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
        self.wrapper: nn.Module | None = None

    def __call__(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, label.unsqueeze(1))

    def supervise(self, outputs: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]) -> torch.Tensor:
        """The deep-supervised loss of ``outputs`` (full resolution first) against ``labels`` at their sizes."""
        if self.wrapper is None or len(self.wrapper.weight_factors) != len(outputs):
            from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

            self.wrapper = DeepSupervisionWrapper(self.loss, deep_supervision_weights(len(outputs)))
        return self.wrapper(list(outputs), [y.unsqueeze(1) for y in labels])


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's deep-supervision weights for ``n`` outputs (``nnUNetTrainer._build_loss``, no DDP):
    1/2^i, the last 0, normalised to sum 1."""
    weights = [1 / 2**i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


#: the paper's recipe (Wang et al., MIDL 2022): every spec's default
PAPER = Recipe()


def nnunet(batch_dice: bool = True) -> Recipe:
    """nnU-Net's recipe (nnunetv2 2.8, ``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``):

    - ``__init__``: ``initial_lr = 1e-2``, ``weight_decay = 3e-5``, ``enable_deep_supervision = True``,
      a ``GradScaler("cuda")`` on CUDA;
    - ``configure_optimizers``: ``SGD(..., momentum=0.99, nesterov=True)`` (with a poly LR schedule);
    - ``_build_loss``: see :class:`NNUNetLoss`; ``batch_dice`` comes from the plans (the default planner,
      ``ExperimentPlanner.plan_experiment``: True for 3d_fullres when a 3d_lowres exists, else False;
      False for 3d_lowres; 3d_cascade_fullres inherits 3d_fullres's True);
    - ``train_step``: fp16 autocast on CUDA, ``grad_scaler.unscale_`` then ``clip_grad_norm_(params, 12)``;
    - ``nnunetv2.run.run_training``: ``cudnn.benchmark = True`` (deterministic off);
    - ``_do_i_compile``: compile on CUDA by default; segmem's figures are eager (``compile`` False).
    """
    return Recipe(optimizer=Optimizer.SGD.value, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5,
                  loss=Loss.DC_CE.value, batch_dice=batch_dice, deep_supervision=True, precision="fp16",
                  grad_scaler=True, clip=12.0, cudnn_benchmark=True, compile=False)
