"""Track every tensor storage's allocation and free, in order, below autograd.

:class:`AllocationTracker` is a ``TorchDispatchMode``: it sees the output of every ATen op (forward,
backward, optimizer, checkpoint recomputation) and records a storage the first time it appears; a
weak reference to the storage records its free when the storage dies (autograd's saved tensors keep
storages alive exactly as long as on a real device). The same tracker runs on real CPU tensors (the
"live tensor" peak of a CPU run) and on fake tensors (the event sequence that prediction replays
through the CUDA caching-allocator model).

Each allocation is tagged with a category, as torch's MemTracker reports: ``parameter``,
``gradient``, ``optimizer`` (Adam's moments), ``input``, ``activation`` (made in forward) and
``temporary`` (made in backward or the optimizer step and not one of the above). Categories of
parameters, gradients and optimizer state are assigned after the fact from the live objects.

:func:`replay` plays the recorded sequence through the caching-allocator model (:mod:`.allocator`), with a
hook before each event (where cuDNN's workspaces go, :mod:`.device`): every predicted figure comes from it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .allocator import AllocatorSettings, CachingAllocatorModel

# with autograd on or under no_grad a convolution reaches the modes as aten.convolution; under inference_mode
# as the op the network called (conv3d, conv_transpose3d, ...), which is not decomposed there
_TRANSPOSED = (torch.ops.aten.conv_transpose1d, torch.ops.aten.conv_transpose2d, torch.ops.aten.conv_transpose3d)
_CONVS = (torch.ops.aten.convolution, torch.ops.aten._convolution, torch.ops.aten.convolution_backward,
          torch.ops.aten.cudnn_convolution, torch.ops.aten.conv1d, torch.ops.aten.conv2d, torch.ops.aten.conv3d,
          *_TRANSPOSED)
#: what torch.utils.module_tracker.ModuleTracker calls the place outside every module
UNNAMED = "Global"
CATEGORIES = ("parameter", "gradient", "optimizer", "input", "activation", "temporary")


class Conv(NamedTuple):
    """One convolution op (forward or backward) as cuDNN's workspace models see it (bench.measure.device)."""

    #: the event index right after its outputs: where its workspace goes
    index: int
    #: its largest tensor operand's bytes (the benchmark's candidates scale with it)
    largest: int
    #: the bytes of its operands that are not channels-last already (one channel is): forward, input + weight +
    #: output; backward, the output's gradient + input + weight (the data-gradient kernel's operands, and the
    #: weight-gradient kernel's: the input's gradient is the input's size, the weight's the weight's)
    operands: int
    #: what cuDNN's benchmark cache keys its choice on (the op, its operands' shapes and dtypes, its other
    #: arguments): a convolution with the key of an earlier one runs the algorithm chosen then
    key: tuple = ()
    #: a forward convolution's output as ``operands`` counts it (0 in backward, or where it is channels-last), its
    #: channels and its dtype, and whether it is transposed: what cuDNN's heuristic picks its engine by
    #: (bench.measure.device.heuristic_workspace)
    output: int = 0
    out_channels: int = 0
    dtype: torch.dtype | None = None
    transposed: bool = False


@dataclass
class Event:
    """+nbytes at an allocation, -nbytes at a free, of storage ``sid`` (ids are never reused)."""

    sid: int
    nbytes: int
    phase: str


def _nbytes(t: object) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _not_channels_last(t: object) -> int:
    """The bytes of ``t`` unless its layout is channels-last already: one channel (dim 1) or not a tensor."""
    return _nbytes(t) if isinstance(t, torch.Tensor) and t.dim() > 2 and t.shape[1] != 1 else 0


