"""The vocabularies of segmem's options and the parsers of its option values: defined once, used by the
CLI (as Typer's choices), the sweep, the worker and the readers. Imports nothing heavy (no torch), so
that the sweep engine can use it in a process that never builds a network.
"""

from __future__ import annotations

import ast
import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # the one home of Shape is the architectures' interface (importing it loads torch)
    from architectures import Shape


class Mode(StrEnum):
    """What one configuration runs: a full training step, or the architecture's inference path."""

    TRAIN = "train"
    INFER = "infer"


class Precision(StrEnum):
    """Float32, or autocast at bf16 / fp16 (fp16 with a gradient scaler)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Backend(StrEnum):
    """What produces a record's figures. ``cuda`` and ``cpu`` measure on that device (and predict too);
    ``predict`` only predicts CUDA memory, on any machine. A backend is not a torch device: the
    prediction traces on fake CPU tensors, see :attr:`torch_device`."""

    CUDA = "cuda"
    CPU = "cpu"
    PREDICT = "predict"

    @property
    def measures(self) -> bool:
        """Whether it runs real computation (and so has times, and can train for Dice)."""
        return self is not Backend.PREDICT

    @property
    def gpu_defaults(self) -> bool:
        """Whether an architecture's paper sizes, batches and precision apply (CUDA and its prediction)."""
        return self is not Backend.CPU

    @property
    def torch_device(self) -> str:
        """Where its tensors live: ``cuda`` for CUDA measurement, else ``cpu`` (fake CPU tensors for prediction)."""
        return "cuda" if self is Backend.CUDA else "cpu"


#: what ``--backend`` accepts: every backend, or ``auto`` (cuda when a GPU is visible, else cpu)
BackendChoice = StrEnum("BackendChoice", {"AUTO": "auto", **{b.name: b.value for b in Backend}})


class Planner(StrEnum):
    """nnunetv2's experiment planners (``bench plan``): the default (PlainConvUNet, 8 GB target) and the
    residual-encoder presets M / L / XL (8 / 24 / 40 GB targets)."""

    DEFAULT = "default"
    RESENC_M = "resenc_m"
    RESENC_L = "resenc_l"
    RESENC_XL = "resenc_xl"


class CascadeReading(StrEnum):
    """How ``bench paper`` reads Table 3's nnU-Net cascade's stage 1: the paper's words (the whole x2-downsampled
    volume at batch 1), or as nnU-Net plans it (the 3d_lowres configuration's planned patch and batch)."""

    PAPER = "paper"
    PLANNED = "planned"


class ExecutorKind(StrEnum):
    """Where a sweep's configurations run: worker processes on this machine, or SLURM jobs (submitit)."""

    LOCAL = "local"
    SLURM = "slurm"


class Figure(StrEnum):
    """Which predicted peak a budget is compared with: what the caching allocator takes from the device
    (reserved, the figure that decides an out-of-memory error) or what tensors hold (allocated)."""

    RESERVED = "reserved"
    ALLOCATED = "allocated"


class Weighting(StrEnum):
    """The sliding-window vote: the paper's centre-weighted, nnU-Net's Gaussian, or a plain average."""

    CENTRE = "centre"
    GAUSSIAN = "gaussian"
    UNIFORM = "uniform"


class Inferer(StrEnum):
    """Who runs a Dice run's whole-volume sliding window: segmem (nnunetv2's tile positions, the vote of
    ``Weighting``, the accumulator on the device when it fits) or MONAI's ``sliding_window_inference``
    (its tiles, a constant or Gaussian blend), for the memory a MONAI pipeline would use."""

    SEGMEM = "segmem"
    MONAI = "monai"


E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], value: Any, what: str | None = None) -> E:
    """``value`` as a member of ``kind``; ValueError in one line listing the valid values."""
    try:
        return kind(value)
    except ValueError:
        name = what or kind.__name__.lower()
        raise ValueError(f"{name} must be one of {', '.join(m.value for m in kind)}; got {value!r}") from None


def parse_size(text: str) -> Shape:
    """``160`` -> (160, 160, 160); ``128x160x96`` -> (128, 160, 96)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"size {text!r} is not an edge like 160 or a box like 128x160x96") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or min(vals) < 1:
        raise ValueError(f"size {text!r} must be one positive edge or three (DxHxW)")
    return vals  # type: ignore[return-value]


def format_size(size: Shape) -> str:
    """(128, 160, 96) -> ``128x160x96``: how a size is written in records, labels and tables."""
    return "x".join(map(str, size))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as Python literals where they are (``1.5``, ``(8, 16)``), else
    kept as text (``norm=instance``). Whether a value suits the architecture is the spec's to say."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value; got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


GB = 10**9
GiB = 2**30
_UNITS = {"tib": 2**40, "gib": GiB, "mib": 2**20, "kib": 2**10, "tb": 10**12, "gb": GB, "mb": 10**6, "kb": 10**3, "b": 1}


def parse_bytes(text: str, allow_zero: bool = False) -> int:
    """``16GB`` (10^9), ``16GiB`` (2^30), ``500MB``, ``16`` (GB) -> bytes."""
    t = text.strip().replace(" ", "")
    suffix = next((u for u in _UNITS if t.lower().endswith(u)), "")
    number, mult = (t[: -len(suffix)], _UNITS[suffix]) if suffix else (t, GB)
    try:
        value = float(number) * mult
    except ValueError:
        raise ValueError(f"{text!r} is not a memory size like 16GB, 16GiB or 500MB") from None
    if not 0 <= value < math.inf or (value == 0 and not allow_zero):  # nan and inf too
        raise ValueError(f"a memory size must be a positive, finite number; got {text!r}")
    return int(value)


def signed_percent(x: float, digits: int = 2) -> str:
    """A relative change with its sign, ``+1.25%``; one that rounds to nothing is ``+0.00%``, never ``-0.00%``."""
    v = round(x * 100, digits) + 0.0  # (+ 0.0 turns -0.0 into 0.0)
    return f"{v:+.{digits}f}%"


def human_bytes(v: Any) -> str:
    """Bytes as a reader scans them: ``1.06 GiB``, ``52.0 MiB``, ``0`` (never a raw 10-digit count)."""
    if v is None or v != v:
        return "-"
    v = float(v)
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= size:
            return f"{v / size:.2f} {unit}" if unit == "GiB" else f"{v / size:.1f} {unit}"
    return f"{v:.0f} B" if v else "0"
