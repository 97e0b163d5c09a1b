"""Datasets for Dice runs: the built-in phantom, nnU-Net raw datasets and folders of 3D TIFFs.

A :class:`Dataset` is a list of labelled volumes split into train / validation / test, with its class
names. Real data is read through nnunetv2's own image readers (``SimpleITKIO``, ``NibabelIO``,
``Tiff3DIO``, chosen from the file ending as nnU-Net does), and everything that would otherwise fail
mid-training (a missing label, an image and label of different shapes, labels outside the declared
classes) is checked when the dataset is opened, with one message naming the file.

Volumes are held in memory once read, the image as float32 (z-score normalised per volume, as
nnU-Net does for non-CT data) and the label as uint8: about 5 bytes per voxel.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from architectures import Shape

from .phantom import DEFAULT_SHAPE, LABELS, phantom

__all__ = ["DEFAULT_SHAPE", "Dataset", "DatasetError", "Volume", "load", "phantom_dataset"]



class DatasetError(ValueError):
    """A dataset that cannot be used, with the reason and the file concerned."""


@dataclass
class Volume:
    """One labelled volume: image C x D x H x W (float32, normalised), label D x H x W (uint8)."""

    name: str
    image: np.ndarray
    label: np.ndarray

    @property
    def shape(self) -> Shape:
        return tuple(self.label.shape)  # type: ignore[return-value]


@dataclass
class Dataset:
    """Volumes split into train / val / test, and the class names by label value."""

    name: str
    labels: dict[str, int]
    train: list[Volume]
    val: list[Volume]
    test: list[Volume]
    in_channels: int = 1
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return max(self.labels.values()) + 1

    def class_names(self) -> dict[int, str]:
        return {v: k for k, v in self.labels.items()}


def normalise(image: np.ndarray) -> np.ndarray:
    """Per-channel z-score (float32)."""
    image = image.astype(np.float32, copy=False)
    mean = image.mean(axis=(1, 2, 3), keepdims=True)
    std = image.std(axis=(1, 2, 3), keepdims=True)
    return (image - mean) / np.maximum(std, 1e-8)


def split(n: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> tuple[int, int, int]:
    """Counts for train / val / test (the paper's 70/10/20), each at least 1 when n >= 3."""
    if n < 3:
        raise DatasetError(f"a Dice run needs at least 3 labelled volumes (train, val, test); found {n}")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    return n - n_val - n_test, n_val, n_test


def phantom_dataset(shape: Sequence[int] = DEFAULT_SHAPE, volumes: int = 8, seed: int = 0) -> Dataset:
    """``volumes`` phantoms (seeds seed, seed+1, ...) split 70/10/20 (8 -> 5 train, 1 val, 2 test)."""
    vols = []
    for i in range(volumes):
        image, label = phantom(shape, seed=seed + i)
        vols.append(Volume(f"phantom_{seed + i:03d}", normalise(image[None]), label))
    n_train, n_val, _ = split(volumes)
    return Dataset(
        name=f"phantom {'x'.join(map(str, shape))} x{volumes} (seed {seed})",
        labels=dict(LABELS), train=vols[:n_train], val=vols[n_train:n_train + n_val], test=vols[n_train + n_val:],
        description="built-in synthetic microCT phantom (bench.data.phantom)",
    )


# ----- real data ---------------------------------------------------------------------------------------
def load(path: str | Path) -> Dataset:
    """Open ``path``: an nnU-Net raw dataset (has ``dataset.json``) or a folder of 3D TIFFs
    (``images/`` and ``labels/`` with the same file names). Raises :class:`DatasetError`."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"data path {root} is not a folder (expected an nnU-Net raw dataset or a TIFF folder)")
    if (root / "dataset.json").exists():
        return load_nnunet_raw(root)
    if (root / "images").is_dir():
        return load_tiff_folder(root)
    raise DatasetError(
        f"{root} is neither an nnU-Net raw dataset (dataset.json, imagesTr/, labelsTr/) nor a TIFF folder "
        "(images/*.tif and labels/*.tif with the same names)"
    )


def _reader(file_ending: str):
    """nnunetv2's reader for a file ending; 3D TIFFs always through ``Tiff3DIO`` (nnunetv2's registry
    would offer its 2D natural-image reader first)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    if file_ending.lower() in (".tif", ".tiff"):
        return Tiff3DIO()
    try:
        return determine_reader_writer_from_file_ending(file_ending, allow_nonmatching_filename=True, verbose=False)()
    except Exception as exc:  # nnunetv2 raises a bare RuntimeError
        raise DatasetError(f"no nnunetv2 image reader for files ending in {file_ending!r}") from exc


