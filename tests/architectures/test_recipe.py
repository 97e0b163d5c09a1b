"""Training recipes: nnU-Net's archs step as nnU-Net trains (SGD, nnunetv2's loss, clipping), the paper's as
the paper, and ``--set recipe.KEY`` changes the record and the key while the default keeps old keys."""

import csv
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import architectures
from architectures.recipe import PAPER, NNUNetLoss, Recipe, deep_supervision_weights
from bench.cli import app
from bench.measure.predict import predict
from bench.measure.step import StepRunner
from bench.sweep import worker
from bench.sweep.config import RunConfig
from bench.sweep.expand import expand

BASELINE = Path(__file__).parents[2] / "reports" / "baseline" / "memory.csv"
SMALL = {"n_stages": 4}  # nnU-Net's network with 4 stages: 32^3 patches, a fast CPU step


def test_nnunet_step_uses_sgd_nesterov_and_nnunetv2s_deep_supervised_loss():
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    runner = StepRunner(architectures.spec("nnunet"), SMALL, (32, 32, 32), 1)
    group = runner.optimizer.param_groups[0]
    assert isinstance(runner.optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (1e-2, 0.99, True, 3e-5)
    runner.step()
    wrapper = runner.criterion.wrapper
    assert isinstance(wrapper, DeepSupervisionWrapper) and isinstance(wrapper.loss, DC_and_CE_loss)
    assert isinstance(wrapper.loss.dc, MemoryEfficientSoftDiceLoss)
    assert (wrapper.loss.dc.batch_dice, wrapper.loss.dc.do_bg, wrapper.loss.dc.smooth) == (True, False, 1e-5)
    assert len(wrapper.weight_factors) == 3  # the network's 3 decoder outputs: deep supervision is on in training
    # one momentum buffer per parameter after a step (Adam would hold two moments)
    assert all(set(s) == {"momentum_buffer"} for s in runner.optimizer.state.values())


def test_deep_supervision_weights_are_the_ones_nnunetv2s_trainer_builds():
    """nnUNetTrainer._build_loss itself, run on a stand-in trainer for 4 outputs (5 stages)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    fake = SimpleNamespace(label_manager=SimpleNamespace(has_regions=False, ignore_label=None),
                           configuration_manager=SimpleNamespace(batch_dice=True, pool_op_kernel_sizes=[[1] * 3] + [[2] * 3] * 4),
                           is_ddp=False, enable_deep_supervision=True, _do_i_compile=lambda: False)
    fake._get_deep_supervision_scales = lambda: nnUNetTrainer._get_deep_supervision_scales(fake)
    theirs = nnUNetTrainer._build_loss(fake)
    assert list(theirs.weight_factors) == pytest.approx(deep_supervision_weights(4))
    ours = NNUNetLoss(batch_dice=True)
    logits = [torch.randn(2, 3, 16 // 2**i, 16 // 2**i, 16 // 2**i) for i in range(4)]
    labels = [torch.randint(0, 3, (2,) + x.shape[2:]) for x in logits]
    assert ours.supervise(logits, labels) == pytest.approx(theirs(logits, [y[:, None] for y in labels]).item())


def _grad_norms(runner: StepRunner, boost: float) -> list[float]:
    """The total gradient norm the optimizer steps with, gradients boosted by ``boost`` in backward."""
    for p in runner.model.parameters():
        p.register_hook(lambda g: g * boost)
    seen, step = [], runner.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for g in runner.optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.nn.utils.get_total_norm(grads)))
        return step(*args, **kwargs)

    runner.optimizer.step = recording_step
    runner.step()
    return seen


def test_gradients_above_the_recipes_norm_are_clipped():
    unet = architectures.spec("unet")
    unclipped = _grad_norms(StepRunner(unet, {}, (32, 32, 32), 1), 1e4)
    clipped = _grad_norms(StepRunner(unet, {}, (32, 32, 32), 1, recipe=PAPER.with_overrides({"clip": 12})), 1e4)
    assert unclipped[0] > 12
    assert clipped[0] == pytest.approx(12, rel=1e-4)
    assert architectures.spec("nnunet").recipe.clip == 12


def test_recipes_declared_by_the_specs():
    assert architectures.spec("unet").recipe == PAPER and architectures.spec("meunet").recipe == PAPER
    for name in ("nnunet", "nnunet_resenc", "nnunet_cascade"):
        r = architectures.spec(name).recipe
        assert (r.optimizer, r.loss, r.deep_supervision, r.precision, r.cudnn_benchmark) == ("sgd", "dc_ce", True,
                                                                                             "fp16", True)
    lowres, fullres = architectures.spec("nnunet_cascade").train_stages()
    assert (lowres.spec.recipe.batch_dice, fullres.spec.recipe.batch_dice) == (False, True)
    assert PAPER.describe() == "adam(lr=0.0009)+ce_dice"
    assert architectures.spec("nnunet").recipe.describe() == \
        "sgd(lr=0.01,m=0.99,nesterov,wd=3e-05)+dc_ce(batch_dice)+ds+clip12+cudnn_bench"


def test_prediction_follows_the_recipe_under_fp16():
    """nnU-Net's fp16 step (scaler, unscale_, clipping, nnunetv2's loss) traces on fake tensors; SGD keeps one
    fp32 buffer per parameter where Adam keeps two."""
    spec = architectures.spec("nnunet")
    n = spec.param_count(**SMALL)
    sgd = predict(spec, SMALL, (32, 32, 32), 1, "train", "fp16", with_memtracker=False, with_flops=False)
    adam_spec = dataclasses.replace(spec, recipe=spec.recipe.with_overrides({"optimizer": "adam"}))
    adam = predict(adam_spec, SMALL, (32, 32, 32), 1, "train", "fp16", with_memtracker=False, with_flops=False)
    # every parameter with a gradient: all but the lowest-resolution head (3 classes x (128 features + bias)),
    # whose output nnU-Net's loss weights 0
    assert sgd["pred_optimizer_bytes"] == 4 * (n - 3 * (128 + 1))
    assert adam["pred_optimizer_bytes"] == 2 * sgd["pred_optimizer_bytes"]


def _baseline_keys() -> set[str]:
    with BASELINE.open() as f:
        return {row["key"] for row in csv.DictReader(f)}


def test_default_recipe_keeps_keys_and_a_change_makes_a_new_one():
    base = expand(["nnunet"], [(64, 64, 64)], [1], precisions=["fp16"], backend="predict")
    changed = expand(["nnunet"], [(64, 64, 64)], [1], precisions=["fp16"], backend="predict",
                     overrides={"recipe.optimizer": "adam", "recipe.clip": "none"})
    assert base[0].recipe == () and base[0].key() in _baseline_keys()
    assert changed[0].recipe == (("clip", None), ("optimizer", "adam"))
    assert changed[0].key() not in _baseline_keys() and "recipe.optimizer=adam" in changed[0].label()
    assert RunConfig.from_json(changed[0].to_json()) == changed[0]  # as a worker receives it
    assert RunConfig.from_json(changed[0].to_json()).key() == changed[0].key()


def test_the_validation_grids_benchmark_off_is_off_under_nnunets_recipe():
    from bench.results.validate import grid

    cfgs = [c for c in grid(["nnunet"]) if c.mode == "train"]
    off = [c for c in cfgs if not c.cudnn_benchmark]
    assert off and all(c.recipe == (("cudnn_benchmark", False),) for c in off)
    rec = worker.run(dataclasses.replace(off[0], backend="predict", size=(64, 64, 64), batch=1), memtracker=False)
    assert rec["cudnn_benchmark"] is False and "cudnn_bench" not in rec["recipe"]


def test_a_recipe_change_is_recorded():
    cfg = expand(["unet"], [(32, 32, 32)], [1], backend="predict",
                 overrides={"recipe.optimizer": "sgd", "recipe.momentum": "0.9"})[0]
    plain = expand(["unet"], [(32, 32, 32)], [1], backend="predict")[0]
    rec, rec_plain = worker.run(cfg, memtracker=False), worker.run(plain, memtracker=False)
    assert rec["recipe"] == "sgd(lr=0.0009,m=0.9)+ce_dice" and rec_plain["recipe"] == "adam(lr=0.0009)+ce_dice"
    assert rec["compiled"] is False and rec_plain["cudnn_benchmark"] is False
    assert rec["pred_optimizer_bytes"] * 2 == rec_plain["pred_optimizer_bytes"]


def test_precision_defaults_to_the_recipes():
    assert expand(["nnunet"], [(64, 64, 64)], [1], backend="predict")[0].precision == "fp16"
    assert expand(["unet"], [(32, 32, 32)], [1], backend="predict")[0].precision == "fp32"
    assert expand(["nnunet"], [(64, 64, 64)], [1], backend="cpu")[0].precision == "fp32"  # CPU runs: fp32


@pytest.mark.parametrize(("setting", "message"), [
    ("recipe.optimiser=adam", "unknown recipe key 'optimiser'; valid: recipe.optimizer=adam|adamw|sgd"),
    ("recipe.optimizer=rmsprop", "recipe.optimizer='rmsprop' is not valid; valid:"),
    ("recipe.clip=-1", "recipe.clip=-1 is not valid"),
    ("recipe.nesterov=maybe", "recipe.nesterov='maybe' is not valid"),
    ("recipe.compile=true", "recipe.compile=true is not supported"),
])
def test_bad_recipe_settings_fail_with_one_line(tmp_path, setting, message):
    res = CliRunner().invoke(app, ["run", "--arch", "nnunet", "--backend", "predict", "--set", setting,
                                   "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "results.jsonl").exists()


def test_a_recipe_that_does_not_hold_together_names_the_arch():
    with pytest.raises(ValueError, match=r"^unet: recipe: momentum and nesterov are SGD's"):
        expand(["unet"], [(32, 32, 32)], [1], overrides={"recipe.momentum": 0.9})
    with pytest.raises(ValueError, match="compile=True is not supported"):
        Recipe(compile=True)
