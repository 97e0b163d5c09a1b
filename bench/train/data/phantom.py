"""A synthetic microCT phantom of a fruit fly's gut, the default dataset of ``bench run --dice``.

The paper's data (30 fly microCT volumes, 1072 x 470 x 470) is not public, so this imitates it:

- an elongated body along the first axis made of head, thorax and abdomen (three ellipsoids) with a
  bright cuticle shell, filled with textured soft tissue;
- a long, convoluted **mid-gut** tube (label 1) winding from the thorax through the abdomen, and a
  thinner, shorter **hind-gut** tube (label 2) from the mid-gut's end towards the posterior tip: the
  paper's strong class imbalance (hind-gut a few tenths of a percent of the voxels);
- the mid-gut has a wall as bright as muscle around dark contents, the hind-gut a brighter wall around
  grey contents; the tissue holds solid blobs of the same intensities ("muscle" as bright as the
  mid-gut's wall, "yolk" as dark as its contents, "granules" as bright as the hind-gut's wall), so
  intensity alone cannot segment the guts (:class:`bench.dice.ThresholdBaseline` measures how badly
  it does); their tubular shape can;
- a microCT-like imaging model: a smooth tissue texture, Gaussian blur (the point-spread function)
  and Gaussian noise.

Deterministic for a seed and a shape. Generated fast and in bounded memory: the geometry is stamped
into one uint8 material map (one byte per voxel), and the float image is rendered slab by slab along
the first axis (blur with a halo, so slab borders are invisible), so a paper-size 1072 x 470 x 470
volume never holds more than the output image, the material map and one slab of temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from architectures import Shape

# material codes of the uint8 map
AIR, TISSUE, CUTICLE, MUSCLE, YOLK, MID_WALL, MID_LUMEN, HIND_WALL, HIND_LUMEN, GRANULE = range(10)
LABELS = {"background": 0, "mid-gut": 1, "hind-gut": 2}
PAPER_SHAPE: Shape = (1072, 470, 470)
DEFAULT_SHAPE: Shape = (128, 96, 96)


@dataclass(frozen=True)
class PhantomParams:
    """The phantom's knobs (defaults chosen so that a small CPU U-net can learn it, a threshold cannot).

    The guts' radii follow from the share of the volume each class should fill (``mid_fraction``,
    ``hind_fraction``: the class proportions of the default 128 x 96 x 96 phantom, mid-gut about 4% and
    hind-gut a few tenths of a percent, as in the paper's strongly imbalanced data) and the length of
    its centreline, so that every size, the paper's 1072 x 470 x 470 included, has the same proportions.
    A radius is never below its minimum (voxels), so volumes much smaller than the default hold more gut.
    """

    mid_fraction: float = 0.042
    mid_radius_min: float = 6.0
    hind_fraction: float = 0.006
    hind_radius_min: float = 5.0
    wall_frac: float = 0.4  # wall thickness over radius
    mid_length: float = 4.0  # mid-gut centreline length over the body's length
    hind_length: float = 0.9
    blobs_per_mvox: float = 40.0  # distractor blobs per million voxels of body
    blob_radius: tuple[float, float] = (1.5, 4.0)  # min, max as multiples of the hind-gut radius
    blur_sigma: float = 0.8  # voxels, the PSF
    noise_sigma: float = 0.05
    texture_amplitude: float = 0.06
    # by material code: air, tissue, cuticle, muscle, yolk, mid-gut wall/contents, hind-gut wall/contents, granule
    intensities: tuple[float, ...] = (0.05, 0.45, 0.9, 0.62, 0.3, 0.62, 0.3, 0.85, 0.55, 0.85)


def phantom(
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    params: PhantomParams | None = None,
    slab: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom volume: (image float32 D x H x W in about [0, 1], label uint8 D x H x W)."""
    p = params or PhantomParams()
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"phantom shape must be three edges of at least 16 voxels; got {shape}")
    rng = np.random.default_rng(seed)
    body = _body(shape)
    material = np.zeros(shape, np.uint8)
    r_mid = _radius(shape, p.mid_fraction, p.mid_length, p.mid_radius_min)
    r_hind = _radius(shape, p.hind_fraction, p.hind_length, p.hind_radius_min)
    _stamp_blobs(material, body, rng, p, r_hind)
    mid = _gut_path(shape, body, rng, start=0.3, length=p.mid_length * shape[0], margin=r_mid + 2, pull=0.75)
    hind = _gut_path(shape, body, rng, start=None, length=p.hind_length * shape[0], margin=r_hind + 2,
                     pull=0.92, origin=mid[-1])
    _stamp_tube(material, mid, r_mid, p.wall_frac, MID_WALL, MID_LUMEN)
    _stamp_tube(material, hind, r_hind, p.wall_frac, HIND_WALL, HIND_LUMEN)
    label = np.zeros(shape, np.uint8)
    label[(material == MID_WALL) | (material == MID_LUMEN)] = 1
    label[(material == HIND_WALL) | (material == HIND_LUMEN)] = 2
    image = _render(material, body, rng, p, slab)
    return image, label