def _quiet(fn: Callable, files: str | list[str]):
    """Read ``files`` with one of nnunetv2's readers, quietly (they print warnings, e.g. a TIFF without a
    spacing file); a file that is not an image is a DatasetError naming it, not a reader's traceback."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn(files)
    except Exception as exc:
        what = files if isinstance(files, str) else ", ".join(files)
        detail = (str(exc).strip().splitlines() or [""])[-1][:200]
        raise DatasetError(f"cannot read {what} as an image ({type(exc).__name__}: {detail})") from None


def _check_case(name: str, image: np.ndarray, label: np.ndarray, classes: set[int], label_file: Path) -> np.ndarray:
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 3:
        raise DatasetError(f"{label_file}: a label must be a 3D volume; got shape {label.shape}")
    if tuple(image.shape[1:]) != tuple(label.shape):
        raise DatasetError(f"{name}: image shape {tuple(image.shape[1:])} and label shape {tuple(label.shape)} differ "
                           f"({label_file})")
    found = {int(v) for v in np.unique(label)}
    bad = sorted(found - classes)
    if bad:
        raise DatasetError(f"{label_file}: label values {bad} are not among the declared classes {sorted(classes)}")
    return label.astype(np.uint8)


def _finish(name: str, labels: dict[str, int], cases: list[Volume], channels: int, description: str) -> Dataset:
    n_train, n_val, _ = split(len(cases))
    return Dataset(name, labels, cases[:n_train], cases[n_train:n_train + n_val], cases[n_train + n_val:],
                   in_channels=channels, description=description)


def load_nnunet_raw(root: Path) -> Dataset:
    """An nnU-Net v2 raw dataset: ``dataset.json`` (channel_names, labels, file_ending), ``imagesTr/
    <case>_<XXXX><ending>`` per channel and ``labelsTr/<case><ending>``. Cases sorted by name and split
    70/10/20 in that order."""
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{root / 'dataset.json'} is not valid JSON: {exc}") from exc
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise DatasetError(f"{root / 'dataset.json'} has no {key!r} (nnU-Net v2 format expected)")
    labels = {str(k): int(v) for k, v in meta["labels"].items() if isinstance(v, int)}
    if "background" not in labels or labels["background"] != 0:
        raise DatasetError(f"{root / 'dataset.json'}: labels must include background = 0; got {meta['labels']}")
    ending, channels = meta["file_ending"], len(meta["channel_names"])
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise DatasetError(f"{root} has no {d.name}/ folder")
    case_names = sorted({p.name[: -len(ending) - 5] for p in images_dir.glob(f"*_0000{ending}")})
    if not case_names:
        raise DatasetError(f"{images_dir} holds no images named <case>_0000{ending}")
    reader = _reader(ending)
    classes = set(labels.values())
    cases = []
    for case in case_names:
        files = [images_dir / f"{case}_{c:04d}{ending}" for c in range(channels)]
        for f in files:
            if not f.exists():
                raise DatasetError(f"case {case}: missing image channel {f}")
        label_file = labels_dir / f"{case}{ending}"
        if not label_file.exists():
            raise DatasetError(f"case {case}: missing label {label_file}")
        image, _ = _quiet(reader.read_images, [str(f) for f in files])
        label, _ = _quiet(reader.read_seg, str(label_file))
        label = _check_case(case, image, label, classes, label_file)
        cases.append(Volume(case, normalise(image), label))
    return _finish(meta.get("name", root.name), labels, cases, channels, f"nnU-Net raw dataset {root}")


def load_tiff_folder(root: Path, labels: dict[str, int] | None = None) -> Dataset:
    """``images/<name>.tif[f]`` and ``labels/<name>.tif[f]`` (3D, same names). Classes: from an optional
    ``labels.json`` ({"background": 0, "mid-gut": 1, ...}), else the phantom's three."""
    images_dir, labels_dir = root / "images", root / "labels"
    if not labels_dir.is_dir():
        raise DatasetError(f"{root} has images/ but no labels/ folder")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise DatasetError(f"{images_dir} holds no .tif/.tiff files")
    if labels is None:
        meta = root / "labels.json"
        labels = {str(k): int(v) for k, v in json.loads(meta.read_text()).items()} if meta.exists() else dict(LABELS)
    reader = _reader(files[0].suffix)
    classes = set(labels.values())
    cases = []
    for f in files:
        label_file = labels_dir / f.name
        if not label_file.exists():
            raise DatasetError(f"image {f.name}: missing label {label_file}")
        image, _ = _quiet(reader.read_images, [str(f)])
        label, _ = _quiet(reader.read_seg, str(label_file))
        label = _check_case(f.stem, image, label, classes, label_file)
        cases.append(Volume(f.stem, normalise(image), label))
    return _finish(root.name, labels, cases, 1, f"TIFF folder {root}")
