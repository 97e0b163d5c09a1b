"""What a GPU shows beyond the caching allocator: the CUDA context and cuDNN's convolution workspaces.

``torch.cuda.max_memory_reserved`` is what the allocator holds; ``nvidia-smi`` shows the process's whole
device memory: the reserved segments plus the **CUDA context** (driver state, the kernels of every loaded
module). cuDNN's **convolution workspaces** are allocated through PyTorch's caching allocator (so they are
in allocated and reserved), but the fake-tensor trace does not see them: :class:`AllocationTracker` notes
each convolution (``tracker.convs``) and :func:`replay_device` inserts a transient workspace there.

The context, each figure with its public source:

- CUDA >= 11.7 loads kernels lazily, and PyTorch >= 1.13 sets ``CUDA_MODULE_LOADING=LAZY`` when the user
  has not (pytorch/pytorch#86509): the bare context after one small op was 287,047,680 B lazy against
  666,632,192 B with eager loading (same PR, ``cudaMemGetInfo``); before 11.7 every kernel was loaded at
  start, ">1000MB" (ptrblck, pytorch/pytorch#107667).
- Per GPU family, where a public figure exists: RTX 3090 (Ampere GA102), torch 2.7.1+cu128, 256 MiB
  (invoke-ai/InvokeAI#9413); RTX 6000 Ada, torch 2.10+cu130, 426 MiB (unslothai/unsloth-zoo#1053).
  Other families take the lazy/eager figure of pytorch/pytorch#86509.
- A training step then loads cuDNN's, cuBLAS's and PyTorch's kernels into the context lazily
  (``TRAINING_KERNELS``). No public figure states it alone; it is *fitted*: nvidia-smi minus
  ``max_memory_reserved`` minus the bare context on the ``fit`` rows of
  ``reports/validation/published_memory.csv`` that state both (``bench validate --published --fit``).

The workspaces: neither cuDNN nor PyTorch documents a workspace size per algorithm. What PyTorch
documents and does (``aten/src/ATen/native/cudnn/Conv_v7.cpp`` / ``Conv_v8.cpp``): with
``torch.backends.cudnn.benchmark`` off, cuDNN's heuristics pick the engine; with it on, every candidate
algorithm is tried once per shape (the first step) and the fastest kept, each candidate's workspace
allocated through the caching allocator, up to the largest block the allocator could give
(``CUDACachingAllocator::cacheInfo``: the free device memory or the largest cached free block, whichever
is larger); ``CUDNN_CONV_WSCAP_DBG`` (MiB) caps it further.

- Benchmark off: ``HEURISTIC_WORKSPACE`` times the bytes of the convolution's operands that are not
  channels-last already (forward: input, weight, output; backward: the output's gradient, the input,
  the weight; a tensor of one channel is channels-last as it is). *Read off* real traces: on an H200
  (torch 2.11.0+cu130, cuDNN 9.19, ``reports/validation/nvidia-h200-2.11.0+cu130/snapshots``) each 3D
  convolution asked a transient workspace of exactly those bytes, in fp32 and fp16 alike (the
  heuristic's engines run channels-last and copy NCDHW operands): the U-net's, V-Net's and nnU-Net's
  inference forward convolutions (a first convolution of a one-channel image: its output alone), and in
  the 3D U-Net's backward the data-gradient kernel (output's gradient + weight + input's gradient) and
  the weight-gradient kernel (input + output's gradient + weight, a few MiB more). An implicit-GEMM
  engine with no workspace (``HEURISTIC_WORKSPACE = 0``, this module's model before those traces) was
  10-17% low on every architecture's inference there.
- Benchmark off, one exception (``HEURISTIC_OUTPUT_IN_PLACE``): a float32 forward convolution (not transposed) with
  64 output channels asks the input's and the weight's bytes only, the output left out (the engine writes it as it
  is laid out). *Read off* the same H200 traces, where every one of them does: the U-net's, V-Net's and nnU-Net's
  inference, 16 distinct convolutions (3x3x3 and V-Net's 5x5x5), none with the output. It was found while examining
  the H100's two misses (the 3D U-Net's fp32 inference, +9.84% and +8.93%: a 1,537.27 MiB workspace at its
  192-to-64-channel convolution where the rule above said 2,049.27 MiB); the H100's traces then showed it at all
  56 such convolutions of its inference, every architecture. Training's forward convolutions on the H200: 28 of
  30 (two of the meU-net's at a 15^3 grid copy the output, 3.3 MiB). In fp16, in transposed convolutions and as
  the algorithm the benchmark chose, the output is copied at 64 channels too, and in fp32 at 128 channels with
  3x3x3 kernels (all 44 on the H100) and at most other shapes. The fp32 shapes whose engine leaves
  the output out (V-Net's 5x5x5 to 128 channels, the 2x2x2 downsampling convolutions, 32 channels on a 20^3 grid)
  are not modelled: their workspaces are small, and the model is high there. Every trace ran with PyTorch's default
  ``torch.backends.cudnn.allow_tf32 = True`` (fp32 convolutions on TF32 engines); with it off the heuristic may
  pick other engines, which no trace shows.
- Benchmark on: the first convolution of each kind (cuDNN's benchmark cache key: shapes, dtypes,
  arguments) tries the candidates in one workspace, modelled as ``WORKSPACE_FACTOR`` times the
  convolution's largest operand (input, output, or the gradient of either), *fitted* on the ``fit`` rows
  of the published table; PyTorch then empties the allocator's cache, and the convolution runs the chosen
  algorithm, with a workspace of its operands not channels-last (the output too, at 64 channels as at any other:
  the 3D U-Net's traces with the benchmark on); every later one of its kind runs the chosen algorithm
  alone. *Read off* the H200's traces: at each tried convolution one large allocation freed at once,
  followed by ``segment_free`` of every unused cached segment (the U-net's first convolution at 80^3,
  batch 4, fp32: a 125 MiB output, a 1,031.4 MiB workspace in a 1,032 MiB segment, released right after),
  then the operands' workspace; the measured step's peak allocated was within 1% of benchmark off on 30 of
  31 pairs. Without the release the model held the candidates' segments into the steps after: peak reserved
  with benchmark on was a median 21% high on those 31 configurations (with it: median 0.0%, |error| 1.8%).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .allocator import AllocatorOOM, AllocatorSettings, CachingAllocatorModel
from .tracker import Conv, replay

MiB = 2**20

#: GPU family of each catalogue entry (bench.measure.gpus), from NVIDIA's architecture whitepapers
FAMILY = {
    "A100-40GB": "Ampere", "A100-80GB": "Ampere", "RTX-3090": "Ampere-GA102", "H100-SXM": "Hopper",
    "H100-PCIe": "Hopper", "H200": "Hopper", "L40S": "Ada", "RTX-4090": "Ada", "V100-SXM2": "Volta",
    "V100-SXM3": "Volta", "V100-PCIe": "Volta", "Quadro-RTX-6000": "Turing", "Titan-RTX": "Turing",
    "RTX-2080-Ti": "Turing", "Titan-Xp": "Pascal", "P100": "Pascal",
    "RTX-4070": "Ada",  # not in the catalogue; a published figure's GPU (reports/validation/published_memory.csv)
}


@dataclass(frozen=True)
class ContextFigure:
    family: str  # a FAMILY value, or "*" for any
    lazy: bool  # CUDA >= 11.7 with lazy module loading
    nbytes: int
    source: str


PR86509 = ("pytorch/pytorch#86509 (CUDA 11.7; cudaMemGetInfo after one small tensor op: 287,047,680 B with "
           "CUDA_MODULE_LOADING=LAZY, 666,632,192 B with DEFAULT)")
CONTEXT = (
    ContextFigure("Ampere-GA102", True, 256 * MiB, "invoke-ai/InvokeAI#9413 (RTX 3090, torch 2.7.1+cu128: 256 MiB "
                                                   "bare context in nvidia-smi)"),
    ContextFigure("Ada", True, 426 * MiB, "unslothai/unsloth-zoo#1053 (RTX 6000 Ada, torch 2.10.0+cu130: 426 MiB in "
                                          "nvidia-smi after torch.cuda.mem_get_info)"),
    ContextFigure("*", True, 287_047_680, PR86509),
    ContextFigure("*", False, 666_632_192, PR86509),
)


def least_context() -> int:
    """The smallest CUDA context of :data:`CONTEXT`: a GPU with less memory holds no step at all."""
    return min(c.nbytes for c in CONTEXT)


# ---- fitted on the fit rows of reports/validation/published_memory.csv (bench validate --published --fit) ----
#: kernels a training step of a convolutional network loads into the context (lazy loading), bytes
TRAINING_KERNELS = 648 * MiB
#: workspace a benchmark candidate asks, as a multiple of the convolution's largest operand
WORKSPACE_FACTOR = 2.15
# ---- read off recorded traces (see the module docstring) ----
#: workspace of the engine cuDNN's heuristic picks (benchmark off), as a multiple of its operands not channels-last
HEURISTIC_WORKSPACE = 1.0
#: the output channels for which cuDNN's heuristic (benchmark off) picks, for a forward convolution of this dtype
#: that is not transposed, an engine that writes its output as it is laid out: the workspace is the input's and
#: the weight's alone (see the module docstring)
HEURISTIC_OUTPUT_IN_PLACE: dict[torch.dtype, frozenset[int]] = {torch.float32: frozenset({64})}
#: the allocator model's handle of the workspace being allocated (traced storages have ids >= 0)
WORKSPACE_HANDLE = -1


def lazy_loading(cuda: str | None) -> bool:
    """Whether kernels load lazily: CUDA >= 11.7 (unknown version: assume a current one) unless
    ``CUDA_MODULE_LOADING`` says otherwise."""
    env = os.environ.get("CUDA_MODULE_LOADING")
    if env:
        return env.upper() == "LAZY"
    if not cuda:
        return True
    major, minor, *_ = (int(p) if p.isdigit() else 0 for p in (cuda.split(".") + ["0"])[:2])
    return (major, minor) >= (11, 7)


def context_figure(gpu: str | None, cuda: str | None = None) -> ContextFigure:
    """The bare context figure for a catalogue GPU name (or None) and a CUDA version."""
    family, lazy = FAMILY.get(gpu or "", "*"), lazy_loading(cuda)
    for f in CONTEXT:
        if f.lazy == lazy and f.family in (family, "*"):
            return f
    raise AssertionError("CONTEXT has a '*' figure for both loading modes")


def context_bytes(gpu: str | None, cuda: str | None = None, training: bool = True,
                  kernels: int | None = None) -> int:
    """The CUDA context a process shows in nvidia-smi: bare context plus, for a training step, the kernels
    it loads (``kernels``: that figure, default the fitted TRAINING_KERNELS)."""
    k = TRAINING_KERNELS if kernels is None else kernels
    return context_figure(gpu, cuda).nbytes + (k if training else 0)


def workspace_cap() -> int | None:
    """``CUDNN_CONV_WSCAP_DBG`` (MiB) in bytes, or None."""
    v = os.environ.get("CUDNN_CONV_WSCAP_DBG", "")
    return int(v) * MiB if v.isdigit() else None


def heuristic_workspace(conv: Conv) -> int:
    """The workspace of the engine cuDNN's heuristic picks for ``conv`` (benchmark off): HEURISTIC_WORKSPACE x its
    operands not channels-last, less the output where the engine writes it in place (HEURISTIC_OUTPUT_IN_PLACE)."""
    in_place = not conv.transposed and conv.out_channels in HEURISTIC_OUTPUT_IN_PLACE.get(conv.dtype, ())
    return int(HEURISTIC_WORKSPACE * (conv.operands - (conv.output if in_place else 0)))


class Workspaces:
    """cuDNN's workspaces of ``tracker``'s convolutions as a hook run before each traced event ``i``
    (:func:`bench.measure.tracker.replay`'s ``before``, :func:`bench.measure.snapshot.build`'s): each convolution
    allocates, right after its outputs, ``factor`` (benchmark on, the first of its key; default the fitted
    WORKSPACE_FACTOR) x its largest operand, or else HEURISTIC_WORKSPACE x its operands not channels-last, and frees
    it when it returns. The candidate is left out where PyTorch leaves it out: a workspace over CUDNN_CONV_WSCAP_DBG
    or, with a ``capacity``, over the largest block the allocator could give, and one whose allocation fails.
    ``largest``: the largest workspace allocated so far."""

    def __init__(self, tracker, benchmark: bool, factor: float | None = None,  # noqa: ANN001
                 capacity: int | None = None) -> None:
        f = WORKSPACE_FACTOR if factor is None else factor
        #: event index -> the workspaces there, in order, each (bytes, whether the benchmark's trial)
        self.at: dict[int, list[tuple[int, bool]]] = {}
        tried: set[tuple] = set()  # the benchmark cache
        for conv in tracker.convs:
            here = self.at.setdefault(conv.index, [])
            if benchmark and conv.key not in tried:
                here.append((int(f * conv.largest), True))
            tried.add(conv.key)
            # the algorithm the benchmark chose copies every operand (the traces: output included at any channels)
            here.append((int(HEURISTIC_WORKSPACE * conv.operands) if benchmark else heuristic_workspace(conv), False))
        self.cap, self.capacity, self.largest = workspace_cap(), capacity, 0

    def __call__(self, i: int, model: CachingAllocatorModel) -> None:
        for size, trial in self.at.get(i, ()):
            if size > 0 and self._fits(size, model):
                try:
                    model.malloc(WORKSPACE_HANDLE, size)
                except AllocatorOOM:  # PyTorch skips a candidate whose workspace allocation fails
                    pass
                else:
                    model.free(WORKSPACE_HANDLE)
                    self.largest = max(self.largest, size)
            if trial:  # the benchmark then empties the allocator's cache (the traces' segment_free)
                model.empty_cache()

    def _fits(self, size: int, model: CachingAllocatorModel) -> bool:
        """PyTorch leaves out candidates whose workspace passes the cap or the room the allocator has."""
        room = None if self.capacity is None else max(self.capacity - model.reserved, model.largest_free_block())
        return not ((self.cap is not None and size > self.cap) or (room is not None and size > room))


@dataclass
class DeviceReplay:
    model: CachingAllocatorModel
    largest_workspace: int


def replay_device(tracker, exclude: set[int], reset_at: int, benchmark: bool, factor: float | None = None,  # noqa: ANN001
                  settings: AllocatorSettings | None = None, capacity: int | None = None) -> DeviceReplay:
    """Replay the traced events with cuDNN's :class:`Workspaces` inserted (see the module docstring). Raises
    :class:`bench.measure.allocator.AllocatorOOM` where the model at ``capacity`` cannot hold the step."""
    ws = Workspaces(tracker, benchmark, factor, capacity)
    model = replay(tracker, exclude, reset_at, settings, capacity, before=ws if ws.at else None)
    return DeviceReplay(model, ws.largest)


@dataclass
class DeviceRun:
    """A step on the device model at a GPU's memory: the one rule of "fits" (``bench run --backend predict
    --gpu-memory``, the ``--gpu-memory`` screen, ``bench fit``, the published ``oom`` figures). ``replay``: at
    the capacity where the step fits; where it does not (``oom``), without a capacity, i.e. what it needs."""

    replay: DeviceReplay
    context: int
    oom: AllocatorOOM | None = None

    @property
    def nvidia_smi(self) -> int:
        """Peak reserved plus the context; where it ran out, at least the reservation that failed, so that it
        exceeds the GPU's memory exactly when the step does not fit."""
        return max(self.replay.model.peak_reserved, self.oom.needed if self.oom else 0) + self.context


def run_device(tracker, exclude: set[int], reset_at: int, benchmark: bool, context: int,  # noqa: ANN001
               gpu_memory: int | None = None, settings: AllocatorSettings | None = None,
               factor: float | None = None) -> DeviceRun:
    """:func:`replay_device` at ``gpu_memory`` less the ``context`` (None: no capacity), freeing the cache and
    retrying as PyTorch does; where the model cannot hold the step there, the replay without a capacity and
    the :class:`AllocatorOOM`."""
    capacity = None if gpu_memory is None else max(gpu_memory - context, 0)
    try:
        return DeviceRun(replay_device(tracker, exclude, reset_at, benchmark, factor, settings, capacity), context)
    except AllocatorOOM as exc:
        if capacity == 0:  # the context alone fills the GPU: say so, not "tried to allocate ... of 0.00 MiB"
            exc = AllocatorOOM(f"out of memory: the CUDA context alone ({context / MiB:,.0f} MiB) fills the GPU memory "
                               f"({gpu_memory / MiB:,.0f} MiB)", exc.needed)
        return DeviceRun(replay_device(tracker, exclude, reset_at, benchmark, factor, settings), context, exc)
