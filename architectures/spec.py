"""The one interface through which the rest of segmem knows an architecture.

An :class:`ArchSpec` is everything the measurement, training and reporting code needs: how to build
the network, which input sizes it accepts, what one training sample consists of, how its loss is
computed from its outputs, and what its inference path is. ``bench/`` never mentions an architecture
by name; it only calls these fields. A cascade is a spec whose ``stages`` are specs themselves: each
stage is trained (and therefore measured) on its own, and the cascade's ``infer`` runs them all.

Sample layouts are declarative (:class:`SampleTensor`): a tensor is a crop of ``crop`` voxels around
the sample's centre, optionally downsampled by ``stride`` (nearest), of role ``image``, ``label`` or
``prior`` (one-hot predictions of earlier stages). One generic function can then cut such a sample
from any volume, or synthesise one, without knowing which architecture asked.
"""

from __future__ import annotations

import copy
import gc
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .recipe import PAPER, Recipe, as_flag, deep_supervision_weights

Shape = tuple[int, int, int]
Batch = Mapping[str, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Role = Literal["image", "label", "prior"]


def _counts(values: Sequence[Any]) -> bool:
    """Whether every value is a positive whole number (a channel count; True is not one)."""
    return all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in values)


@dataclass(frozen=True)
class SampleTensor:
    """One named tensor of a training sample.

    ``crop`` is the region of the volume (voxels, D x H x W) centred on the sample's centre; the tensor
    itself has spatial shape ``crop // stride`` (nearest-neighbour downsampling). ``channels`` is the
    channel count for images and priors; labels are integer maps without a channel axis.
    """

    name: str
    role: Role
    crop: Shape
    stride: int = 1
    channels: int = 1
    divisor: int = 1  # every edge of ``crop`` must be a multiple of this (the network's downsampling)
    #: how an image is downsampled by ``stride``: ``nearest`` (every stride-th voxel) or ``linear``
    #: (trilinear, as nnU-Net resamples image data); labels and priors are always nearest
    resample: Literal["nearest", "linear"] = "nearest"

    @property
    def shape(self) -> Shape:
        return tuple(c // self.stride for c in self.crop)  # type: ignore[return-value]


def downsample(x: torch.Tensor, factor: int, resample: str = "nearest") -> torch.Tensor:
    """``x`` (..., D, H, W) downsampled by ``factor``: the one rule for a sample tensor's ``stride`` and for a
    model's own downsampling of its input, so that what a stage trains on is what it infers on."""
    if factor == 1:
        return x
    if resample == "linear":
        lead = x.shape[:-3]
        flat = x.reshape(-1, 1, *x.shape[-3:]).float()
        out = torch.nn.functional.interpolate(flat, scale_factor=1 / factor, mode="trilinear", align_corners=False)
        return out.reshape(*lead, *out.shape[-3:]).to(x.dtype)
    return x[..., ::factor, ::factor, ::factor]


def format_patch(size: Sequence[int]) -> str:
    """``160^3`` for a cube, ``128x160x96`` otherwise."""
    size = tuple(size)
    return f"{size[0]}^3" if len(set(size)) == 1 else "x".join(map(str, size))


@dataclass(frozen=True)
class Stage:
    """A separately trained part of a multi-stage architecture."""

    name: str
    spec: ArchSpec
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: where the stage's network lives in the whole model (``nn.Module.get_submodule`` path), so that a
    #: trainer can train the stages of one built model in order
    module: str = ""


def standard_layout(size: Shape, in_channels: int, num_classes: int, hp: Mapping[str, Any]) -> list[SampleTensor]:
    """One image patch and its label, both ``size``: the sample of every single-input network."""
    return [SampleTensor("image", "image", size, channels=in_channels), SampleTensor("label", "label", size)]


def standard_loss(model: nn.Module, batch: Batch, criterion: Criterion) -> torch.Tensor:
    """Loss of a network whose forward takes the image (and, if present, the prior) and returns logits.

    A list or tuple of outputs is treated as deep supervision (nnU-Net's convention: full resolution
    first, weights 1/2^i normalised, the lowest resolution left out), each against the label
    nearest-downsampled to its size.
    """
    args = [batch["image"]] + ([batch["prior"]] if "prior" in batch else [])
    return supervised_loss(model(*args), batch["label"], criterion)


def supervised_loss(out: torch.Tensor | Sequence[torch.Tensor], label: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    """Criterion of one output or of a deep-supervision list against ``label`` (B x D x H x W)."""
    if isinstance(out, torch.Tensor):
        return criterion(out, fit_label(label, out.shape[2:]))
    outs = list(out)
    if hasattr(criterion, "supervise"):  # a criterion with its own deep supervision (nnU-Net's wrapper)
        return criterion.supervise(outs, [fit_label(label, o.shape[2:]) for o in outs])
    weights = deep_supervision_weights(len(outs))
    return sum(w * criterion(o, fit_label(label, o.shape[2:])) for w, o in zip(weights, outs) if w > 0)


def fit_label(label: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """The label at an output's spatial size: unchanged, nearest-downsampled, or centre-cropped
    (for networks with valid convolutions, whose output is smaller than their input)."""
    spatial = tuple(spatial)
    if tuple(label.shape[1:]) == spatial:
        return label
    if all(s_in % s_out == 0 for s_in, s_out in zip(label.shape[1:], spatial)):
        strides = [s_in // s_out for s_in, s_out in zip(label.shape[1:], spatial)]
        if len(set(strides)) == 1:
            s = strides[0]
            return label[:, ::s, ::s, ::s]
    starts = [(s_in - s_out) // 2 for s_in, s_out in zip(label.shape[1:], spatial)]
    return label[:, starts[0] : starts[0] + spatial[0], starts[1] : starts[1] + spatial[1], starts[2] : starts[2] + spatial[2]]


def standard_infer(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Inference path of a plain network: its forward (the full-resolution output under deep supervision)."""
    out = model(image)
    return out[0] if isinstance(out, list | tuple) else out


#: the last network :meth:`ArchSpec.build_detached` had to build for real (key and model)
_last_real_build: dict[str, Any] = {}


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture describes itself to the suite (TorchBench-style per-model metadata).

    Attributes:
        name: registry name, e.g. ``"meunet"``.
        summary: one line for ``bench list``.
        citation: the paper it follows.
        builder: the ``nn.Module`` class (or factory); its keyword arguments are the valid overrides.
        divisor: every spatial edge of the run's size must be a multiple of this; or one divisor per axis
            (D, H, W), e.g. an nnU-Net plan's products of strides (32, 16, 16) for an elongated patch.
        min_size: smallest edge the network accepts (e.g. so that the bottleneck is not 1 voxel).
        default_sizes / default_batches: the paper's training patch and batch (used on CUDA and for
            prediction); cpu_sizes / cpu_batches: small defaults for a CPU sweep that ends in minutes.
        default_precision: precision used when a run does not ask for one (on CUDA and in prediction;
            CPU runs default to fp32, since CPU autocast is neither what GPUs do nor fast).
        checkpointing: the override that switches gradient checkpointing, or None if unsupported.
        size_meaning: what the run's size names, or a function of the hyper-parameters saying it (for
            meU-net: the standard or the expanded patch, as ``size_refers_to`` picks).
        layout: what one training sample is (see :class:`SampleTensor`).
        loss: the training loss from a batch, given the criterion the trainer uses.
        infer: the inference path, image -> logits at the image's resolution.
        stages: for multi-stage architectures, a function of the hyper-parameters giving the separately
            trained stages in training order (each a spec with its own overrides).
        infer_divisor: the divisor of inference sizes, when it differs from training's.
        cpu_dice: (patch, batch) of a Dice run on the CPU when the run names none (default: the first
            CPU size and the largest CPU batch); on CUDA a Dice run uses the paper's defaults.
        prior: for multi-stage architectures, the one-hot prior a later stage receives, computed by the
            whole model's earlier stages from an image patch: ``prior(model, image) -> B x K x patch``.
        size_warning: ``(size, hparams) -> str | None``: what a user must be told about a size that the
            architecture cannot take as named (meU-net: k rounded so that both patches are whole).
        key_name: what identifies the architecture in a configuration's key when its name does not (a
            name that holds a file's path: an nnU-Net plans configuration keys by the file's content digest).
        short_name: what the console, report tables and plots call it when its name is too long to show (a
            name holding a file's path; :attr:`display_name`).
        recipe: how it is trained (:class:`architectures.recipe.Recipe`: optimizer, loss, deep supervision,
            precision, scaler, clipping, cudnn.benchmark); default the paper's.
    """

    name: str
    summary: str
    citation: str
    builder: Callable[..., nn.Module]
    divisor: int | Shape
    default_sizes: tuple[Shape, ...]
    default_batches: tuple[int, ...]
    cpu_sizes: tuple[Shape, ...]
    cpu_batches: tuple[int, ...] = (1,)
    min_size: int = 8
    default_precision: str = "fp32"
    checkpointing: str | None = None
    size_meaning: str | Callable[[Mapping[str, Any]], str] = "patch"
    layout: Callable[[Shape, int, int, Mapping[str, Any]], list[SampleTensor]] = standard_layout
    loss: Callable[[nn.Module, Batch, Criterion], torch.Tensor] = standard_loss
    infer: Callable[[nn.Module, torch.Tensor], torch.Tensor] = standard_infer
    stages: Callable[[Mapping[str, Any]], tuple[Stage, ...]] | None = None
    infer_divisor: int | None = None
    prior: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    cpu_dice: tuple[Shape, int] | None = None
    size_warning: Callable[[Shape, Mapping[str, Any]], str | None] | None = None
    key_name: str = ""
    recipe: Recipe = PAPER
    short_name: str = ""

    @property
    def display_name(self) -> str:
        """The name shown on the console, in report tables and plots: ``short_name``, else ``name``."""
        return self.short_name or self.name

    @property
    def run_precision(self) -> str:
        """The precision of a run that names none (on CUDA and in prediction): the recipe's, else
        ``default_precision``."""
        return self.recipe.precision or self.default_precision

    # ----- building -------------------------------------------------------------------------------
    def parameters(self) -> dict[str, inspect.Parameter]:
        """The documented constructor arguments that ``overrides`` may set."""
        sig = inspect.signature(self.builder)
        return {k: p for k, p in sig.parameters.items() if k not in ("self", "in_channels", "num_classes")}

    def hparams(self, **overrides: Any) -> dict[str, Any]:
        """All constructor arguments with ``overrides`` applied (validated)."""
        params = self.parameters()
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown override(s) {', '.join(unknown)}; valid: {', '.join(params) or 'none'}"
            )
        hp = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        hp.update({k: self._checked(k, v, params[k].default) for k, v in overrides.items()})
        return hp

    def _checked(self, key: str, value: Any, default: Any) -> Any:
        """An override's value checked against the kind of its documented default, so that a value of the wrong
        kind is one line naming the override, not a TypeError deep in a constructor or a network that builds
        wrong: a word for a number (expansion=abc), a word other than true/false for a flag (checkpointing=banana,
        which a constructor would read as on), a list of positive counts (channels) with a word or a 0 in it."""
        if isinstance(default, bool):
            flag = as_flag(value)
            if flag is None:
                raise ValueError(f"{self.name}: {key} is true or false (default {default}); got {value!r}")
            return flag
        if isinstance(default, int | float) and isinstance(value, str):
            raise ValueError(f"{self.name}: {key} takes a number (default {default}); got {value!r}")
        if isinstance(default, tuple | list):
            counts = bool(default) and _counts(default)
            if isinstance(value, str) or counts and not (isinstance(value, tuple | list) and _counts(value)):
                kind = "a list of positive whole numbers" if counts else "a list"
                raise ValueError(f"{self.name}: {key} takes {kind} like its default, {list(default)}; got {value!r}")
        return value

    def build(self, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> nn.Module:
        hp = self.hparams(**overrides)
        try:
            return self.builder(in_channels=in_channels, num_classes=num_classes, **hp)
        except (TypeError, AssertionError) as exc:
            raise ValueError(f"{self.name}: cannot build with {overrides}: {exc}") from exc

    def build_detached(self, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> nn.Module:
        """The network without spending memory where possible: built on the meta device, or, for a
        network that computes on its tensors' values while it is built (MONAI's SwinUNETR calls
        ``.item()``, which meta tensors cannot answer), built for real on the CPU."""
        try:
            with torch.device("meta"):
                return self.build(in_channels, num_classes, **overrides)
        except ValueError:
            raise
        except Exception:  # noqa: BLE001 - whatever the meta device cannot do, the CPU can (or says why)
            pass
        # a prediction builds the same network several times (parameters, trace, FLOPs, MemTracker): the
        # last real build is kept and copied, which is several times faster than building it again
        key = (self.name, in_channels, num_classes, repr(sorted(overrides.items())))
        if _last_real_build.get("key") != key:
            _last_real_build.clear()
            with torch.device("cpu"):
                _last_real_build.update(key=key, model=self.build(in_channels, num_classes, **overrides))
        return copy.deepcopy(_last_real_build["model"])

    def build_model(self, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> nn.Module:
        """Build for a step. Under ``FakeTensorMode`` (prediction) a constructor that reads a tensor's
        value (``.item()``) raises ``DataDependentOutputException``; such a network is built outside
        every active mode (:meth:`build_detached`) and its parameters and buffers are then replaced by
        fake tensors of the same shapes, allocated inside the modes, so that any network a user can
        instantiate can be predicted."""
        from torch._guards import detect_fake_mode
        from torch._subclasses.fake_tensor import DataDependentOutputException
        from torch.utils._python_dispatch import _disable_current_modes

        if detect_fake_mode() is None:
            return self.build(in_channels, num_classes, **overrides)
        try:
            return self.build(in_channels, num_classes, **overrides)
        except DataDependentOutputException:
            gc.collect()  # the half-built network's fake tensors
        with _disable_current_modes():
            model = self.build_detached(in_channels, num_classes, **overrides)
        return model._apply(lambda t: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu"))

    # ----- describing runs ------------------------------------------------------------------------
    def train_stages(self, **overrides: Any) -> list[Stage]:
        """The stages a training step is measured for: the spec itself, or each of its stages."""
        if self.stages is None:
            return [Stage("", self, dict(overrides))]
        return list(self.stages(self.hparams(**overrides)))

    def stage(self, name: str, **overrides: Any) -> tuple[ArchSpec, dict[str, Any]]:
        """The spec and overrides that a run of this architecture at stage ``name`` builds ("" is the
        whole architecture); ValueError listing the valid stages."""
        if not name:
            return self, dict(overrides)
        stages = self.train_stages(**overrides)
        for s in stages:
            if s.name == name:
                return s.spec, dict(s.overrides)
        raise ValueError(f"{self.name} has no stage {name!r}; valid: {', '.join(s.name for s in stages)}")

    def divisor_for(self, **overrides: Any) -> int | Shape:
        """The divisibility of training sizes with these overrides (``divisor`` for a built-in network;
        a network known only by its factory declares or probes it, see :mod:`architectures.imported`):
        one int for every axis, or one per axis."""
        return self.divisor

    def divisor_note(self, **overrides: Any) -> str:
        """How the divisibility was found, when the suite had to find it (empty when declared)."""
        return ""

    def check_size(self, size: Shape, mode: str = "train", **overrides: Any) -> None:
        """Raise ValueError, saying what is allowed, when ``size`` does not suit this architecture.

        The run's size must be a multiple of ``divisor`` (``infer_divisor`` for inference) and at least
        ``min_size``; each tensor of the sample layout must meet its own ``divisor`` (for meU-net, the
        standard patch is checked at 16 whatever the size names); each stage of a cascade is checked.
        """
        div = self.infer_divisor if (mode == "infer" and self.infer_divisor) else self.divisor_for(**overrides)
        where = f"{self.name}: size {'x'.join(map(str, size))} not allowed for {mode}"
        if len(size) != 3:
            raise ValueError(f"{where}; give one edge or three (DxHxW)")
        if isinstance(div, tuple):  # per axis (D, H, W)
            if any(s % d or s < max(d, self.min_size) for s, d in zip(size, div)):
                least = "x".join(str(max(d, self.min_size)) for d in div)
                raise ValueError(f"{where}; per axis (DxHxW), the edges must be multiples of {'x'.join(map(str, div))} "
                                 f"and at least {least}")
        elif any(s % div or s < max(div, self.min_size) for s in size):
            # what every edge must be for the whole size to pass (meU-net: 16, its standard patch's, not the 2 of
            # `divisor`), so that the edge the line suggests is not refused by the next check
            named = f" (the size names the {self.meaning(**overrides)})" if self.size_meaning else ""
            raise ValueError(self._edge_rule(where, self.size_divisor(mode, **overrides), named))
        if self.stages is not None:
            if mode == "train":
                for stage in self.train_stages(**overrides):
                    stage.spec.check_size(size, mode, **stage.overrides)
            return
        for t in self.layout(size, 1, 3, self.hparams(**overrides)):
            if any(c % t.divisor or c < t.divisor for c in t.crop):
                named = f" (the size names the {self.meaning(**overrides)})"
                if tuple(t.crop) == tuple(size):  # the size is this tensor's (meU-net's standard patch): one rule
                    raise ValueError(self._edge_rule(where, t.divisor, named))
                raise ValueError(f"{where}: it makes the {t.name} {'x'.join(map(str, t.crop))}, whose edges must be "
                                 f"multiples of {t.divisor}{named}")

    def _edge_rule(self, where: str, need: int, named: str) -> str:
        """:meth:`check_size`'s line for a cube's edge: what every edge must be (``need``: its divisibility)."""
        return f"{where}; each edge must be a multiple of {need} and at least {max(need, self.min_size)}{named}"

    def check_batch(self, size: Shape, batch: int, mode: str = "train", in_channels: int = 1, num_classes: int = 3,
                    **overrides: Any) -> None:
        """Raise ValueError when a training step at ``size`` and ``batch`` leaves a normalisation layer one
        value per channel, which PyTorch refuses in training ("Expected more than 1 value per channel"):
        BatchNorm normalises over the batch and the voxels, InstanceNorm over the voxels alone. Said before
        any work starts, not by a worker. The deepest grid is each image tensor's crop over its ``divisor``
        (the network's downsampling); only where that is one voxel is the network built (on the meta device,
        :meth:`build_detached`) to see which normalisation it has, so no architecture is named here."""
        if mode != "train":
            return
        if self.stages is not None:
            for stage in self.train_stages(**overrides):
                try:
                    stage.spec.check_batch(size, batch, mode, in_channels, num_classes, **stage.overrides)
                except ValueError as exc:
                    raise ValueError(f"{self.name}'s {stage.name}: {exc}") from None
            return
        spec_div = self.divisor_for(**overrides)
        for t in self.layout(size, in_channels, num_classes, self.hparams(**overrides)):
            div = (t.divisor,) * 3 if t.divisor > 1 else spec_div if isinstance(spec_div, tuple) else (spec_div,) * 3
            if t.role != "image" or math.prod(div) == 1 or math.prod(c // d for c, d in zip(t.crop, div)) > 1:
                continue
            model = self.build_detached(in_channels, num_classes, **overrides)
            per_batch = nn.modules.batchnorm._BatchNorm
            norms = [m for m in model.modules() if isinstance(m, per_batch | nn.modules.instancenorm._InstanceNorm)]
            # BatchNorm fails at batch 1 only, InstanceNorm at any batch
            norm = next((m for m in norms if batch == 1 or not isinstance(m, per_batch)), None)
            if norm is not None:
                fix = "--batch 2 or more, or a larger size" if isinstance(norm, per_batch) else "a larger size"
                fold = str(div[0]) if len(set(div)) == 1 else "x".join(map(str, div))
                raise ValueError(
                    f"{self.name}: size {'x'.join(map(str, size))} at batch {batch} leaves its {type(norm).__name__} "
                    f"one value per channel to train on (the {t.name} {'x'.join(map(str, t.crop))} is one voxel "
                    f"after the network's {fold}-fold downsampling); use {fix}")
            return

    def size_divisor(self, mode: str = "train", **overrides: Any) -> int:
        """The divisibility :meth:`check_size` enforces on a cube's edge with these overrides: the smallest
        multiple of ``divisor`` whose multiples (from the smallest allowed) all pass. ``bench list`` shows
        it and ``bench fit`` searches over it (meU-net: 16 when the size names the standard patch, 2 when
        it names the expanded one)."""
        base = self.infer_divisor if (mode == "infer" and self.infer_divisor) else self.divisor_for(**overrides)
        if isinstance(base, tuple):  # a cube's edge must suit every axis
            base = math.lcm(*base)
        for d in range(base, 1025, base):
            start = -(-max(d, self.min_size) // d)
            if all(self._allows((d * j,) * 3, mode, overrides) for j in range(start, start + 4)):
                return d
        return base

    def _allows(self, size: Shape, mode: str, overrides: Mapping[str, Any]) -> bool:
        try:
            self.check_size(size, mode, **overrides)
            return True
        except ValueError:
            return False

    def describe_size(self, size: Shape, **overrides: Any) -> str:
        """What the run's size names with these overrides, and any rounding (the record's size_meaning)."""
        hp = self.hparams(**overrides)
        warning = self.size_warning(size, hp) if self.size_warning else None
        meaning = self.meaning(**overrides)
        return f"{meaning}; {warning}" if warning else meaning

    def meaning(self, **overrides: Any) -> str:
        """What the run's size names with these overrides (``size_meaning``, or its answer)."""
        if callable(self.size_meaning):
            return self.size_meaning(self.hparams(**overrides))
        return self.size_meaning

    def patch_label(self, size: Shape, mode: str = "train", stage: str = "", **overrides: Any) -> str:
        """The patch in words, every image tensor of a sample named: ``160^3`` (U-net), ``160^3 -> 240^3``
        (meU-net: standard -> expanded, whichever the size names), ``256^3 /2`` (a patch seen
        downsampled x2). Every label of a configuration (console, tables, plots) uses it."""
        spec, ov = self.stage(stage, **overrides)
        if spec.stages is not None:
            return format_patch(size)
        images = [t for t in spec.layout(size, 1, 3, spec.hparams(**ov))
                  if t.role == "image" and (mode == "train" or t.name == "image")]
        return " -> ".join(format_patch(t.crop) + (f" /{t.stride}" if t.stride > 1 else "") for t in images)

    def labelled_voxels(self, size: Shape, stage: str = "", **overrides: Any) -> int:
        """Voxels one sample segments at full resolution: its first label tensor's (meU-net: the standard
        patch's; the expanded patch is context)."""
        spec, ov = self.stage(stage, **overrides)
        layout = spec.layout(size, 1, 3, spec.hparams(**ov))
        label = next((t for t in layout if t.role == "label"), layout[0])
        return math.prod(label.shape)

    def param_count(self, in_channels: int = 1, num_classes: int = 3, **overrides: Any) -> int:
        model = self.build_detached(in_channels, num_classes, **overrides)
        return sum(p.numel() for p in model.parameters())