def _radius(shape: Shape, fraction: float, length: float, minimum: float) -> float:
    """The radius of a tube whose centreline is ``length`` x the volume's first edge and which fills
    ``fraction`` of the volume: fraction x D x H x W = pi r^2 x length x D."""
    return max(minimum, float(np.sqrt(fraction * shape[1] * shape[2] / (np.pi * length))))


class _Body:
    """Head, thorax and abdomen: three ellipsoids along the first axis (fractions of the volume)."""

    #: (centre along D, semi-axis along D, semi-axes across) as fractions of the volume's edges
    PARTS = ((0.13, 0.09, 0.30), (0.36, 0.16, 0.42), (0.67, 0.28, 0.44))

    def __init__(self, shape: Shape, shell: float) -> None:
        self.shape = shape
        self.shell = shell

    def _f(self, z0: int, z1: int, shrink: float = 0.0) -> np.ndarray:
        d, h, w = self.shape
        z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        y = np.arange(h, dtype=np.float32)[None, :, None]
        x = np.arange(w, dtype=np.float32)[None, None, :]
        best = np.full((z1 - z0, h, w), np.inf, np.float32)
        for cz, az, ar in self.PARTS:
            a = (az * d - shrink, ar * h - shrink, ar * w - shrink)
            f = ((z - cz * d) / a[0]) ** 2 + ((y - (h - 1) / 2) / a[1]) ** 2 + ((x - (w - 1) / 2) / a[2]) ** 2
            np.minimum(best, f, out=best)
        return best

    def inside(self, z0: int, z1: int, shrink: float = 0.0) -> np.ndarray:
        return self._f(z0, z1, shrink) <= 1.0

    def contains(self, pt: Sequence[float], margin: float) -> bool:
        """Whether the point lies inside the body shrunk by ``margin``. In plain floats, not numpy: the gut's
        path asks it for one point at a time, thousands of times (in numpy, most of a small phantom's time)."""
        d, h, w = self.shape
        z, y, x = (float(v) for v in pt)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        for cz, az, ar in self.PARTS:
            a = (max(az * d - margin, 1.0), max(ar * h - margin, 1.0), max(ar * w - margin, 1.0))
            u, v, t = (z - cz * d) / a[0], (y - cy) / a[1], (x - cx) / a[2]
            if u * u + v * v + t * t <= 1.0:
                return True
        return False


def _body(shape: Shape) -> _Body:
    return _Body(shape, shell=max(1.5, 0.008 * min(shape[1:])))


def _gut_path(shape: Shape, body: _Body, rng: np.random.Generator, start: float | None, length: float,
              margin: float, pull: float, origin: np.ndarray | None = None) -> np.ndarray:
    """A smooth random centreline (points 0.5 voxel apart) kept inside the body by steering.

    The mid-gut starts in the thorax and wanders (``pull`` towards the abdomen's centre when it nears
    the body's edge); the hind-gut starts where the mid-gut ends, heads for the posterior tip and winds
    there until it has its whole length (its share of the volume must not depend on where the mid-gut
    happened to end).
    """
    # In plain floats, not numpy arrays: thousands of steps on 3-vectors, where numpy's per-call cost was most of a
    # small phantom's time. The same operations in the same order as the array form (the phantom is unchanged,
    # bit for bit); _norm is numpy's norm of a 3-vector (a sequential sum of squares).
    d, h, w = shape
    pos = tuple(float(v) for v in (origin if origin is not None else (start * d, (h - 1) / 2, (w - 1) / 2)))
    target = (0.93 * d, (h - 1) / 2, (w - 1) / 2) if origin is not None else None
    x, y, z = rng.normal(size=3).tolist()
    heading = _unit((abs(x) + 0.5, y, z))
    centre = (0.62 * d, (h - 1) / 2, (w - 1) / 2)
    step = 0.5
    pts = [pos]
    n = int(length / step)
    turn = 0.08
    attempts = 0
    while len(pts) <= n and attempts < 20 * n:
        attempts += 1
        heading = tuple(a + turn * r for a, r in zip(heading, rng.normal(size=3).tolist()))
        if target is not None:
            to = tuple(t - q for t, q in zip(target, pos))
            nt = _norm(to) + 1e-9
            heading = tuple(a + 0.04 * t / nt for a, t in zip(heading, to))
        nxt = _ahead(pos, heading, step)
        if not body.contains(nxt, margin):
            to = tuple(c - q for c, q in zip(centre, pos))
            nt = _norm(to) + 1e-9
            heading = tuple(pull * t / nt + (1 - pull) * a + 0.3 * r
                            for t, a, r in zip(to, heading, rng.normal(size=3).tolist()))
            nxt = _ahead(pos, heading, step)
            if not body.contains(nxt, margin):
                continue
        heading = _unit(heading)
        pos = nxt
        pts.append(pos)
    return np.array(pts)


