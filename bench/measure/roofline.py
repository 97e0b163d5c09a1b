"""Predicted step time on a named GPU: a per-operator roofline over the traced step.

Every ATen operator of the traced step (the same fake-tensor trace that counts FLOPs, see
:func:`bench.measure.predict.count_flops`) is classed (:data:`CLASSES`) and costed as

    launch_s + max(flops / (compute_eff[class] * peak(dtype, class)), bytes / (bandwidth_eff[class] * bandwidth))

where ``bytes`` is what it reads and writes (inputs plus outputs; views move nothing and launch
nothing), ``peak`` the catalogue's rate for its dtype (tensor cores for convolutions and matmuls,
:func:`bench.measure.gpus.rate`). So that a record can be re-timed for any GPU without a new trace,
operators are kept as :class:`Work` buckets: class, dtype, phase and arithmetic intensity rounded to a
power of two. Within a bucket every operator is on the same side of a GPU's ridge point (up to that
rounding), so the bucket's time is the sum of its operators' times.

Efficiency factors (:class:`Factors`): the defaults are *stated* ratios between classes (cuDNN's 3D
weight-gradient kernels are slower than its data-gradient and forward kernels; instance norm in
PyTorch makes several passes over its input), scaled by a compute and a bandwidth factor and a launch
cost *fitted* on nnU-Net's published epoch times (``bench validate-published``,
``reports/validation/published_epoch_times.csv``, which says on which GPUs and tasks they were fitted).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from .gpus import GPU, rate

aten = torch.ops.aten

CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHT, MATMUL = "conv_fwd", "conv_bwd_data", "conv_bwd_weight", "matmul"
NORM, ELEMENTWISE, REDUCTION, OPTIMIZER = "norm", "elementwise", "reduction", "optimizer"
CLASSES = (CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHT, MATMUL, NORM, ELEMENTWISE, REDUCTION, OPTIMIZER)
TENSOR_CORE = {CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHT, MATMUL}

_NORM = {aten.native_group_norm, aten.native_group_norm_backward, aten.native_batch_norm,
         aten.native_batch_norm_backward, aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional,
         aten._native_batch_norm_legit_no_training, aten.native_layer_norm, aten.native_layer_norm_backward,
         aten.cudnn_batch_norm, aten.cudnn_batch_norm_backward, aten.batch_norm_backward}
_REDUCTION = {aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.argmax, aten.argmin, aten.var_mean,
              aten.var, aten.std, aten.norm, aten.linalg_vector_norm, aten._softmax, aten._log_softmax,
              aten._softmax_backward_data, aten._log_softmax_backward_data, aten.nll_loss_forward,
              aten.nll_loss2d_forward, aten.nll_loss_backward, aten.nll_loss2d_backward, aten.prod, aten.any, aten.all}
_MATMUL = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
# no kernel: metadata only, or memory that is not touched
_FREE_PACKETS = {aten.empty, aten.empty_strided, aten.empty_like, aten.new_empty, aten.new_empty_strided, aten.detach,
                 aten.lift_fresh, aten.alias, aten._local_scalar_dense, aten.set_, aten.resize_, aten.is_same_size}


@dataclass(frozen=True)
class Factors:
    """Efficiency factors: achieved fraction of the peak rate (compute) and of the bandwidth per class,
    and the fixed cost of one kernel."""

    compute: dict[str, float] = field(default_factory=lambda: {
        CONV_FWD: 0.5, CONV_BWD_DATA: 0.45, CONV_BWD_WEIGHT: 0.35, MATMUL: 0.6,
        NORM: 0.5, ELEMENTWISE: 0.5, REDUCTION: 0.5, OPTIMIZER: 0.5})
    bandwidth: dict[str, float] = field(default_factory=lambda: {
        CONV_FWD: 0.8, CONV_BWD_DATA: 0.8, CONV_BWD_WEIGHT: 0.8, MATMUL: 0.8,
        NORM: 0.4, ELEMENTWISE: 0.8, REDUCTION: 0.6, OPTIMIZER: 0.8})
    cuda_core: float = 1.0  # multiplies ``compute`` where the rate is not a tensor-core rate
    launch_s: float = 5e-6

    def scaled(self, tensor_core: float, cuda_core: float, bandwidth: float, launch_s: float) -> Factors:
        """The stated class ratios with the fitted scales multiplied in (capped at 1)."""
        return replace(self, compute={k: min(1.0, v * tensor_core) for k, v in self.compute.items()},
                       bandwidth={k: min(1.0, v * bandwidth) for k, v in self.bandwidth.items()},
                       cuda_core=cuda_core, launch_s=launch_s)

    def describe(self) -> str:
        comp = ", ".join(f"{k} {v:.3g}" for k, v in self.compute.items())
        bw = ", ".join(f"{k} {v:.3g}" for k, v in self.bandwidth.items())
        return (f"compute efficiency (tensor cores): {comp}; x{self.cuda_core:.3g} on CUDA cores; "
                f"bandwidth efficiency: {bw}; launch {self.launch_s * 1e6:.3g} us")


STATED = Factors()
# Scales fitted by ``bench validate-published --fit`` on the fit rows of
# reports/validation/published_epoch_times.csv: (tensor-core compute, CUDA-core compute, bandwidth, launch s).
FITTED_SCALES = (2.115, 0.475, 0.2778, 1.381e-05)
FITTED = STATED.scaled(*FITTED_SCALES)


@dataclass(frozen=True)
class Work:
    """Operators of one class, dtype and phase whose arithmetic intensity rounds to the same power of 2."""

    cls: str
    dtype: str  # fp32 / fp16 / bf16 (what the operator computes in)
    forward: bool  # in the forward pass (a validation step runs only these)
    flops: float
    nbytes: float
    ops: int


def _dtype(tensors: list[torch.Tensor]) -> str:
    for t in tensors:
        if t.dtype == torch.float16:
            return "fp16"
        if t.dtype == torch.bfloat16:
            return "bf16"
    return "fp32"


def _classify(func: Any, phase: str) -> str:
    packet = func.overloadpacket
    if phase == "optimizer":
        return OPTIMIZER
    if packet in (aten.convolution, aten.convolution_overrideable, aten._convolution, aten.cudnn_convolution):
        return CONV_FWD
    if packet in _MATMUL:
        return MATMUL
    if packet in _NORM:
        return NORM
    if packet in _REDUCTION:
        return REDUCTION
    return ELEMENTWISE


class WorkCounter(TorchDispatchMode):
    """Collects every operator's class, FLOPs and bytes into :class:`Work` buckets while a step runs."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "forward"
        self._acc: dict[tuple[str, str, bool, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])

    def set_phase(self, name: str) -> None:
        self.phase = name

    def _add(self, cls: str, dtype: str, flops: float, nbytes: float) -> None:
        bucket = round(math.log2(flops / nbytes)) if flops > 0 and nbytes > 0 else -99
        acc = self._acc[(cls, dtype, self.phase == "forward", bucket)]
        acc[0] += flops
        acc[1] += nbytes
        acc[2] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket in _FREE_PACKETS or getattr(func, "is_view", False):
            return out
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        nbytes = float(sum(t.numel() * t.element_size() for t in ins + outs))
        if nbytes == 0 or not (outs or func.overloadpacket.__name__.endswith("_")):  # e.g. prim.device
            return out
        flops = float(flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)) \
            if func.overloadpacket in flop_registry else 0.0
        dtype = _dtype(ins + outs)
        if func.overloadpacket is aten.convolution_backward and self.phase != "optimizer":
            mask = [bool(m) for m in (args[-1] if args else kwargs["output_mask"])][:2]
            parts = [c for c, m in zip((CONV_BWD_DATA, CONV_BWD_WEIGHT), mask, strict=True) if m] or [CONV_BWD_WEIGHT]
            for c in parts:
                self._add(c, dtype, flops / len(parts), nbytes / len(parts))
        else:
            self._add(_classify(func, self.phase), dtype, flops, nbytes)
        return out

    def work(self) -> list[Work]:
        return [Work(c, d, f, a[0], a[1], int(a[2])) for (c, d, f, _), a in sorted(self._acc.items())]


