"""Whole-volume inference by overlapping sliding windows, stitched by a weighted vote.

Tile positions come from nnunetv2's ``compute_steps_for_sliding_window`` (evenly spread tiles that
cover the volume, overlapping by at least ``1 - step``), so a volume is tiled exactly as nnU-Net would.
Each tile's softmax is added into a probability accumulator with a per-voxel weight, and the result
is the weighted average (then argmax). Weightings:

- ``centre``: the paper's vote, the centre half of each tile (edges ``tile // 2`` around its centre)
  counts double;
- ``gaussian``: nnU-Net's Gaussian importance map (nnunetv2's ``compute_gaussian``, sigma 1/8 of the
  tile);
- ``uniform``: a plain average.

The accumulator lives on the device when it fits there (with room to spare), else on the CPU, so a
paper-size volume (1072 x 470 x 470 x 3 classes: 2.8 GiB of float32) can be stitched on any GPU; only
one tile at a time is on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..options import Weighting, choice


def window_weights(tile: Sequence[int], weighting: str = Weighting.CENTRE) -> torch.Tensor:
    """The per-voxel vote weight of one tile (float32, CPU)."""
    tile = tuple(int(t) for t in tile)
    weighting = choice(Weighting, weighting, "weighting")
    if weighting == "uniform":
        return torch.ones(tile)
    if weighting == "centre":
        w = torch.ones(tile)
        core = tuple(slice((t - t // 2) // 2, (t - t // 2) // 2 + t // 2) for t in tile)
        w[core] = 2.0
        return w
    if weighting == "gaussian":
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        return compute_gaussian(tile, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float32,
                                device=torch.device("cpu"))
    raise AssertionError(weighting)  # every Weighting is handled above


def tile_boxes(shape: Sequence[int], tile: Sequence[int], step: float = 0.5) -> Iterator[tuple[slice, ...]]:
    """Every tile of a sliding window over ``shape`` (already at least ``tile`` on every axis)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    if any(s < t for s, t in zip(shape, tile)):
        raise ValueError(f"volume {tuple(shape)} smaller than tile {tuple(tile)}; pad it first")
    starts = compute_steps_for_sliding_window(tuple(shape), tuple(tile), step)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                yield (slice(z, z + tile[0]), slice(y, y + tile[1]), slice(x, x + tile[2]))


def stitch_device(device: torch.device, shape: Sequence[int], num_classes: int) -> torch.device:
    """Where the accumulator goes: the device if it takes under half of the device's free memory."""
    if device.type != "cuda":
        return torch.device("cpu")
    need = (num_classes + 1) * int(torch.tensor(list(shape)).prod()) * 4
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < free // 2 else torch.device("cpu")


@torch.inference_mode()
def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: Sequence[int],
    num_classes: int,
    step: float = 0.5,
    weighting: str = Weighting.CENTRE,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Class probabilities (num_classes x D x H x W, float32) of ``image`` (C x D x H x W).

    ``predict`` maps a 1 x C x tile batch on ``device`` to logits 1 x num_classes x tile. A volume
    smaller than the tile on some axis is zero-padded to it (as nnU-Net does) and cropped back.
    ``progress(done, total)`` is called after every tile.
    """
    device = torch.device(device)
    tile = tuple(int(t) for t in tile)
    spatial = tuple(image.shape[1:])
    pad = [max(0, t - s) for s, t in zip(spatial, tile)]
    if any(pad):
        image = F.pad(image, [p for d in reversed(pad) for p in (d // 2, d - d // 2)])
    shape = tuple(image.shape[1:])
    where = stitch_device(device, shape, num_classes)
    probs = torch.zeros((num_classes, *shape), dtype=torch.float32, device=where)
    norm = torch.zeros(shape, dtype=torch.float32, device=where)
    weight = window_weights(tile, weighting).to(where)
    boxes = list(tile_boxes(shape, tile, step))
    for i, box in enumerate(boxes):
        x = image[(slice(None), *box)].unsqueeze(0).to(device, torch.float32)
        logits = predict(x)
        if tuple(logits.shape[2:]) != tile:
            raise ValueError(f"the inference path returned {tuple(logits.shape[2:])} for a {tile} tile; a sliding "
                             "window needs outputs at the tile's size")
        probs[(slice(None), *box)] += logits[0].float().softmax(0).to(where) * weight
        norm[box] += weight
        if progress:
            progress(i + 1, len(boxes))
    probs /= norm
    if any(pad):
        probs = probs[(slice(None), *(slice(d // 2, d // 2 + s) for d, s in zip(pad, spatial)))]
    return probs.cpu()
