"""What the device shows beyond the allocator: the CUDA context per GPU family and CUDA version, cuDNN's
workspaces inserted at each traced convolution, PyTorch's caps on them, and a prediction at a GPU's capacity
that runs out where the GPU would."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import architectures
from bench.measure import device
from bench.measure.allocator import AllocatorOOM
from bench.measure.predict import trace
from bench.measure.tracker import AllocationTracker, replay

MiB = 2**20


def test_context_follows_the_gpu_family_and_the_cuda_loading_mode(monkeypatch):
    monkeypatch.delenv("CUDA_MODULE_LOADING", raising=False)
    assert device.context_figure("RTX-3090").nbytes == 256 * MiB  # InvokeAI#9413
    assert device.context_figure("RTX-4090").nbytes == 426 * MiB  # an Ada GPU: unsloth-zoo#1053
    assert device.context_figure("A100-40GB", "12.4").nbytes == 287_047_680  # no family figure: pytorch#86509, lazy
    assert device.context_figure("A100-40GB", "11.3").nbytes == 666_632_192  # before lazy loading
    assert device.context_bytes("A100-40GB", "12.4", training=False) == 287_047_680
    assert device.context_bytes("A100-40GB", "12.4", kernels=100) == 287_047_680 + 100
    assert all("#" in f.source for f in device.CONTEXT)  # each figure names its issue or PR
    monkeypatch.setenv("CUDA_MODULE_LOADING", "EAGER")
    assert device.context_figure("RTX-3090", "12.4").nbytes == 666_632_192


def test_each_convolution_is_noted_with_its_largest_operand_and_its_activation_operands():
    with FakeTensorMode():
        tr = AllocationTracker()
        with tr:
            conv = torch.nn.Conv3d(2, 4, 3, padding=1)
            x = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
            conv(x).sum().backward()
    in_bytes, out_bytes, w_bytes = 2 * 8**3 * 4, 4 * 8**3 * 4, 4 * 2 * 27 * 4
    assert [c.largest for c in tr.convs] == [out_bytes, out_bytes]  # the output (and its gradient) is the largest
    # forward: input + weight + output; backward: the output's gradient + the input + the weight
    assert [c.operands for c in tr.convs] == [in_bytes + w_bytes + out_bytes] * 2
    assert all(0 < c.index <= len(tr.events) for c in tr.convs)


def test_a_convolution_under_inference_mode_is_noted_once():
    """Under inference_mode the modes see aten.conv3d / aten.conv_transpose3d, not aten.convolution."""
    with FakeTensorMode():
        tr = AllocationTracker()
        conv, up = torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ConvTranspose3d(4, 2, 2, stride=2)
        x = torch.randn(1, 2, 8, 8, 8)
        with torch.inference_mode(), tr:
            up(conv(x))
        with torch.no_grad(), tr:
            up(conv(x))
    n, w_conv, w_up = 8**3 * 4, 4 * 2 * 27 * 4, 4 * 2 * 8 * 4
    assert [c.operands for c in tr.convs] == [2 * n + w_conv + 4 * n, 4 * n + w_up + 2 * 8 * n] * 2


def test_a_one_channel_operand_is_channels_last_already_and_not_counted():
    with FakeTensorMode():
        tr = AllocationTracker()
        conv = torch.nn.Conv3d(1, 4, 3, padding=1)  # its input and its weight (4, 1, 3, 3, 3) have one channel
        with torch.inference_mode(), tr:
            conv(torch.randn(1, 1, 8, 8, 8))
    assert [c.operands for c in tr.convs] == [4 * 8**3 * 4]  # the output alone


def test_benchmark_off_an_fp32_convolution_to_64_channels_leaves_its_output_out_of_the_workspace():
    """The recorded traces (bench.measure.device's docstring): cuDNN's heuristic engine for a float32 convolution with
    64 output channels asks the input's and the weight's bytes only; at other channel counts, in fp16, transposed, or
    as the algorithm the benchmark chose, the output's too."""
    def convs(dtype: torch.dtype, c_out: int, transposed: bool = False) -> list:
        with FakeTensorMode():
            tr = AllocationTracker()
            make = torch.nn.ConvTranspose3d if transposed else torch.nn.Conv3d
            conv = make(32, c_out, 3, padding=1, dtype=dtype)
            x = torch.randn(1, 32, 8, 8, 8, dtype=dtype)
            with torch.inference_mode(), tr:
                conv(x)
            with torch.no_grad(), tr:  # aten.convolution, its transposed flag an argument
                conv(x)
        return tr.convs

    n = 8**3
    for c in convs(torch.float32, 64):
        in_w, out = 32 * n * 4 + 64 * 32 * 27 * 4, 64 * n * 4
        assert (c.operands, c.output, c.out_channels, c.transposed) == (in_w + out, out, 64, False)
        assert device.heuristic_workspace(c) == in_w
    for c in [*convs(torch.float32, 32), *convs(torch.float16, 64), *convs(torch.float32, 64, transposed=True)]:
        assert device.heuristic_workspace(c) == c.operands and c.output > 0
    assert [c.transposed for c in convs(torch.float32, 64, transposed=True)] == [True, True]
    with FakeTensorMode():
        tr = AllocationTracker()
        conv = torch.nn.Conv3d(32, 64, 3, padding=1)
        with tr:
            conv(torch.randn(1, 32, 8, 8, 8, requires_grad=True)).sum().backward()
    fwd, bwd = tr.convs
    assert device.heuristic_workspace(fwd) < fwd.operands and device.heuristic_workspace(bwd) == bwd.operands
    on, off = (device.Workspaces(tr, benchmark=b, factor=2.0) for b in (True, False))
    assert on.at[fwd.index][-1] == (fwd.operands, False) and off.at[fwd.index] == [(fwd.operands - fwd.output, False)]


@pytest.fixture(scope="module")
def unet_step():
    tr, host, _ = trace(architectures.spec("unet"), {}, (32, 32, 32), 2, "train", "fp16")
    return tr, host, tr.marks["measured"]


def test_without_workspaces_the_device_replay_is_the_allocator_replay(unet_step, monkeypatch):
    tr, host, start = unet_step
    plain = replay(tr, host, start)
    monkeypatch.setattr(device, "HEURISTIC_WORKSPACE", 0.0)
    dev = device.replay_device(tr, host, start, benchmark=False)
    assert (dev.model.peak_allocated, dev.model.peak_reserved, dev.largest_workspace) == (
        plain.peak_allocated, plain.peak_reserved, 0)


def test_benchmark_off_each_convolution_asks_its_operands_not_channels_last(unet_step):
    """As the recorded H200 traces show (bench.measure.device's docstring): input + output in forward."""
    tr, host, start = unet_step
    plain = replay(tr, host, start)
    dev = device.replay_device(tr, host, start, benchmark=False)
    assert device.HEURISTIC_WORKSPACE == 1.0
    assert dev.largest_workspace == max(c.operands for c in tr.convs)
    assert plain.peak_allocated < dev.model.peak_allocated <= plain.peak_allocated + dev.largest_workspace


def test_benchmark_workspaces_add_to_allocated_and_those_over_the_cap_are_left_out(unet_step, monkeypatch):
    tr, host, start = unet_step
    plain = replay(tr, host, start)
    on = device.replay_device(tr, host, start, benchmark=True, factor=2.0)
    sizes = sorted({2 * c.largest for c in tr.convs})
    assert on.largest_workspace == sizes[-1]
    # a convolution of a kind already benchmarked (the measured step's) runs the chosen algorithm: the
    # workspace of benchmark off, whatever the candidates' factor
    warm_up = {c.key for c in tr.convs if c.index < start}
    assert all(c.key in warm_up for c in tr.convs if c.index >= start)  # the measured step's were all tried before
    huge = device.replay_device(tr, host, start, benchmark=True, factor=1e6)
    off = device.replay_device(tr, host, start, benchmark=False)
    assert huge.largest_workspace > 1e6 * MiB  # tried in the warm-up step ...
    # ... but not in the measured step (only the blocks' rounding remainders differ: the cache holds other segments)
    assert huge.model.peak_allocated == pytest.approx(off.model.peak_allocated, rel=0.01)
    assert on.model.peak_allocated > plain.peak_allocated
    assert on.model.peak_reserved >= plain.peak_reserved
    cap_mib = sizes[len(sizes) // 2] // MiB + 1
    monkeypatch.setenv("CUDNN_CONV_WSCAP_DBG", str(cap_mib))
    capped = device.replay_device(tr, host, start, benchmark=True, factor=2.0)
    assert capped.largest_workspace == max(s for s in sizes if s <= cap_mib * MiB)


def test_the_benchmark_empties_the_cache_after_each_trial_and_then_runs_the_chosen_algorithm(unet_step):
    """As the H200's traces show: each benchmarked convolution allocates its candidates' workspace once, frees
    it, and PyTorch empties the allocator's cache (``segment_free``), so the candidates' segments are not held
    into the steps after; the convolution then runs the chosen algorithm with its own workspace."""
    tr, host, start = unet_step
    off = device.replay_device(tr, host, start, benchmark=False)
    huge = device.replay_device(tr, host, start, benchmark=True, factor=1000.0)
    assert huge.largest_workspace >= 1000 * max(c.largest for c in tr.convs if c.index < start)
    # the measured step starts from a cache without the candidates' segments: its peak reserved is benchmark off's
    assert huge.model.peak_reserved == pytest.approx(off.model.peak_reserved, rel=0.05)
    ws = device.Workspaces(tr, benchmark=True, factor=2.0)
    first = next(c for c in tr.convs)
    assert ws.at[first.index] == [(int(2.0 * first.largest), True), (int(first.operands), False)]
    model = replay(tr, host, 0, before=None)  # (a model holding cached segments)
    cached = model.reserved
    ws(first.index, model)
    assert model.reserved < cached  # the trial emptied the cache


def test_at_a_capacity_workspaces_that_do_not_fit_are_left_out_and_a_step_that_does_not_fit_runs_out(unet_step,
                                                                                                     monkeypatch):
    tr, host, start = unet_step
    monkeypatch.setattr(device, "HEURISTIC_WORKSPACE", 0.0)  # the benchmark's candidates alone
    plain = replay(tr, host, start)
    capacity = plain.peak_reserved + 8 * MiB
    fits = device.replay_device(tr, host, start, benchmark=True, factor=2.0, capacity=capacity)
    assert 0 < fits.largest_workspace and fits.model.peak_reserved <= capacity
    none = device.replay_device(tr, host, start, benchmark=True, factor=1000.0, capacity=capacity)
    assert none.largest_workspace == 0 and none.model.peak_allocated == plain.peak_allocated
    with pytest.raises(AllocatorOOM, match="tried to allocate"):
        device.replay_device(tr, host, start, benchmark=False, capacity=plain.peak_allocated // 2)


def test_at_a_gpu_memory_the_nvidia_smi_figure_exceeds_it_exactly_when_the_step_runs_out(unet_step):
    """run_device, the one rule of "fits" (--backend predict --gpu-memory, the screen, bench fit): over GPU
    memories around the step's need, out of memory <=> its nvidia-smi figure > that memory; where it fits, the
    free-and-retry can hold the step below the figure without a capacity (never above it)."""
    tr, host, start = unet_step
    context = 100 * MiB
    free = device.run_device(tr, host, start, True, context, factor=2.0)
    assert free.oom is None and free.nvidia_smi == free.replay.model.peak_reserved + context
    outcomes = set()
    for gpu_memory in range(context, free.nvidia_smi + 4 * MiB, MiB):
        run = device.run_device(tr, host, start, True, context, gpu_memory, factor=2.0)
        assert (run.oom is not None) == (run.nvidia_smi > gpu_memory), gpu_memory
        assert run.nvidia_smi <= free.nvidia_smi if run.oom is None else run.nvidia_smi >= free.nvidia_smi
        outcomes.add(run.oom is None)
    assert outcomes == {True, False}  # the range crosses the edge
    # a GPU the context alone fills: the message says that, not an allocation out of 0 MiB
    tiny = device.run_device(tr, host, start, True, context, context // 2, factor=2.0)
    assert "the CUDA context alone (100 MiB) fills the GPU memory (50 MiB)" in str(tiny.oom)
    assert tiny.nvidia_smi > context // 2
