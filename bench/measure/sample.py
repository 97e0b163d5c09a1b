"""Training samples from an architecture's declarative layout (:class:`architectures.SampleTensor`).

Two sources, one layout: :func:`synthetic_batch` for memory and speed runs (random image, random
labels, random one-hot priors: the memory of a step does not depend on the values), and
:func:`crop_sample` for training on real or phantom volumes. Neither knows which architecture asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from architectures import SampleTensor, Shape
from architectures.spec import downsample


def synthetic_batch(
    layout: Sequence[SampleTensor],
    batch: int,
    num_classes: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A batch of random tensors of the layout's shapes (images float32, labels int64, priors one-hot).

    Works under FakeTensorMode and on the meta device too (no values are read).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fake = torch.device(device).type == "meta" or _in_fake_mode()
    out: dict[str, torch.Tensor] = {}
    for t in layout:
        shape = t.shape
        if t.role == "image":
            out[t.name] = _rand((batch, t.channels, *shape), gen, device, fake)
        elif t.role == "label":
            out[t.name] = _randint(num_classes, (batch, *shape), gen, device, fake)
        else:  # prior: one-hot maps, possibly of several stage-1 models side by side
            groups = max(1, t.channels // num_classes) if t.channels % num_classes == 0 else 1
            per = t.channels // groups
            parts = [F.one_hot(_randint(per, (batch, *shape), gen, device, fake), per).movedim(-1, 1).float()
                     for _ in range(groups)]
            out[t.name] = torch.cat(parts, dim=1).contiguous()
    return out


def _in_fake_mode() -> bool:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return any(isinstance(m, FakeTensorMode) for m in _get_current_dispatch_mode_stack())


def _rand(shape: tuple[int, ...], gen: torch.Generator, device, fake: bool) -> torch.Tensor:
    if fake:
        return torch.empty(shape, device=device)
    return torch.randn(shape, generator=gen).to(device)


def _randint(high: int, shape: tuple[int, ...], gen: torch.Generator, device, fake: bool) -> torch.Tensor:
    if fake:
        return torch.zeros(shape, dtype=torch.long, device=device)
    return torch.randint(0, high, shape, generator=gen).to(device)


def crop_sample(
    layout: Sequence[SampleTensor],
    image: torch.Tensor,
    label: torch.Tensor,
    centre: Sequence[int],
    prior: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Cut one sample (no batch axis) around ``centre`` from a volume.

    ``image`` is C x D x H x W, ``label`` D x H x W, ``prior`` (if the layout has one) K x D x H x W.
    Regions reaching outside the volume are zero-padded (label 0, image 0, prior background), as
    nnU-Net pads patches at the border.
    """
    out: dict[str, torch.Tensor] = {}
    for t in layout:
        src = {"image": image, "label": label, "prior": prior}[t.role]
        if src is None:
            raise ValueError(f"layout needs a {t.role!r} tensor ({t.name}) and none was given")
        crop = crop_box(src, centre, t.crop)
        crop = downsample(crop, t.stride, t.resample if t.role == "image" else "nearest")
        out[t.name] = crop.contiguous()
    return out


def crop_box(vol: torch.Tensor, centre: Sequence[int], size: Shape) -> torch.Tensor:
    """The ``size`` box centred on ``centre`` of the last three axes of ``vol``, zero-padded outside."""
    spatial = vol.shape[-3:]
    starts = [c - s // 2 for c, s in zip(centre, size)]
    src = tuple(slice(max(0, a), min(n, a + s)) for a, s, n in zip(starts, size, spatial))
    out = vol.new_zeros((*vol.shape[:-3], *size))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, starts))
    out[(..., *dst)] = vol[(..., *src)]
    return out


def stack(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
