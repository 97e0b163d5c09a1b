"""MONAI's networks by name (the ``monai`` extra, installed by CI's ``.[dev]``): predicted, measured on
the CPU in agreement with the prediction, built for real where their constructor computes
(SwinUNETR's ``.item()``), never importing torchvision; MONAI's sliding window as a Dice run's inferer."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import architectures
from architectures import monai_nets
from bench.measure import cpu
from bench.measure.predict import predict
from bench.measure.step import StepRunner
from bench.options import Inferer
from bench.train.data.datasets import Volume
from bench.train.evaluate import probabilities
from bench.train.trainer import TrainConfig

if not monai_nets.available():
    pytest.skip("the monai extra is not installed: pip install -e '.[monai]'", allow_module_level=True)

CASES = [  # (name, size, overrides): small, so that a real CPU step takes seconds
    pytest.param("monai:SwinUNETR", 64, {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
                 marks=pytest.mark.slow),
    ("monai:SegResNet", 16, {"init_filters": 8, "blocks_down": (1, 1, 1, 1)}),
]


@pytest.mark.parametrize(("name", "edge", "ov"), CASES)
def test_monai_networks_are_predicted_as_a_cpu_step_measures_them(name, edge, ov):
    spec = architectures.spec(name)
    size = (edge,) * 3
    spec.check_size(size, **ov)
    real, _ = cpu.measure(lambda: StepRunner(spec, ov, size, 1, "train"), repeats=0, timed=False)
    pred = predict(spec, ov, size, 1, "train", with_memtracker=False, with_flops=False)
    assert pred["pred_peak_live_bytes"] == pytest.approx(real["cpu_live_peak_bytes"], rel=0.01)
    params = sum(p.numel() for p in spec.build(**ov).parameters())
    assert pred["pred_parameter_bytes"] >= 4 * params  # fp32 weights (and the network's buffers)


def test_a_network_that_computes_while_built_is_built_for_real_and_given_fake_parameters():
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensor, FakeTensorMode

    spec = architectures.spec("monai:SwinUNETR")
    ov = CASES[0].values[2]
    with FakeTensorMode(), pytest.raises(DataDependentOutputException):
        spec.build(**ov)  # SwinUNETR's constructor calls .item()
    with FakeTensorMode():
        model = spec.build_model(**ov)
    assert all(isinstance(p, FakeTensor) for p in model.parameters())
    assert spec.param_count(**ov) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "ov", "divisor"), [
    ("monai:SwinUNETR", {}, 32), ("monai:SwinUNETR", {"patch_size": 1}, 1), ("monai:SegResNet", {}, 8),
    ("monai:SegResNet", {"blocks_down": (1, 2, 2, 2, 4), "blocks_up": (1, 1, 1, 1)}, 16),
    ("monai:DynUNet", {}, 16), ("monai:DynUNet", {"strides": (1, 2, 2)}, 4), ("monai:AttentionUnet", {}, 16),
    ("monai:BasicUNet", {}, 16), ("monai:UNETR", {}, 16),
])
def test_each_network_declares_its_divisibility_from_its_arguments(name, ov, divisor):
    assert architectures.spec(name).divisor_for(**ov) == divisor


def test_constructor_arguments_are_the_overrides_and_bad_sizes_say_why():
    swin = architectures.spec("monai:SwinUNETR")
    assert {"feature_size", "depths", "use_checkpoint"} <= set(swin.parameters())
    assert not {"in_channels", "out_channels", "spatial_dims"} & set(swin.parameters())
    with pytest.raises(ValueError, match="multiple of 32 and at least 64"):
        swin.check_size((48, 48, 48))
    with pytest.raises(ValueError, match=r"UNETR's input must be its img_size \(96x96x96\)"):
        architectures.spec("monai:UNETR").check_size((64, 64, 64))
    with pytest.raises(ValueError, match="unknown MONAI network 'SwinUnet'; known: SwinUNETR"):
        architectures.spec("monai:SwinUnet")


def test_monai_never_imports_torchvision():
    code = ("import sys, architectures; architectures.spec('monai:SwinUNETR').param_count(); "
            "from architectures.monai_nets import import_monai; import_monai().inferers.sliding_window_inference; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_monai_sliding_window_agrees_with_segmems_for_a_per_voxel_network():
    torch.manual_seed(0)
    net = nn.Conv3d(1, 3, 1)  # per-voxel: any tiling gives the same probabilities
    vol = Volume("v", np.random.default_rng(0).normal(size=(1, 20, 24, 28)).astype(np.float32),
                 np.zeros((20, 24, 28), np.uint8))
    got = {}
    for inferer in Inferer:
        cfg = TrainConfig(patch=(16, 16, 16), batch=1, iterations=1, inferer=inferer)
        got[inferer] = probabilities(net, vol, (16, 16, 16), 3, cfg, torch.device("cpu"))
    assert got[Inferer.MONAI].shape == (3, 20, 24, 28)
    torch.testing.assert_close(got[Inferer.MONAI], got[Inferer.SEGMEM], rtol=1e-4, atol=1e-5)
