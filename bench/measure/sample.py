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
    drawn: Sequence[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A batch of random tensors of the layout's shapes (images float32, labels int64, priors one-hot).

    ``drawn``: its random values, drawn ahead on the CPU (:func:`draw`, the same values), so that only their
    placement on ``device`` is left here: the device sees the same allocations either way. Works under
    FakeTensorMode and on the meta device too (no values are read).
    """
    fake = torch.device(device).type == "meta" or in_fake_mode()
    values = iter(drawn) if drawn is not None and not fake else None
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def value(high: int | None, shape: tuple[int, ...]) -> torch.Tensor:
        if fake:
            return torch.empty(shape, device=device) if high is None else torch.zeros(shape, dtype=torch.long,
                                                                                          device=device)
        v = next(values) if values is not None else _draw(high, shape, gen)
        return v.to(device)

    out: dict[str, torch.Tensor] = {}
    for name, role, parts in _plan(layout, batch, num_classes):
        if role == "prior":  # one-hot maps (on the device), possibly of several stage-1 models side by side
            out[name] = torch.cat([F.one_hot(value(high, shape), high).movedim(-1, 1).float()
                                   for high, shape in parts], dim=1).contiguous()
        else:
            out[name] = value(*parts[0])
    return out


def draw(layout: Sequence[SampleTensor], batch: int, num_classes: int, seed: int = 0) -> list[torch.Tensor]:
    """The random values of :func:`synthetic_batch` (its ``drawn``), on the CPU, in the order it places them."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return [_draw(high, shape, gen) for _, _, parts in _plan(layout, batch, num_classes) for high, shape in parts]


def _plan(layout: Sequence[SampleTensor], batch: int,
          num_classes: int) -> list[tuple[str, str, list[tuple[int | None, tuple[int, ...]]]]]:
    """Per tensor of the layout: its name, role and the random draws it is made of, each (None for normal values,
    else the number of classes of integer ones; its shape): an image one draw, a label one, a prior one per
    stage-1 model whose one-hot maps it holds."""
    out = []
    for t in layout:
        shape = tuple(t.shape)
        if t.role == "image":
            out.append((t.name, t.role, [(None, (batch, t.channels, *shape))]))
        elif t.role == "label":
            out.append((t.name, t.role, [(num_classes, (batch, *shape))]))
        else:
            groups = max(1, t.channels // num_classes) if t.channels % num_classes == 0 else 1
            per = t.channels // groups
            out.append((t.name, "prior", [(per, (batch, *shape))] * groups))
    return out


def _draw(high: int | None, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen) if high is None else torch.randint(0, high, shape, generator=gen)


def in_fake_mode() -> bool:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return any(isinstance(m, FakeTensorMode) for m in _get_current_dispatch_mode_stack())


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
