"""unet3d, vnet, nnunet, nnunet_resenc: shapes, pinned parameter counts, a training step, determinism."""

import pytest
import torch
from torch import nn

import architectures
from architectures.nnunet import plan_topology
from architectures.unet3d import paper_parameter_count
from bench.measure.step import StepRunner

PINNED = {  # 1 input channel, 3 classes, sum of model.parameters()
    "unet": 2_512_515,
    "meunet": 2_512_566,
    "unet3d": 19_072_899,
    "vnet": 65_175_347,
    "nnunet": 31_196_399,
    "nnunet_resenc": 102_350_575,
}
SMALL = {"unet3d": 16, "vnet": 16, "nnunet": 64, "nnunet_resenc": 64}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_parameter_count_pinned(name):
    assert architectures.spec(name).param_count() == PINNED[name]


def test_unet3d_matches_cicek_count():
    model = architectures.build("unet3d", in_channels=3, num_classes=3)
    assert paper_parameter_count(model) == 19_069_955  # the paper's figure: no BN, up-convs without bias
    assert sum(p.numel() for p in model.parameters()) == 19_069_955 + 4_672


def test_unet3d_channel_plan():
    m = architectures.build("unet3d")
    outs = [[c.out_channels for c in lvl.modules() if isinstance(c, nn.Conv3d)] for lvl in m.down]
    assert outs == [[32, 64], [64, 128], [128, 256], [256, 512]]
    assert [u.out_channels for u in m.upconv] == [512, 256, 128]  # up-convolutions keep the channels
    assert [u.kernel_size for u in m.upconv] == [(2, 2, 2)] * 3


def test_unet3d_valid_convolutions_shrink_like_the_paper():
    m = architectures.build("unet3d", in_channels=3, padding="valid").eval()
    with torch.device("meta"):
        pass
    with torch.no_grad():
        out = m(torch.zeros(1, 3, 132, 132, 116))
    assert out.shape == (1, 3, 44, 44, 28)


def test_vnet_follows_the_paper():
    m = architectures.build("vnet")
    convs = [c for c in m.modules() if type(c) is nn.Conv3d]
    five = [c for c in convs if c.kernel_size == (5, 5, 5)]
    assert len(five) == 1 + 2 + 3 + 3 + 3 + 3 + 3 + 2 + 1  # 1, 2, 3, 3, bottom 3 / up 3, 3, 2, 1
    downs = [c for c in convs if c.stride == (2, 2, 2)]
    assert [c.out_channels for c in downs] == [32, 64, 128, 256]
    assert all(isinstance(x, nn.PReLU) for x in m.modules() if isinstance(x, nn.PReLU | nn.ReLU))
    assert not any(isinstance(x, nn.BatchNorm3d) for x in m.modules())
    assert any(isinstance(x, nn.BatchNorm3d) for x in architectures.build("vnet", norm="batch").modules())


def test_nnunet_defaults_match_the_planner():
    kernels, strides, patch = plan_topology((128, 128, 128), (1.0, 1.0, 1.0))
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 5 and kernels == [[3, 3, 3]] * 6 and patch == [128, 128, 128]
    m = architectures.build("nnunet")
    feats = [s[-1].output_channels for s in m.encoder.stages] if hasattr(m.encoder.stages[0][-1], "output_channels") \
        else None
    convs = [c for c in m.encoder.modules() if isinstance(c, nn.Conv3d)]
    assert sorted({c.out_channels for c in convs}) == [32, 64, 128, 256, 320]
    assert len(convs) == 12 and all(c.bias is not None for c in convs)
    assert any(isinstance(x, nn.InstanceNorm3d) for x in m.modules())
    assert feats is None or feats[-1] == 320
    # the planner at another patch gives another topology
    planned = architectures.build("nnunet", planned_for=(64, 64, 64))
    assert len([c for c in planned.encoder.modules() if isinstance(c, nn.Conv3d)]) == 10


def test_nnunet_deep_supervision_option():
    m = architectures.build("nnunet", deep_supervision=True, n_stages=4)
    with torch.no_grad():
        out = m(torch.zeros(1, 1, 32, 32, 32))
    assert [o.shape[-1] for o in out] == [32, 16, 8]


#: measured over 20 s of CPU time each in this test (nnU-Net's 6-stage networks at 64^3)
HEAVY = {"nnunet", "nnunet_resenc"}


def _marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


@pytest.mark.parametrize("name", _marked(sorted(SMALL)))
def test_output_shape_and_training_step(name):
    s = SMALL[name]
    spec = architectures.spec(name)
    runner = StepRunner(spec, {}, (s, s, s), 1, "train")
    weights = [p for p in runner.model.parameters() if p.dim() >= 2]
    before = [p.detach().clone() for p in weights]
    # two steps: ResEnc initialises each residual block's last norm to zero, so its convolutions
    # only receive gradient once that norm has moved
    loss = runner.step() + runner.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(a, p) for a, p in zip(before, weights))
    # the optimizer step moved the convolution weights (nnU-Net's unused deep-supervision heads stay)
    assert changed >= 0.8 * len(weights)
    infer = StepRunner(spec, {}, (s, s, s), 1, "infer")
    assert infer.step().shape == (1, 3, s, s, s)


@pytest.mark.parametrize("name", _marked(["unet3d", "vnet", "nnunet"]))
def test_deterministic_under_a_seed(name):
    s = SMALL[name]
    a = StepRunner(architectures.spec(name), {}, (s, s, s), 1, seed=3).step()
    b = StepRunner(architectures.spec(name), {}, (s, s, s), 1, seed=3).step()
    c = StepRunner(architectures.spec(name), {}, (s, s, s), 1, seed=4).step()
    assert torch.equal(a, b) and not torch.equal(a, c)