def _conv(func, args: tuple, kwargs: dict, out: object, index: int) -> Conv:
    """A convolution op's :class:`Conv`: ``convolution_backward(grad_output, input, weight, ...)`` or a forward
    ``(input, weight, ...) -> output``."""
    largest = max((_nbytes(t) for t in tree_leaves((args, kwargs, out))), default=0)
    key = (func.overloadpacket.__name__, *((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else repr(a)
                                            for a in args))
    if func.overloadpacket is torch.ops.aten.convolution_backward:  # (grad_output, input, weight, ...)
        return Conv(index, largest, sum(_not_channels_last(t) for t in args[:3]), key)
    # (input, weight, ...) -> output; aten.convolution's 7th argument says transposed
    outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    output = sum(_not_channels_last(t) for t in outs)
    transposed = func.overloadpacket in _TRANSPOSED or (
        func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten._convolution) and len(args) > 6
        and bool(args[6]))
    return Conv(index, largest, sum(_not_channels_last(t) for t in args[:2]) + output, key, output,
                outs[0].shape[1] if outs and outs[0].dim() > 1 else 0, outs[0].dtype if outs else None, transposed)


@dataclass
class AllocationTracker(TorchDispatchMode):
    """Records storage allocations and frees in order; see the module docstring."""

    phase: str = "setup"
    events: list[Event] = field(default_factory=list)
    categories: dict[int, str] = field(default_factory=dict)
    _live: dict[int, tuple[int, weakref.ref]] = field(default_factory=dict)
    _next: int = 0
    marks: dict[str, int] = field(default_factory=dict)
    #: when set, names the module running now; each storage's name is kept in ``modules`` (snapshots)
    where: Callable[[], str] | None = None
    modules: dict[int, str] = field(default_factory=dict)
    #: each convolution (forward or backward): where cuDNN's workspace goes and what it scales with
    #: (bench.measure.device); not events, so replays without workspaces are unchanged
    convs: list[Conv] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    # ----- recording ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.see(t)
        if func.overloadpacket in _CONVS:
            self.convs.append(_conv(func, args, kwargs or {}, out, len(self.events)))
        return out

    def see(self, t: torch.Tensor) -> None:
        """Register ``t``'s storage if it is new (also usable for tensors made outside the mode)."""
        st = t.untyped_storage()
        key = st._cdata
        if key in self._live or st.nbytes() == 0:
            return
        sid = self._next
        self._next += 1
        nbytes = st.nbytes()
        self._live[key] = (sid, weakref.ref(st, self._freer(key, sid, nbytes)))
        self.events.append(Event(sid, nbytes, self.phase))
        if self.where is not None:
            self.modules[sid] = self.where()
        self.categories[sid] = "activation" if self.phase == "forward" else (
            "input" if self.phase == "setup" else "temporary")

    def _freer(self, key: int, sid: int, nbytes: int):
        def on_free(_ref) -> None:
            if self._live.get(key, (None,))[0] == sid:
                del self._live[key]
            self.events.append(Event(sid, -nbytes, self.phase))

        return on_free

    def set_phase(self, name: str) -> None:
        self.phase = name

    def mark(self, name: str) -> None:
        """Remember the current position in the event list (e.g. where peak stats are reset)."""
        self.marks[name] = len(self.events)

    def sid_of(self, t: torch.Tensor) -> int | None:
        entry = self._live.get(t.untyped_storage()._cdata)
        return None if entry is None else entry[0]

    def label(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        for t in tensors:
            sid = self.sid_of(t)
            if sid is not None:
                self.categories[sid] = category

    def label_training_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Tag live parameters and optimizer state; gradients are tagged as they are seen by
        :meth:`label_gradients` (they are freed by ``zero_grad`` before the step ends)."""
        self.label(model.parameters(), "parameter")
        self.label(model.buffers(), "parameter")
        if optimizer is not None:
            self.label((v for s in optimizer.state.values() for v in s.values()
                        if isinstance(v, torch.Tensor) and v.numel() > 1), "optimizer")

    def name_training_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                            gradients: bool = False) -> None:
        """Name parameters, buffers and optimizer state (with ``gradients``: the live gradients instead) by
        their parameter's name where no module named them (``modules``, for snapshots): they are made
        outside any module's forward, at build time or in the optimizer."""
        root = type(model).__name__
        params = [(f"{root}.{n}", p) for n, p in model.named_parameters()]
        if gradients:
            pairs = [(f"{n}.grad", p.grad) for n, p in params if p.grad is not None]
        else:
            of = {id(p): n for n, p in params}
            pairs = params + [(f"{root}.{n}", b) for n, b in model.named_buffers()]
            if optimizer is not None:
                pairs += [(f"{of.get(id(p), '?')} ({k})", v) for p, s in optimizer.state.items() for k, v in s.items()
                          if isinstance(v, torch.Tensor) and v.numel() > 1]
        for name, t in pairs:
            sid = self.sid_of(t)
            if sid is not None and self.modules.get(sid, UNNAMED) == UNNAMED:
                self.modules[sid] = name

    def label_gradients(self, model: torch.nn.Module) -> None:
        self.label((p.grad for p in model.parameters() if p.grad is not None), "gradient")

    def host_sids(self, optimizer: torch.optim.Optimizer | None) -> set[int]:
        """Storages that live on the host on a real CUDA run (Adam's ``step`` counters)."""
        if optimizer is None:
            return set()
        steps = (s["step"] for s in optimizer.state.values() if isinstance(s.get("step"), torch.Tensor))
        return {sid for t in steps if (sid := self.sid_of(t)) is not None}

    # ----- reading --------------------------------------------------------------------------------
    def live_peak(self, start: int = 0, exclude: set[int] | None = None) -> tuple[int, int]:
        """(peak, at event index) of live bytes from event ``start`` on (bytes live before it count)."""
        exclude = exclude or set()
        cur = sum(e.nbytes for e in self.events[:start] if e.sid not in exclude)
        peak, at = cur, start
        for i in range(start, len(self.events)):
            e = self.events[i]
            if e.sid in exclude:
                continue
            cur += e.nbytes
            if cur > peak:
                peak, at = cur, i
        return peak, at

    def live_at(self, index: int, exclude: set[int] | None = None) -> dict[int, int]:
        """Bytes of each storage live just after event ``index``."""
        exclude = exclude or set()
        live: dict[int, int] = {}
        for e in self.events[: index + 1]:
            if e.sid in exclude:
                continue
            if e.nbytes > 0:
                live[e.sid] = e.nbytes
            else:
                live.pop(e.sid, None)
        return live

    def breakdown_at(self, index: int, exclude: set[int] | None = None) -> dict[str, int]:
        """Live bytes per category just after event ``index``."""
        out = dict.fromkeys(CATEGORIES, 0)
        for sid, n in self.live_at(index, exclude).items():
            out[self.categories.get(sid, "temporary")] += n
        return out


def replay(tracker: AllocationTracker, exclude: set[int], reset_at: int, settings: AllocatorSettings | None = None,
           capacity: int | None = None,
           before: Callable[[int, CachingAllocatorModel], None] | None = None) -> CachingAllocatorModel:
    """Replay the tracked events through the allocator model, resetting peaks at ``reset_at``.

    ``settings``: the allocator options (default: ``PYTORCH_CUDA_ALLOC_CONF`` of this process);
    ``capacity``: the device's bytes (None: unlimited), past which the model frees its cache and
    retries, then raises :class:`bench.measure.allocator.AllocatorOOM`; ``before(i, model)`` runs before
    event ``i`` (cuDNN's workspaces, :func:`bench.measure.device.replay_device`)."""
    model = CachingAllocatorModel(settings if settings is not None else AllocatorSettings.from_env(), capacity)
    for i, e in enumerate(tracker.events):
        if i == reset_at:
            model.reset_peak()
        if before is not None:
            before(i, model)
        if e.sid in exclude:
            continue
        if e.nbytes > 0:
            model.malloc(e.sid, e.nbytes)
        else:
            model.free(e.sid)
    if reset_at >= len(tracker.events):
        model.reset_peak()
    return model
