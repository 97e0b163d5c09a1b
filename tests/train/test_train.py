"""The generic training loop learns, and drives multi-stage architectures through their spec."""

import numpy as np
import pytest
import torch

import architectures
from bench.train.data.datasets import phantom_dataset
from bench.train.evaluate import evaluate, mean_foreground
from bench.train.trainer import PatchSampler, TrainConfig, train


@pytest.fixture(scope="module")
def small():
    return phantom_dataset((64, 48, 48), volumes=4, seed=10)


def test_learning_happens(small):
    spec = architectures.spec("unet")
    cfg = TrainConfig(patch=(32, 32, 32), batch=2, iterations=150, val_every=50)
    untrained = spec.build(1, 3).eval()
    before, _ = evaluate(lambda x: spec.infer(untrained, x), small.test, (32, 32, 32), 3, cfg, torch.device("cpu"))
    model, logs = train(spec, small, cfg)
    after, _ = evaluate(lambda x: spec.infer(model, x), small.test, (32, 32, 32), 3, cfg, torch.device("cpu"))
    assert logs[0].iterations == 150 and logs[0].stopped == "iteration budget"
    assert np.mean(logs[0].losses[-20:]) < 0.8 * np.mean(logs[0].losses[:20])
    # the untrained network finds no gut; 150 steps on a small phantom find much of both
    assert mean_foreground(before) < 0.1 and mean_foreground(after) > 0.5, (before, after)
    assert after[1] > before[1] + 0.3 and after[2] > before[2] + 0.3, (before, after)


def test_cascade_trains_every_stage_and_feeds_the_prior(small):
    spec = architectures.spec("cascade")
    cfg = TrainConfig(patch=(32, 32, 32), batch=1, iterations=2, val_every=100)
    model, logs = train(spec, small, cfg)
    assert [s.name for s in logs] == ["stage1_k1.5", "stage1_k1.75", "stage2"]
    assert all(s.iterations == 2 and s.best_val_dice is not None for s in logs)
    assert isinstance(model, torch.nn.Module) and not model.training


def test_sampler_mostly_skips_background(small):
    sampler = PatchSampler(small.train, (16, 16, 16), foreground_fraction=0.0, skip_background=1.0,
                           rng=np.random.default_rng(0))
    for _ in range(20):
        i, c = sampler.centre()
        box = tuple(slice(max(0, x - 8), x + 8) for x in c)
        assert small.train[i].label[box].any()


@pytest.mark.slow
def test_an_iteration_budget_gives_the_same_dice_bit_for_bit():
    """Two runs of one configuration on this machine: same losses, same Dice per volume (no wall clock)."""
    import architectures
    from bench.train.dice_run import dice_record

    def run():
        return dice_record(architectures.spec("unet"), {}, (32, 32, 32), 2, "fp32", "cpu", "phantom:64x48x48",
                           iterations=4, seed=3)

    a, b = run(), run()
    assert a["dice_per_volume"] == b["dice_per_volume"] and a["dice_mean_fg"] == b["dice_mean_fg"]
    assert a["train_iterations"] == 4
    c = dice_record(architectures.spec("unet"), {}, (32, 32, 32), 2, "fp32", "cpu", "phantom:64x48x48",
                    iterations=4, seed=4)
    assert c["dice_per_volume"] != a["dice_per_volume"]  # the seed is what makes it reproducible


@pytest.mark.slow
def test_the_trainer_trains_by_the_specs_recipe_and_its_overrides(small, monkeypatch):
    """nnU-Net's spec trains with SGD (momentum 0.99), clipping at 12 and deep supervision; recipe overrides
    (Adam, no clipping) reach every stage's training."""
    from architectures.recipe import NNUNetLoss, Recipe

    built, clipped, criteria = [], [], []
    opt, clip, crit = Recipe.build_optimizer, torch.nn.utils.clip_grad_norm_, Recipe.build_criterion
    monkeypatch.setattr(Recipe, "build_optimizer", lambda self, params: built.append(opt(self, params)) or built[-1])
    monkeypatch.setattr(Recipe, "build_criterion", lambda self, w=None: criteria.append(crit(self, w)) or criteria[-1])
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, m, *a, **k: clipped.append(m) or clip(p, m, *a, **k))
    spec = architectures.spec("nnunet")
    cfg = TrainConfig(patch=(32, 32, 32), batch=1, iterations=2, val_every=100, overrides={"n_stages": 4})
    model, logs = train(spec, small, cfg)
    assert isinstance(built[0], torch.optim.SGD) and built[0].param_groups[0]["momentum"] == 0.99
    assert clipped == [12.0, 12.0] and isinstance(criteria[0], NNUNetLoss)
    assert criteria[0].wrapper is not None and len(criteria[0].wrapper.weight_factors) == 3  # deep supervision
    built.clear(), clipped.clear()
    train(spec, small, TrainConfig(patch=(32, 32, 32), batch=1, iterations=2, val_every=100, overrides={"n_stages": 4},
                                   recipe_overrides={"optimizer": "adam", "clip": "none"}))
    assert isinstance(built[0], torch.optim.Adam) and clipped == []
