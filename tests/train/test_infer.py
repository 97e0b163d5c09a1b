"""Sliding-window stitching against known answers."""

import math

import pytest
import torch

from bench.train.infer import sliding_window, tile_boxes, window_weights


def logits_of(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax over dim 1 is exactly ``probs`` (up to float rounding)."""
    return probs.clamp_min(1e-12).log()


@pytest.mark.parametrize("weighting", ["centre", "gaussian", "uniform"])
def test_stitching_reproduces_a_voxelwise_prediction(weighting):
    # a "network" whose output at a voxel depends only on that voxel: every tile agrees, so the
    # weighted vote must give back exactly the voxelwise answer, whatever the overlap or weights
    torch.manual_seed(0)
    image = torch.rand(1, 21, 9, 30)  # odd sizes, one axis smaller than the tile (padded)

    def predict(x):
        p1 = x[:, 0] * 0.8 + 0.1
        return logits_of(torch.stack([1 - p1, p1], 1))

    probs = sliding_window(predict, image, (8, 16, 8), 2, step=0.5, weighting=weighting)
    assert probs.shape == (2, 21, 9, 30)
    assert torch.allclose(probs[1], image[0] * 0.8 + 0.1, atol=1e-5)


def test_centre_vote_weighs_the_centre_half_double():
    w = window_weights((4, 8, 8), "centre")
    assert int((w == 2).sum()) == 2 * 4 * 4 and w[1:3, 2:6, 2:6].eq(2).all() and w[0].eq(1).all()


def test_stitching_matches_the_hand_computed_vote():
    # volume 8x4x4, tile 4x4x4, step 0.5: tiles start at z = 0, 2, 4 and say p1 = 0.2, 0.5, 0.8
    assert [b[0].start for b in tile_boxes((8, 4, 4), (4, 4, 4), 0.5)] == [0, 2, 4]
    answers = iter([0.2, 0.5, 0.8])

    def predict(x):
        q = next(answers)
        return torch.tensor([0.0, math.log(q / (1 - q))]).view(1, 2, 1, 1, 1).expand(1, 2, 4, 4, 4)

    p1 = sliding_window(predict, torch.zeros(1, 8, 4, 4), (4, 4, 4), 2, step=0.5, weighting="centre")[1]
    # z=2: tile 0 (local 2, centre: 2) and tile 1 (local 0, edge: 1); z=3: tile 0 (edge 1), tile 1 (centre 2)
    expected = {0: 0.2, 1: 0.2, 2: (2 * 0.2 + 0.5) / 3, 3: (0.2 + 2 * 0.5) / 3, 4: (2 * 0.5 + 0.8) / 3,
                5: (0.5 + 2 * 0.8) / 3, 6: 0.8, 7: 0.8}
    for z, value in expected.items():
        assert p1[z, 1, 2].item() == pytest.approx(value, abs=1e-6), z


def test_a_path_that_changes_the_resolution_is_refused():
    with pytest.raises(ValueError, match="tile's size"):
        sliding_window(lambda x: torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 8, 8, 8), (8, 8, 8), 2)
