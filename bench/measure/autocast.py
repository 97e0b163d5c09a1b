"""CUDA autocast, emulated for tracing on a machine without a GPU.

On a GPU-less machine ``torch.autocast("cuda")`` silently disables itself, and CPU autocast follows
other rules (it runs pooling and some losses in float32, where CUDA keeps float16), so neither gives
CUDA's memory. :class:`EmulatedCudaAutocast` is a ``TorchFunctionMode`` above autograd that applies
CUDA's rules to the ops these networks use (the lists: ``AT_FORALL_LOWER_PRECISION_FP`` and
``AT_FORALL_FP32`` in ATen's ``autocast_mode.h``, which torch's wheel ships under ``torch/include``):

- ops on CUDA's lower-precision list (convolutions, transposed convolutions, PReLU, linear and the
  matmul family) get their floating inputs cast to the autocast dtype;
- ops on CUDA's float32 list that the suite's losses, norms and upsampling use get them cast to float32
  (``F.interpolate``: every ``upsample_*`` op is on that list; a recorded H200 trace shows the cast, a
  float32 copy of the input, and the float32 output);
- ``cat``/``stack`` promote to the widest input type;
- casts of leaf tensors that require grad (weights) are cached until the autocast region ends, as
  CUDA autocast's weight-cast cache does; a cast inside backward (checkpoint recomputation, which on
  CUDA re-enters autocast for each recomputed region) is not cached, nor one under ``inference_mode``
  (recorded H200 traces of nnU-Net's and V-Net's inference: each weight's float16 copy is freed right
  after its convolution).

Everything else runs in the dtype it is given, as on CUDA. Unmodelled: cuDNN/cuBLAS workspaces and
cuDNN's own algorithm-dependent buffers (they are not tensors), and ops outside the lists below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LOWER = {
    torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
    torch.conv_transpose3d, torch.convolution, torch.prelu, F.prelu, F.linear, torch.matmul, torch.mm,
    torch.bmm, torch.addmm, torch.baddbmm, torch.addbmm, torch.einsum, torch.Tensor.matmul,
    torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.bmm,
}
FP32 = {
    torch.exp, torch.log, torch.log1p, torch.pow, torch.Tensor.pow, torch.Tensor.exp, torch.Tensor.log,
    torch.rsqrt, torch.reciprocal, F.layer_norm, torch.layer_norm, F.group_norm, torch.group_norm,
    F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.kl_div, F.binary_cross_entropy_with_logits,
    torch.logsumexp, torch.cdist, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
    torch.Tensor.softmax, torch.Tensor.log_softmax, F.cross_entropy, F.interpolate,
}
BACKWARD = {torch.Tensor.backward, torch.autograd.backward}


def _backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None, **_: object) -> None:
    """``Tensor.backward`` / ``torch.autograd.backward`` without the ``__torch_function__`` check."""
    from torch.autograd.graph import _engine_run_backward

    outs = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    if grad_tensors is None:
        grads = tuple(torch.ones_like(t) for t in outs)
    else:
        grads = (grad_tensors,) if isinstance(grad_tensors, torch.Tensor) else tuple(grad_tensors)
    _engine_run_backward(outs, grads, bool(retain_graph or create_graph), create_graph, tuple(inputs or ()),
                         allow_unreachable=True, accumulate_grad=True)
PROMOTE = {torch.cat, torch.stack, torch.concat, torch.concatenate}


def _is_float(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


class EmulatedCudaAutocast(TorchFunctionMode):
    """Apply CUDA autocast's casting rules while ``active``; see the module docstring.

    Keep the mode entered for a whole step and switch ``active`` around the forward (use
    :meth:`region`): checkpoint recomputation during backward is then cast as well.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.forward_active = False
        self.cache: dict[int, torch.Tensor] = {}

    def region(self) -> _Region:
        return _Region(self)

    def _active(self) -> bool:
        # inside backward (a graph task) the only Python-level ops are checkpoint recomputations
        return self.forward_active or torch._C._current_graph_task_id() != -1

    def _cast(self, x: object, dtype: torch.dtype) -> object:
        if not _is_float(x) or x.dtype == dtype:
            return x
        cacheable = (self.forward_active and x.is_leaf and x.requires_grad and dtype == self.dtype
                     and not torch.is_inference_mode_enabled())
        if cacheable and id(x) in self.cache:
            return self.cache[id(x)]
        y = x.to(dtype)
        if cacheable:
            self.cache[id(x)] = y
        return y

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in BACKWARD:
            # A mode is popped while its handler runs, so checkpoint recomputation inside backward
            # would not see it: re-enter it and call the engine directly (not overridable).
            with self:
                return _backward(*args, **kwargs)
        if self._active():
            if func in LOWER:
                args = tuple(self._cast(a, self.dtype) for a in args)
                kwargs = {k: self._cast(v, self.dtype) for k, v in kwargs.items()}
            elif func in FP32:
                args = tuple(self._cast(a, torch.float32) for a in args)
            elif func in PROMOTE and args and isinstance(args[0], list | tuple):
                ts = args[0]
                floats = [t for t in ts if _is_float(t)]
                if floats:
                    widest = max((t.dtype for t in floats), key=lambda d: torch.finfo(d).bits)
                    args = ([self._cast(t, widest) for t in ts], *args[1:])
        return func(*args, **kwargs)


class _Region:
    def __init__(self, mode: EmulatedCudaAutocast) -> None:
        self.mode = mode

    def __enter__(self) -> None:
        self.mode.forward_active = True

    def __exit__(self, *exc: object) -> None:
        self.mode.forward_active = False
        self.mode.cache.clear()
