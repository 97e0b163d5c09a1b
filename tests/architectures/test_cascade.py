"""The paper's cascade (post-concatenation), its pre-concatenation ablation, and nnU-Net's cascade."""

import pytest
import torch
from torch import nn

import architectures
from bench.measure.step import StepRunner


def test_cascade_stages_are_the_papers():
    stages = architectures.spec("cascade").train_stages()
    assert [s.name for s in stages] == ["stage1_k1.5", "stage1_k1.75", "stage2"]
    assert stages[2].overrides["stage1_models"] == 2
    s2 = stages[2].spec.build(**stages[2].overrides)
    assert s2.prior_channels == 6  # inferred: 2 models x 3 classes, one-hot side by side


def test_post_concatenation_feeds_every_decoder_level_at_its_resolution():
    spec, ov = architectures.spec("cascade").stage("stage2")
    model = spec.build(**ov).eval()
    seen = []
    hooks = [lvl.register_forward_pre_hook(lambda m, a: seen.append((a[0].shape[1], tuple(a[0].shape[2:]))))
             for lvl in model.decoder]
    x = torch.zeros(1, 1, 32, 32, 32)
    prior = torch.zeros(1, 6, 32, 32, 32)
    prior[:, 0] = 1
    with torch.no_grad():
        model(x, prior)
    for h in hooks:
        h.remove()
    # decoder level i input = upsampled + skip + 6 prior channels, at P/8, P/4, P/2, P
    assert seen == [(128 + 128 + 6, (4,) * 3), (64 + 64 + 6, (8,) * 3), (32 + 32 + 6, (16,) * 3),
                    (16 + 16 + 6, (32,) * 3)]


def test_pre_and_post_differ_only_where_they_should():
    post = dict(architectures.build("cascade").stage2.named_parameters())
    pre = dict(architectures.build("cascade_pre").stage2.named_parameters())
    assert post.keys() == pre.keys()
    differ = {k for k in post if post[k].shape != pre[k].shape}
    # pre: the first convolution takes 1 + 6 channels; post: each decoder level's first conv takes +6
    assert differ == {"encoder.0.0.0.weight"} | {f"decoder.{i}.0.0.weight" for i in range(4)}
    assert pre["encoder.0.0.0.weight"].shape[1] == 7 and post["encoder.0.0.0.weight"].shape[1] == 1
    for i in range(4):
        assert post[f"decoder.{i}.0.0.weight"].shape[1] == pre[f"decoder.{i}.0.0.weight"].shape[1] + 6


@pytest.mark.parametrize("name", ["cascade", "cascade_pre"])
def test_each_stage_trains_and_the_cascade_infers(name):
    spec = architectures.spec(name)
    for stage in spec.train_stages():
        runner = StepRunner(stage.spec, stage.overrides, (32, 32, 32), 1)
        assert torch.isfinite(runner.step()), stage.name
    out = StepRunner(spec, {}, (32, 32, 32), 1, "infer").step()
    assert out.shape == (1, 3, 32, 32, 32)


def test_nnunet_cascade_stages_and_inference():
    spec = architectures.spec("nnunet_cascade")
    small = {"n_stages": 4}  # 4 stages: divisible by 8 at stage 2, 16 with the x2 downsampling
    stages = spec.train_stages(**small)
    assert [s.name for s in stages] == ["3d_lowres", "3d_cascade_fullres"]
    lowres = StepRunner(stages[0].spec, stages[0].overrides, (64, 64, 64), 1)
    assert lowres.inputs["image"].shape[2:] == (32, 32, 32)  # stage 1 sees the patch downsampled x2
    assert torch.isfinite(lowres.step())
    full = StepRunner(stages[1].spec, stages[1].overrides, (32, 32, 32), 1)
    assert full.inputs["prior"].shape[1] == 2  # one-hot foreground classes, as nnU-Net's cascade
    first = next(m for m in full.model.modules() if isinstance(m, nn.Conv3d))
    assert first.in_channels == 3
    assert torch.isfinite(full.step())
    model = spec.build(**small).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_cascade_parameter_counts():
    # two meU-nets (backbone + aux head) and a stage-2 U-net with 6 prior channels at 4 decoder levels
    assert architectures.spec("cascade").param_count() == 7_558_383
    assert architectures.spec("cascade_pre").param_count() == 7_540_239
    assert architectures.spec("nnunet_cascade").param_count() == 62_394_526


def test_nnunet_cascade_stage1_trains_on_what_it_infers_on():
    """Stage 1's training image is the patch downsampled as the cascade's inference path downsamples it
    (trilinear, nnU-Net's choice for image data), its label by nearest."""
    from bench.measure.sample import crop_sample

    spec = architectures.spec("nnunet_cascade")
    lowres, ov = spec.stage("3d_lowres")
    layout = lowres.layout((16, 16, 16), 1, 3, lowres.hparams(**ov))
    image = torch.randn(1, 24, 24, 24)
    label = torch.randint(0, 3, (24, 24, 24))
    sample = crop_sample(layout, image, label, (12, 12, 12))
    model = spec.build(n_stages=2, base_features=4, max_features=8)
    seen = []
    model.lowres.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model.prior(image[None, :, 4:20, 4:20, 4:20])
    assert torch.allclose(seen[0][0], sample["image"])
    assert torch.equal(sample["label"], label[4:20:2, 4:20:2, 4:20:2])
    assert not torch.allclose(sample["image"], image[:, 4:20:2, 4:20:2, 4:20:2])  # not nearest