def _norm(v: tuple[float, float, float]) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = _norm(v)
    return (v[0] / n, v[1] / n, v[2] / n)


def _ahead(pos: tuple[float, float, float], heading: tuple[float, float, float], step: float) -> tuple[float, ...]:
    """The point ``step`` from ``pos`` along ``heading`` (not yet a unit vector)."""
    n = _norm(heading)
    return tuple(q + step * a / n for q, a in zip(pos, heading))


def _ball(radius: float) -> tuple[np.ndarray, int]:
    r = int(np.ceil(radius))
    g = np.arange(-r, r + 1)
    dist2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    return dist2 <= radius**2, r


def _stamp(material: np.ndarray, centre: np.ndarray, ball: np.ndarray, r: int, code: int,
           only: Sequence[int] | None = None) -> None:
    c = np.round(centre).astype(int)
    lo = c - r
    src, dst = [], []
    for lo_i, n in zip(lo, material.shape):
        a, b = max(0, lo_i), min(n, lo_i + 2 * r + 1)
        if a >= b:
            return
        dst.append(slice(a, b))
        src.append(slice(a - lo_i, b - lo_i))
    region = material[tuple(dst)]
    mask = ball[tuple(src)]
    if only is not None:
        mask = mask & np.isin(region, only)
    region[mask] = code


def _stamp_tube(material: np.ndarray, pts: np.ndarray, radius: float, wall_frac: float, wall: int,
                lumen: int) -> None:
    """Wall first along the whole path, then the lumen, so a loop touching itself stays a tube."""
    outer, ro = _ball(radius)
    inner, ri = _ball(radius * (1 - wall_frac))
    keep = [c for c in range(10) if c not in (MID_LUMEN, HIND_LUMEN)]  # a wall never fills a lumen
    for pt in pts[::2]:
        _stamp(material, pt, outer, ro, wall, only=keep)
    for pt in pts[::2]:
        _stamp(material, pt, inner, ri, lumen)


def _stamp_blobs(material: np.ndarray, body: _Body, rng: np.random.Generator, p: PhantomParams,
                 r_unit: float) -> None:
    """Distractors: solid blobs as bright as the gut walls ("muscle"), as dark as the mid-gut's contents
    ("yolk") and as bright as the hind-gut's contents ("granules")."""
    d, h, w = material.shape
    body_vox = 0.5 * d * h * w
    n = int(p.blobs_per_mvox * body_vox / 1e6) + 4
    placed = 0
    while placed < n:
        pt = rng.uniform([0, 0, 0], [d, h, w])
        radius = r_unit * rng.uniform(*p.blob_radius)
        if not body.contains(pt, radius + 1):
            continue
        ball, r = _ball(radius)
        _stamp(material, pt, ball, r, (MUSCLE, YOLK, GRANULE)[placed % 3])
        placed += 1


def _render(material: np.ndarray, body: _Body, rng: np.random.Generator, p: PhantomParams, slab: int) -> np.ndarray:
    """The image, slab by slab: body/cuticle analytically, materials' intensities, texture, blur, noise."""
    d, h, w = material.shape
    lut = np.asarray(p.intensities, np.float32)
    coarse_shape = tuple(max(2, s // 8) for s in material.shape)
    coarse = rng.normal(size=coarse_shape).astype(np.float32)
    halo = int(np.ceil(4 * p.blur_sigma)) + 1
    image = np.empty(material.shape, np.float32)
    noise_seed = int(rng.integers(2**31))
    for z0 in range(0, d, slab):
        z1 = min(d, z0 + slab)
        a, b = max(0, z0 - halo), min(d, z1 + halo)
        mat = material[a:b].copy()
        inside = body.inside(a, b)
        core = body.inside(a, b, shrink=body.shell)
        mat[inside & (mat == AIR)] = TISSUE
        mat[~inside] = AIR
        mat[inside & ~core] = CUTICLE
        vals = lut[mat]
        zz, yy, xx = np.meshgrid(np.arange(a, b), np.arange(h), np.arange(w), indexing="ij", sparse=True)
        scale = [(c - 1) / max(1, s - 1) for c, s in zip(coarse_shape, material.shape)]
        coords = np.broadcast_arrays(zz * scale[0], yy * scale[1], xx * scale[2])
        texture = ndimage.map_coordinates(coarse, coords, order=1, mode="nearest").astype(np.float32)
        vals += p.texture_amplitude * texture * inside
        vals = ndimage.gaussian_filter(vals, p.blur_sigma, mode="nearest")
        out = vals[z0 - a : z0 - a + (z1 - z0)]
        image[z0:z1] = out
        for z in range(z0, z1):  # seeded per plane: the image does not depend on the slab size
            image[z] += np.random.default_rng([noise_seed, z]).normal(0.0, p.noise_sigma, (h, w)).astype(np.float32)
    return image
