"""nnU-Net's own experiment planners, run on a dataset fingerprint without any data on disk.

nnunetv2 plans from two files: the raw dataset's ``dataset.json`` (channels, labels, number of training
cases) and the preprocessed folder's ``dataset_fingerprint.json`` (per-case spacing and shape after
cropping, intensity statistics). Everything else it reads is optional. :func:`plan` writes exactly
those two files (:class:`Fingerprint`) into a temporary ``nnUNet_raw`` / ``nnUNet_preprocessed``
pair, points the planner module at them, and runs the planner class itself
(``ExperimentPlanner``, ``nnUNetPlannerResEncM`` / ``L`` / ``XL``): patch, batch, topology and
network class are nnunetv2's, not re-implemented here. No preprocessing is run and no image is read.

Where a fingerprint comes from:

- :meth:`Fingerprint.from_median`: a median shape and spacing, channel names, class count and case
  count (``bench plan --shape 500x512x512 --spacing 1x0.78x0.78 --channels 1 --classes 3``);
- :meth:`Fingerprint.from_json`: an nnU-Net ``dataset_fingerprint.json`` (with the ``dataset.json``
  beside it, as nnU-Net's preprocessed folder has it, or channels and classes given);
- :meth:`Fingerprint.from_raw`: a raw dataset folder (``dataset.json`` + ``imagesTr``), reading only the
  image headers (SimpleITK's ``ReadImageInformation``): no nonzero cropping is done, so shapes are the
  full image shapes (nnU-Net crops to the nonzero region first; for images without a zero border the two
  agree).

Axes are nnU-Net's (numpy order, z y x for SimpleITK images): ``--shape`` and ``--spacing`` are given in
that order. Intensity statistics are not measured (no voxel is read): the plans' ``foreground_intensity_
properties_per_channel`` carries ``None`` and the plans are for memory and speed, not for preprocessing CT
data with nnU-Net.

>>> fp = Fingerprint.from_median((500, 512, 512), (1, 0.78, 0.78), ["CT"], 3, cases=100)
>>> plans = plan(fp, "resenc_l")  # doctest: +SKIP
>>> plans["configurations"]["3d_fullres"]["patch_size"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: segmem's name of each nnunetv2 planner -> (module, class, nnU-Net's GPU memory target in GB)
PLANNERS: dict[str, tuple[str, str, float]] = {
    "default": ("nnunetv2.experiment_planning.experiment_planners.default_experiment_planner", "ExperimentPlanner", 8),
    "resenc_m": ("nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners",
                 "nnUNetPlannerResEncM", 8),
    "resenc_l": ("nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners",
                 "nnUNetPlannerResEncL", 24),
    "resenc_xl": ("nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners",
                  "nnUNetPlannerResEncXL", 40),
}
#: the dataset name the planner is run under (a placeholder: no nnU-Net folder of the user's is touched)
DATASET = "Dataset999_segmem"
#: the plans' key under which segmem records how it planned (planner, GPU memory target, fingerprint)
PROVENANCE = "segmem"


@dataclass(frozen=True)
class Fingerprint:
    """What nnU-Net's planners read about a dataset: per case, shape after cropping and spacing (numpy
    axis order), the channel names (their normalisation: ``CT`` or anything else), the labels, and the
    file ending (written to dataset.json; nothing is read with it)."""

    shapes: tuple[tuple[int, int, int], ...]
    spacings: tuple[tuple[float, float, float], ...]
    channel_names: tuple[str, ...] = ("0",)
    labels: tuple[str, ...] = ("background", "class1", "class2")
    file_ending: str = ".nii.gz"
    #: median fraction of an image left after nonzero cropping (< 0.75 switches nnU-Net's mask normalisation)
    median_relative_size_after_cropping: float = 1.0
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError("a fingerprint needs at least one case")
        for what, rows in (("shape", self.shapes), ("spacing", self.spacings)):
            for r in rows:
                if len(r) != 3:
                    raise ValueError(f"a {what} needs three spatial dimensions (DxHxW); got {'x'.join(map(str, r))}")
        if len(self.shapes) != len(self.spacings):
            raise ValueError(f"{len(self.shapes)} shapes but {len(self.spacings)} spacings")
        if any(s < 1 for r in self.shapes for s in r) or any(s <= 0 for r in self.spacings for s in r):
            raise ValueError("shapes must be >= 1 voxel and spacings > 0 on every axis")
        if len(self.labels) < 2:
            raise ValueError(f"at least 2 classes (background and one structure); got {len(self.labels)}")
        if not self.channel_names:
            raise ValueError("at least one input channel")

    # ----- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_median(cls, shape: Sequence[int], spacing: Sequence[float], channels: Sequence[str] | int = 1,
                    classes: int = 3, cases: int = 100) -> Fingerprint:
        """``cases`` identical cases of ``shape`` at ``spacing`` (the medians are then exactly these).
        ``channels``: a count or the channel names (``CT`` gets nnU-Net's CT normalisation)."""
        if cases < 1:
            raise ValueError(f"--cases must be >= 1; got {cases}")
        names = tuple(str(i) for i in range(channels)) if isinstance(channels, int) else tuple(channels)
        return cls((tuple(int(s) for s in shape),) * cases, (tuple(float(s) for s in spacing),) * cases,  # type: ignore[arg-type]
                   names, _label_names(classes), source=f"median {'x'.join(map(str, shape))}")

    @classmethod
    def from_json(cls, path: str | Path, dataset_json: str | Path | None = None, channels: Sequence[str] | int | None = None,
                  classes: int | None = None) -> Fingerprint:
        """An nnU-Net ``dataset_fingerprint.json``; channels and labels from ``dataset_json`` (default: the
        ``dataset.json`` beside it), else from ``channels`` / ``classes``."""
        path = Path(path)
        fp = _read_json(path, "an nnU-Net dataset_fingerprint.json")
        if not isinstance(fp, dict) or not {"spacings", "shapes_after_crop"} <= set(fp):
            raise ValueError(f"{path}: not an nnU-Net dataset_fingerprint.json (it has no spacings / shapes_after_crop)")
        ds_path = Path(dataset_json) if dataset_json else path.with_name("dataset.json")
        names, labels, ending = _dataset_meta(ds_path if ds_path.is_file() else None, channels, classes, path)
        return cls(tuple(tuple(int(x) for x in s) for s in fp["shapes_after_crop"]),  # type: ignore[misc]
                   tuple(tuple(float(x) for x in s) for s in fp["spacings"]),  # type: ignore[misc]
                   names, labels, ending, float(fp.get("median_relative_size_after_cropping", 1.0)), source=str(path))

    @classmethod
    def from_raw(cls, folder: str | Path, max_cases: int | None = None) -> Fingerprint:
        """A raw nnU-Net dataset folder: ``dataset.json`` and the headers of ``imagesTr`` (first channel
        of each case; at most ``max_cases`` of them). Nothing is preprocessed, no voxel is read."""
        folder = Path(folder)
        ds_path = folder / "dataset.json"
        if not ds_path.is_file():
            raise ValueError(f"{folder}: not an nnU-Net raw dataset folder (no dataset.json)")
        names, labels, ending = _dataset_meta(ds_path, None, None, ds_path)
        ds = _read_json(ds_path, "a dataset.json")
        if "dataset" in ds:
            files = [Path(v["images"][0]) if os.path.isabs(v["images"][0]) else folder / v["images"][0]
                     for v in ds["dataset"].values()]
        else:
            files = sorted((folder / "imagesTr").glob(f"*_0000{ending}"))
        if not files:
            raise ValueError(f"{folder}: no training images (imagesTr/*_0000{ending})")
        files = files[:max_cases] if max_cases else files
        shapes, spacings = zip(*(read_header(f) for f in files))
        return cls(shapes, spacings, names, labels, ending, source=str(folder))

    # ----- what the planner reads -----------------------------------------------------------------
    @property
    def median_shape(self) -> tuple[int, int, int]:
        import numpy as np

        return tuple(int(round(x)) for x in np.median(np.array(self.shapes), 0))  # type: ignore[return-value]

    @property
    def median_spacing(self) -> tuple[float, float, float]:
        import numpy as np

        return tuple(float(x) for x in np.median(np.array(self.spacings), 0))  # type: ignore[return-value]

    def dataset_json(self) -> dict[str, Any]:
        """The raw ``dataset.json`` nnU-Net reads: channels, labels, numTraining (with an explicit case list,
        so that nnunetv2 lists no folder, and a reader named, so that it opens no image)."""
        return {
            "channel_names": {str(i): n for i, n in enumerate(self.channel_names)},
            "labels": {n: i for i, n in enumerate(self.labels)},
            "numTraining": len(self.shapes),
            "file_ending": self.file_ending,
            "overwrite_image_reader_writer": "SimpleITKIO",
            "dataset": {f"case_{i:04d}": {"images": [f"imagesTr/case_{i:04d}_0000{self.file_ending}"],
                                          "label": f"labelsTr/case_{i:04d}{self.file_ending}"}
                        for i in range(len(self.shapes))},
        }

    def fingerprint_json(self) -> dict[str, Any]:
        """The ``dataset_fingerprint.json`` nnU-Net reads (intensity statistics unmeasured: ``None``)."""
        stats = dict.fromkeys(("max", "mean", "median", "min", "percentile_00_5", "percentile_99_5", "std"))
        return {
            "spacings": [list(s) for s in self.spacings],
            "shapes_after_crop": [list(s) for s in self.shapes],
            "median_relative_size_after_cropping": self.median_relative_size_after_cropping,
            "foreground_intensity_properties_per_channel": {str(i): dict(stats) for i in range(len(self.channel_names))},
        }


def _label_names(classes: int) -> tuple[str, ...]:
    if classes < 2:
        raise ValueError(f"--classes counts background too: at least 2; got {classes}")
    return ("background",) + tuple(f"class{i}" for i in range(1, classes))


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ValueError(f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'} (expected {what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not {what}: not JSON ({exc})") from None


def _dataset_meta(ds_path: Path | None, channels: Sequence[str] | int | None, classes: int | None,
                  where: Path) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Channel names, label names and file ending: from a dataset.json, or from the given counts."""
    if ds_path is not None:
        ds = _read_json(ds_path, "an nnU-Net dataset.json")
        chans = ds.get("channel_names", ds.get("modality")) if isinstance(ds, dict) else None
        if not isinstance(chans, dict) or "labels" not in ds:
            raise ValueError(f"{ds_path}: not an nnU-Net dataset.json (it has no channel_names and labels)")
        names = tuple(str(chans[k]) for k in sorted(chans, key=int))
        labels = tuple(sorted(ds["labels"], key=lambda k: _label_value(ds["labels"][k])))
        return names, labels, ds.get("file_ending", ".nii.gz")
    if channels is None or classes is None:
        raise ValueError(f"{where}: no dataset.json beside it; give --channels and --classes")
    names = tuple(str(i) for i in range(channels)) if isinstance(channels, int) else tuple(channels)
    return names, _label_names(classes), ".nii.gz"


def _label_value(v: Any) -> int:
    return max(v) if isinstance(v, list) else int(v)  # nnU-Net regions list label values


def read_header(path: Path) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing) of an image from its header, in nnU-Net's numpy axis order (z, y, x for SimpleITK)."""
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size, spacing = reader.GetSize(), reader.GetSpacing()
    except Exception as exc:  # noqa: BLE001 - SimpleITK raises RuntimeError for any unreadable file
        raise ValueError(f"{path}: cannot read its header: {str(exc).strip().splitlines()[-1][:200]}") from None
    if len(size) < 3:
        raise ValueError(f"{path}: a {len(size)}D image; nnU-Net's 3D configurations need three spatial dimensions")
    return tuple(int(s) for s in size[::-1][-3:]), tuple(float(s) for s in spacing[::-1][-3:])  # type: ignore[return-value]


def planner_class(name: str) -> type:
    """nnunetv2's planner class of segmem's planner name (``default``, ``resenc_m``, ``resenc_l``, ``resenc_xl``)."""
    import importlib

    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; valid: {', '.join(PLANNERS)}")
    module, cls, _ = PLANNERS[name]
    with _quiet():
        return getattr(importlib.import_module(module), cls)


@contextlib.contextmanager
def _quiet():
    """nnunetv2 prints its plans, its path warnings and its progress: none of it is segmem's output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def plan(fingerprint: Fingerprint, planner: str = "default", gpu_memory_gb: float | None = None) -> dict[str, Any]:
    """nnU-Net's plans (the dict nnunetv2 writes as ``<plans_name>.json``) for ``fingerprint``, made by
    nnunetv2's planner class ``planner`` (see :data:`PLANNERS`) at its GPU memory target (or
    ``gpu_memory_gb``). Runs in a temporary folder; returns the plans, with the dataset.json nnunetv2
    would copy beside them under the key ``dataset_json`` removed (see :func:`plan_files`)."""
    return plan_files(fingerprint, planner, gpu_memory_gb)[0]


def plan_files(fingerprint: Fingerprint, planner: str = "default",
               gpu_memory_gb: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plans, dataset.json): what nnU-Net leaves in ``nnUNet_preprocessed/<dataset>/`` after planning."""
    cls = planner_class(planner)
    target = PLANNERS[planner][2] if gpu_memory_gb is None else gpu_memory_gb
    if not 0 < target < math.inf:  # nnunetv2's planner would shrink the patch forever (a negative target) or fail
        raise ValueError(f"the GPU memory target must be a positive number of GB; got {target:g}")
    with tempfile.TemporaryDirectory(prefix="segmem-plan-") as tmp:
        raw, pre = Path(tmp, "raw"), Path(tmp, "preprocessed")
        (raw / DATASET).mkdir(parents=True)
        (pre / DATASET).mkdir(parents=True)
        (raw / DATASET / "dataset.json").write_text(json.dumps(fingerprint.dataset_json()))
        (pre / DATASET / "dataset_fingerprint.json").write_text(json.dumps(fingerprint.fingerprint_json()))
        from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner as dep

        # the planner module read nnUNet_raw / nnUNet_preprocessed from the environment when imported
        saved = dep.nnUNet_raw, dep.nnUNet_preprocessed
        dep.nnUNet_raw, dep.nnUNet_preprocessed = str(raw), str(pre)
        try:
            with _quiet():
                p = cls(DATASET, gpu_memory_target_in_gb=target)
                p.plan_experiment()
        except Exception as exc:  # noqa: BLE001 - nnunetv2 asserts and raises in many ways; say which, in one line
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ValueError(f"nnunetv2's {cls.__name__} cannot plan for this fingerprint ({fingerprint.source}): "
                             f"{type(exc).__name__}: {why}") from None
        finally:
            dep.nnUNet_raw, dep.nnUNet_preprocessed = saved
        # what nnunetv2 saved (JSON-fixed: numpy types made plain), not the in-memory dict
        plans = json.loads((pre / DATASET / f"{p.plans_identifier}.json").read_text())
        dataset = json.loads((pre / DATASET / "dataset.json").read_text())
    dataset.pop("dataset", None)  # the placeholder case list: no files exist
    dataset.pop("overwrite_image_reader_writer", None)
    from importlib.metadata import version

    # how the plans were made (nnU-Net ignores keys it does not know; its plans do not record the target)
    plans[PROVENANCE] = {"planner": PLANNERS[planner][1], "gpu_memory_target_in_gb": target,
                         "fingerprint": fingerprint.source, "nnunetv2": version("nnunetv2")}
    return plans, dataset


def vram_target_gb(planner: str) -> float:
    """nnU-Net's GPU memory target of a planner (8, 8, 24, 40 GB), which its ResEnc plans files record."""
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner {planner!r}; valid: {', '.join(PLANNERS)}")
    return PLANNERS[planner][2]
