"""meU-net as the paper built it: two inputs, no-grad first level, half-resolution expanded branch."""

import torch
from torch import nn

import architectures
from architectures.meunet import layout, patch_shapes
from bench.measure.predict import predict
from bench.measure.sample import synthetic_batch
from bench.measure.step import StepRunner
from bench.train.losses import CEDiceLoss

SPEC = architectures.spec("meunet")


def _batch(size=32, k=1.5, seed=0):
    hp = SPEC.hparams(expansion=k)
    return synthetic_batch(layout((size,) * 3, 1, 3, hp), 2, 3, seed=seed)


def test_sample_layout_is_the_papers():
    hp = SPEC.hparams()
    shapes = {t.name: t.shape for t in layout((160,) * 3, 1, 3, hp)}
    assert shapes == {"image": (160,) * 3, "label": (160,) * 3, "image_expanded": (240,) * 3,
                      "label_expanded": (120,) * 3}
    # the paper's Table 1 names the expanded patch: 240 with k=1.5 is a 160 standard patch
    assert patch_shapes((240,) * 3, SPEC.hparams(size_refers_to="expanded")) == ((160,) * 3, (240,) * 3)
    assert patch_shapes((160,) * 3, SPEC.hparams(expansion=1.75))[1] == (280,) * 3


def test_training_step_and_inference_through_the_interface():
    runner = StepRunner(SPEC, {"checkpointing": True}, (32, 32, 32), 2, precision="fp32")
    assert torch.isfinite(runner.step())
    out = SPEC.infer(runner.model.eval(), torch.zeros(1, 1, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)


def _first_level_grads(model, batch, with_expanded: bool):
    model.zero_grad()
    crit = CEDiceLoss()
    std, exp = model.forward_train(batch["image"], batch["image_expanded"])
    loss = crit(std, batch["label"]) + (crit(exp, batch["label_expanded"]) if with_expanded else 0)
    loss.backward()
    return [p.grad.clone() for p in model.backbone.encoder[0].parameters()]


def test_first_level_gets_no_gradient_from_the_expanded_branch():
    torch.manual_seed(0)
    model = architectures.build("meunet", checkpointing=False)
    batch = _batch()
    both = _first_level_grads(model, batch, True)
    std_only = _first_level_grads(model, batch, False)
    for a, b in zip(both, std_only):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # while deeper levels do get gradient from it
    model.zero_grad()
    model.aux_head.zero_grad()
    exp = model.forward_expanded(batch["image_expanded"])
    CEDiceLoss()(exp, batch["label_expanded"]).backward()
    assert all(p.grad is None for p in model.backbone.encoder[0].parameters())
    assert model.backbone.encoder[1][0][0].weight.grad.abs().sum() > 0


def test_expanded_branch_never_makes_a_full_resolution_decoder_activation():
    model = architectures.build("meunet", checkpointing=False)
    seen: list[tuple[str, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: seen.append((n, tuple(o.shape[2:]))))
             for name, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    model.forward_expanded(torch.zeros(1, 1, 48, 48, 48))
    for h in hooks:
        h.remove()
    decoder = [(n, s) for n, s in seen if n.startswith("backbone.decoder")]
    assert decoder and max(s[0] for _, s in decoder) == 24  # P/2 of the expanded patch, never 48
    assert not any(n.startswith("backbone.decoder.3") or n == "backbone.head" for n, _ in seen)
    assert ("aux_head", (24, 24, 24)) in seen


def test_checkpointing_changes_memory_not_the_loss():
    losses, peaks = [], []
    for ckpt in (True, False):
        runner = StepRunner(SPEC, {"checkpointing": ckpt}, (32, 32, 32), 1, precision="fp32", seed=1)
        runner.model.eval()  # BatchNorm in eval: a checkpointed BN would update its running stats twice
        losses.append(SPEC.loss(runner.model, runner.inputs, runner.criterion).item())
        peaks.append(predict(SPEC, {"checkpointing": ckpt}, (64, 64, 64), 1, with_memtracker=False, with_flops=False)
                     ["pred_peak_allocated_bytes"])
    assert losses[0] == losses[1]
    assert peaks[0] < 0.8 * peaks[1]
