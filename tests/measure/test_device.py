"""What the device shows beyond the allocator: the CUDA context per GPU family and CUDA version, cuDNN's
workspaces inserted at each traced convolution, PyTorch's caps on them, and a prediction at a GPU's capacity
that runs out where the GPU would."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import architectures
from bench.measure import device
from bench.measure.allocator import AllocatorOOM
from bench.measure.predict import replay, trace
from bench.measure.tracker import AllocationTracker

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


def test_each_convolution_is_noted_with_its_largest_operand():
    with FakeTensorMode():
        tr = AllocationTracker()
        with tr:
            conv = torch.nn.Conv3d(2, 4, 3, padding=1)
            x = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
            conv(x).sum().backward()
    out_bytes = 4 * 8**3 * 4  # the output (and its gradient) is the largest operand
    assert [n for _, n in tr.convs] == [out_bytes, out_bytes]  # forward, backward
    assert all(0 < i <= len(tr.events) for i, _ in tr.convs)


@pytest.fixture(scope="module")
def unet_step():
    tr, host, _ = trace(architectures.spec("unet"), {}, (32, 32, 32), 2, "train", "fp16")
    return tr, host, tr.marks["measured"]


def test_without_workspaces_the_device_replay_is_the_allocator_replay(unet_step):
    tr, host, start = unet_step
    plain = replay(tr, host, start)
    dev = device.replay_device(tr, host, start, benchmark=False)
    assert device.WORKSPACE_FACTOR[False] == 0
    assert (dev.model.peak_allocated, dev.model.peak_reserved, dev.largest_workspace) == (
        plain.peak_allocated, plain.peak_reserved, 0)


def test_benchmark_workspaces_add_to_allocated_and_those_over_the_cap_are_left_out(unet_step, monkeypatch):
    tr, host, start = unet_step
    plain = replay(tr, host, start)
    on = device.replay_device(tr, host, start, benchmark=True, factor=2.0)
    sizes = sorted({2 * n for _, n in tr.convs})
    assert on.largest_workspace == sizes[-1]
    assert on.model.peak_allocated > plain.peak_allocated
    assert on.model.peak_reserved >= plain.peak_reserved
    cap_mib = sizes[len(sizes) // 2] // MiB + 1
    monkeypatch.setenv("CUDNN_CONV_WSCAP_DBG", str(cap_mib))
    capped = device.replay_device(tr, host, start, benchmark=True, factor=2.0)
    assert capped.largest_workspace == max(s for s in sizes if s <= cap_mib * MiB)


def test_at_a_capacity_workspaces_that_do_not_fit_are_left_out_and_a_step_that_does_not_fit_runs_out(unet_step):
    tr, host, start = unet_step
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