def work_to_json(work: Iterable[Work]) -> str:
    """Compact JSON of the buckets (what the record keeps, so that reports re-time it for any GPU)."""
    return json.dumps([[w.cls, w.dtype, int(w.forward), w.flops, w.nbytes, w.ops] for w in work])


def work_from_json(text: str) -> list[Work]:
    return [Work(c, d, bool(f), fl, b, n) for c, d, f, fl, b, n in json.loads(text)]


def step_time(work: Iterable[Work], gpu: GPU, factors: Factors | None = None,
              keep: Callable[[Work], bool] = lambda _w: True) -> tuple[float, list[str]]:
    """Seconds one step's ``work`` (those buckets ``keep`` selects) takes on ``gpu``, and notes on
    dtypes the GPU cannot run fast."""
    f = factors or FITTED
    total, notes = 0.0, set()
    for w in work:
        if not keep(w):
            continue
        r = rate(gpu, w.dtype, w.cls in TENSOR_CORE)
        if r.note and w.flops:
            notes.add(r.note)
        eff = f.compute[w.cls] * (1.0 if r.tensor_core else f.cuda_core)
        compute = w.flops / (min(1.0, eff) * r.flops_per_s) if w.flops else 0.0
        memory = w.nbytes / (f.bandwidth[w.cls] * gpu.bandwidth_bytes_per_s)
        total += w.ops * f.launch_s + max(compute, memory)
    return total, sorted(notes)


def by_class(work: Iterable[Work]) -> dict[str, dict[str, float]]:
    """FLOPs, bytes and operators per class (for reports and tests)."""
    out: dict[str, dict[str, float]] = {}
    for w in work:
        d = out.setdefault(w.cls, {"flops": 0.0, "bytes": 0.0, "ops": 0})
        d["flops"] += w.flops
        d["bytes"] += w.nbytes
        d["ops"] += w.ops
    return out
