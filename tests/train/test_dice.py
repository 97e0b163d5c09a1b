"""Dice, the threshold baseline and the phantom."""

import numpy as np
import pytest

from bench.train.data.phantom import DEFAULT_SHAPE, phantom
from bench.train.dice import ThresholdBaseline, dice, dice_per_class


def test_dice_is_2tp_over_2tp_fp_fn():
    label = np.array([0, 1, 1, 1, 2, 0])
    pred = np.array([1, 1, 1, 0, 2, 2])
    assert dice(pred, label, 1) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert dice(pred, label, 2) == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))
    assert dice_per_class(pred, label, [3]) == {3: 1.0}  # absent from both


def test_threshold_finds_a_separating_interval():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (8, 8, 8))
    image = (label * 10.0 + rng.uniform(0, 5, label.shape))[None]
    base = ThresholdBaseline().fit([image], [label], [1, 2])
    assert dice_per_class(base.predict(image), label, [1, 2]) == pytest.approx({1: 1.0, 2: 1.0}, abs=0.02)


def test_phantom_is_deterministic_imbalanced_and_not_thresholdable():
    image, label = phantom(DEFAULT_SHAPE, seed=3)
    again, label2 = phantom(DEFAULT_SHAPE, seed=3, slab=7)  # slab size does not change the volume
    np.testing.assert_array_equal(label, label2)
    np.testing.assert_allclose(image, again, atol=1e-6)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and label.shape == DEFAULT_SHAPE
    frac = np.bincount(label.ravel(), minlength=3) / label.size
    assert 0.005 < frac[1] < 0.15 and 0 < frac[2] < frac[1] / 4  # mid-gut small, hind-gut much smaller
    other, _ = phantom(DEFAULT_SHAPE, seed=4)
    assert not np.allclose(image, other)
    base = ThresholdBaseline().fit([image[None]], [label], [1, 2])
    scores = dice_per_class(base.predict(image[None]), label, [1, 2])  # even fitted on the same volume
    assert scores[1] < 0.5 and scores[2] < 0.5


@pytest.mark.parametrize("seed", [0, 2])  # seeds whose hind-gut once stopped short at the posterior tip
def test_class_proportions_do_not_depend_on_the_phantoms_size(seed):
    def fractions(shape):
        _, label = phantom(shape, seed=seed)
        return np.bincount(label.ravel(), minlength=3)[1:] / label.size

    small, large = fractions(DEFAULT_SHAPE), fractions((256, 160, 160))
    assert small[1] > 0.004 and large[1] > 0.004  # the hind-gut keeps a few tenths of a percent
    np.testing.assert_allclose(large, small, rtol=0.4)  # mid-gut and hind-gut within 40% of the default's
