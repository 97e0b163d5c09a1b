"""The CUDA autocast emulation (bench.measure.autocast) against torch's own lists: ATen's ``autocast_mode.h``,
which the installed wheel ships, says for each op whether CUDA autocast runs it in the lower precision, in
float32, or in the dtype it is given. Each op the suite's networks and losses call is run through the
emulation and its output dtype compared with what that header says (so a torch that moves an op between
lists fails here)."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.measure.autocast import EmulatedCudaAutocast

HEADER = Path(torch.__file__).parent / "include" / "ATen" / "autocast_mode.h"


def header_list(macro: str) -> set[str]:
    """The op names of ``#define MACRO(_) _(name) _(name, overload) ...`` in the header."""
    text = HEADER.read_text()
    start = text.index(f"#define {macro}(_)")
    body = []
    for line in text[start:].splitlines()[1:]:
        body.append(line)
        if not line.rstrip().endswith("\\"):
            break
    return set(re.findall(r"_\((\w+)", "\n".join(body)))


X = (2, 4, 8, 8, 8)
# (the ATen op as the header names it, how the suite calls it)
CALLS = {
    "conv3d": lambda x: F.conv3d(x, torch.randn(4, 4, 3, 3, 3, dtype=x.dtype), padding=1),
    "conv_transpose3d": lambda x: F.conv_transpose3d(x, torch.randn(4, 2, 2, 2, 2, dtype=x.dtype), stride=2),
    "upsample_nearest3d": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "upsample_trilinear3d": lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"),
    "group_norm": lambda x: F.group_norm(x, 2),
    "softmax": lambda x: F.softmax(x, dim=1),
    "log_softmax": lambda x: F.log_softmax(x, dim=1),
    "batch_norm": lambda x: F.batch_norm(x, None, None, training=True),
    "instance_norm": lambda x: F.instance_norm(x),
    "max_pool3d": lambda x: F.max_pool3d(x, 2),
    "leaky_relu": lambda x: F.leaky_relu(x),
}


@pytest.mark.skipif(not HEADER.exists(), reason="this torch wheel ships no ATen headers")
@pytest.mark.parametrize("op", sorted(CALLS))
def test_each_op_runs_in_the_dtype_torchs_cuda_autocast_lists_give_it(op):
    lower = header_list("AT_FORALL_LOWER_PRECISION_FP")
    fp32 = header_list("AT_FORALL_FP32") | header_list("AT_FORALL_FP32_SET_OPT_DTYPE")  # softmax: float32 unless told
    assert {"conv3d", "upsample_nearest3d"} <= lower | fp32  # the header was read
    expected = torch.float16 if op in lower else torch.float32 if op in fp32 else None
    mode = EmulatedCudaAutocast(torch.float16)
    for given in (torch.float32, torch.float16):
        x = torch.randn(X).to(given)
        with mode, mode.region():
            y = CALLS[op](x)
        assert y.dtype == (expected or given), f"{op} on {given}: {y.dtype}"


def test_cat_promotes_to_its_widest_input_as_on_cuda():
    mode = EmulatedCudaAutocast(torch.float16)
    with mode, mode.region():
        y = torch.cat([torch.randn(X), torch.randn(X).half()], dim=1)
    assert y.dtype == torch.float32 and y.shape[1] == 8


def test_weight_casts_are_cached_in_a_training_forward_and_not_under_inference_mode():
    w = torch.nn.Parameter(torch.randn(4, 4, 3, 3, 3))
    x = torch.randn(X)
    mode = EmulatedCudaAutocast(torch.float16)
    with mode, mode.region():
        F.conv3d(x, w, padding=1)
        assert len(mode.cache) == 1  # the float16 copy lives until the region ends
    with torch.inference_mode(), mode, mode.region():
        F.conv3d(x, w, padding=1)
        assert not mode.cache  # freed after the convolution, as the recorded traces show
