"""The memory prediction held against public GPU figures (``bench validate --published``).

One row per public figure, in :data:`FIGURES`: who published it (source and URL), on which GPU, with
which torch where stated, what was measured (``nvidia-smi``, ``allocated``: max_memory_allocated,
``reserved``: max_memory_reserved) and the configuration that rebuilds it. The table with the
predictions and their errors is ``reports/validation/published_memory.csv``; a test re-predicts it and
fails when a row's error grows.

Sources so far:

- nnU-Net's ``documentation/resenc_presets.md`` (github.com/MIC-DKFZ/nnUNet at commit 0e495086): the
  VRAM of the default configuration and the ResEnc M / L / XL presets "as reported by nvidia-smi"
  during training (run time "measured on 1x Nvidia A100 PCIe 40GB"). The datasets behind the figure
  are not stated; the presets' planners size patch and batch to a VRAM target, so the configuration is
  rebuilt by nnunetv2's own planners (ExperimentPlanner, nnUNetPlannerResEncM/L/XL, through
  :mod:`architectures.nnunet_planner`) on the CT-like fingerprint of issue 15 (500x512x512 voxels at
  1x0.78x0.78 mm, 300 cases, one channel, three classes), and the network is the one the plans name
  (:mod:`architectures.nnunet_plans`); with nnunetv2 2.8.1: default and M 128^3 batch 2, L 192^3 batch 2,
  XL 224x256x224 batch 2 (the table's patch and batch columns say what was rebuilt).
- nnU-Net issue #2996 (github.com/MIC-DKFZ/nnUNet/issues/2996, 2026-03-05): the ResEnc L preset
  re-trained on an A100 40 GB "same presets and patch size" as the paper, AMP on: allocated 21.5 GB,
  reserved 22.6 GB, nvidia-smi 23.5 GB. Rebuilt as the L preset above.

"GB" in these sources is read as GiB (nvidia-smi prints MiB; torch figures are commonly divided by
1024^3); read as 10^9 bytes every published figure would be 7 % smaller.

Every figure is predicted with nnU-Net's training as segmem runs it: fp16 autocast, deep supervision on,
``cudnn.benchmark`` on (nnU-Net sets it), the GPU's capacity from the catalogue. The constants of
:mod:`bench.measure.device` that no document states are *fitted* on the rows whose ``split`` is ``fit``
(:func:`fit`); every other row is held out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import pandas as pd

TABLE = Path("reports/validation/published_memory.csv")
#: the issue's target for every row: nvidia-smi level (and allocated where stated) within 10 % of the published figure
TARGET = 0.10
GiB = 2**30

PRESETS_COMMIT = "0e495086eb108ff79afe106291e8c15bd2f2bc3a"
PRESETS_URL = f"https://github.com/MIC-DKFZ/nnUNet/blob/{PRESETS_COMMIT}/documentation/resenc_presets.md"
PRESETS_SOURCE = "nnU-Net documentation/resenc_presets.md, table column 'VRAM' (as reported by nvidia-smi), row '{row}'"
ISSUE_2996 = "https://github.com/MIC-DKFZ/nnUNet/issues/2996"
PLANS_CT = ("nnunetv2 2.8.1 {planner} on the CT-like fingerprint 500x512x512 at 1x0.78x0.78 mm (300 cases, 1 channel, "
            "3 classes): {plan}")
NNUNET_RECIPE = "fp16 autocast, deep supervision, cudnn.benchmark on"


@dataclass(frozen=True)
class Figure:
    id: str
    source: str
    url: str
    gpu: str  # catalogue name (bench.measure.gpus)
    published_gpu: str
    torch: str  # as stated; "" when the source does not say
    measured: str  # nvidia-smi, allocated, reserved, or oom (the step ran out of memory on a GPU of published_gib)
    published_gib: float
    planner: str  # architectures.nnunet_planner.PLANNERS (default, resenc_m, resenc_l, resenc_xl), or "" (arch)
    configuration: str  # of the plans; or, without a planner, a segmem architecture (bench list)
    precision: str
    cudnn_benchmark: bool
    plans: str  # how the configuration is rebuilt
    split: str  # fit, or held-out
    #: without a planner: the architecture's overrides (JSON), patch, batch, input channels and classes
    overrides: str = "{}"
    patch: tuple[int, int, int] = (0, 0, 0)
    batch: int = 0
    in_channels: int = 1
    num_classes: int = 3


#: the CT-like dataset of issue 15 the presets are planned for (numpy axis order, as nnU-Net's)
CT_SHAPE, CT_SPACING, CT_CASES = (500, 512, 512), (1.0, 0.78, 0.78), 300
PLANS_CT = (f"nnunetv2's {{planner}} (architectures.nnunet_planner) on the CT-like fingerprint "
            f"{'x'.join(map(str, CT_SHAPE))} at {'x'.join(map(str, CT_SPACING))} mm ({CT_CASES} cases, 1 channel, "
            "3 classes), configuration 3d_fullres")
_PRESETS = (  # row of the documentation, planner, published GiB, split
    ("nnU-Net (org.) [1]", "default", 7.70, "fit"),
    ("nnU-Net ResEnc M", "resenc_m", 9.10, "held-out"),
    ("nnU-Net ResEnc L", "resenc_l", 22.70, "fit"),
    ("nnU-Net ResEnc XL", "resenc_xl", 36.60, "held-out"),
)
FIGURES: tuple[Figure, ...] = tuple(
    Figure(f"presets:{row.split(' [')[0]}", PRESETS_SOURCE.format(row=row), PRESETS_URL, "A100-40GB", "A100 PCIe 40GB",
           "", "nvidia-smi", gib, planner, "3d_fullres", "fp16", True, PLANS_CT.format(planner=planner), split)
    for row, planner, gib, split in _PRESETS
) + tuple(
    Figure(f"nnUNet#2996:{what}", f"nnU-Net issue #2996 (ResEnc L preset re-trained, AMP): '{label}'", ISSUE_2996,
           "A100-40GB", "A100 40 GB", "", what, gib, "resenc_l", "3d_fullres", "fp16", True,
           PLANS_CT.format(planner="resenc_l") + " (the issue's dataset is not stated; its patch is the paper's)", split)
    for what, label, gib, split in (("allocated", "Allocated CUDA memory ≈ 21.5 GB", 21.5, "held-out"),
                                    ("reserved", "Reserved CUDA memory ≈ 22.6 GB", 22.6, "held-out"),
                                    ("nvidia-smi", "Nvidia-smi ≈ 23.5 GB", 23.5, "fit"))
) + (
    Figure("MONAI#8042:oom", "MONAI issue #8042: SwinUNETR(img_size=128, in_channels=4, out_channels=3, feature_size=24, "
           "use_checkpoint=False) on BraTS 2023 4x128x128x128, batch 1: 'torch.OutOfMemoryError: CUDA out of memory. "
           "Tried to allocate 1.32 GiB. GPU 0 has a total capacity of 11.71 GiB'",
           "https://github.com/Project-MONAI/MONAI/issues/8042", "RTX-4070", "NVIDIA RTX 4070", "", "oom", 11.71, "",
           "monai:SwinUNETR", "fp32", False,
           "the issue's constructor arguments through monai:SwinUNETR; precision, loss and optimizer are not stated "
           "(predicted with fp32, Adam and segmem's loss, cudnn.benchmark off; fp16 autocast or benchmark on predict a fit "
           "too)", "held-out",
           json.dumps({"feature_size": 24, "use_checkpoint": False}), (128, 128, 128), 1, 4, 3),
)


@cache
def _rebuild(planner: str, configuration: str, overrides: str, patch: tuple[int, int, int], batch: int):  # noqa: ANN202
    """(spec, overrides, patch, batch, network class) of a figure's configuration: a planner's for the CT-like
    fingerprint, or a segmem architecture with its overrides."""
    import architectures

    if not planner:
        spec = architectures.spec(configuration)
        return spec, json.loads(overrides), patch, batch, configuration
    from architectures import nnunet_planner, nnunet_plans

    plans = nnunet_planner.plan(nnunet_planner.Fingerprint.from_median(CT_SHAPE, CT_SPACING, 1, 3, CT_CASES), planner)
    conf = nnunet_plans.configuration(plans, configuration)
    return nnunet_plans.plans_spec(plans, configuration), {}, tuple(conf.patch), conf.batch, conf.class_name


def rebuild(f: Figure):  # noqa: ANN201
    return _rebuild(f.planner, f.configuration, f.overrides, f.patch, f.batch)


@cache
def _trace(planner: str, configuration: str, overrides: str, patch: tuple[int, int, int], batch: int, precision: str,
           in_channels: int, num_classes: int):  # noqa: ANN202
    """The fake-tensor trace of a configuration's training step (figures of one configuration share it)."""
    from ..measure.predict import trace

    spec, ov, size, n, _ = _rebuild(planner, configuration, overrides, patch, batch)
    tracker, host, _ = trace(spec, ov, size, n, "train", precision, in_channels=in_channels, num_classes=num_classes)
    return tracker, host


def _traced(f: Figure):  # noqa: ANN202
    return _trace(f.planner, f.configuration, f.overrides, f.patch, f.batch, f.precision, f.in_channels, f.num_classes)


def predict_figure(f: Figure, factor: float | None = None, kernels: int | None = None) -> dict:
    """What the model predicts for one figure, with the workspace ``factor`` and context ``kernels`` given
    (default: the fitted constants of bench.measure.device). ``pred_gib``: the measured quantity in GiB at the
    GPU's capacity (None where the model runs out of memory there); for an ``oom`` figure the nvidia-smi-level
    need without a capacity, and ``oom`` whether the model runs out at the published capacity."""
    from ..measure import gpus
    from ..measure.device import context_bytes, run_device

    tracker, host = _traced(f)
    context = context_bytes(f.gpu, None, training=True, kernels=kernels)
    total = f.published_gib * GiB if f.measured == "oom" else gpus.lookup(f.gpu).memory_bytes
    # the peaks over the whole traced run (build, the benchmark's first step, the step after it): a figure read
    # during training (nvidia-smi, max_memory_* without a reset) counts the first step's candidate workspaces
    run = run_device(tracker, host, 0, f.cudnn_benchmark, context, int(total), factor=factor)
    dev, oom = run.replay, (None if run.oom is None else str(run.oom))
    if oom is not None and f.measured != "oom":
        return {"pred_gib": None, "pred_note": oom}
    value = {"allocated": dev.model.peak_allocated, "reserved": dev.model.peak_reserved}.get(
        f.measured, run.nvidia_smi)
    note = f"context {context / GiB:.2f} GiB, largest workspace {dev.largest_workspace / GiB:.2f} GiB"
    if f.measured == "oom":
        note = f"predicted {'OOM (' + oom + ')' if oom else 'to fit'}; " + note
    return {"pred_gib": value / GiB, "pred_note": note, "oom": oom is not None}


def rows(figures: tuple[Figure, ...] = FIGURES) -> pd.DataFrame:
    """The figures with the configuration each is rebuilt as (from nnunetv2's plans where planned)."""
    df = pd.DataFrame([asdict(f) for f in figures])
    built = [rebuild(f) for f in figures]
    df["network"] = [b[4] for b in built]
    df["patch"] = ["x".join(map(str, b[2])) for b in built]
    df["batch"] = [b[3] for b in built]
    return df


def predict_rows(figures: tuple[Figure, ...] = FIGURES, factor: float | None = None, kernels: int | None = None,
                 progress: Callable[[str], None] = lambda _s: None) -> pd.DataFrame:
    out = []
    for f in figures:
        progress(f.id)
        out.append(predict_figure(f, factor, kernels))
    df = rows(figures)
    df["pred_gib"] = [p["pred_gib"] for p in out]
    df["error"] = df["pred_gib"] / df["published_gib"] - 1
    # an oom figure is met when the model runs out at that capacity (error 0); else the error says by how much the
    # predicted need falls short of the capacity
    oom = df["measured"] == "oom"
    df.loc[oom, "error"] = [0.0 if p.get("oom") else min(e, 0.0) for p, e in zip(
        (p for p, o in zip(out, oom, strict=True) if o), df.loc[oom, "error"], strict=True)]
    df["pred_note"] = [p["pred_note"] for p in out]
    # in words, since an oom figure's small error can hide that the model says "fits" where the GPU ran out
    df["verdict"] = [("met: out of memory" if p.get("oom") else "missed: predicted to fit") if m == "oom"
                     else ("within 10%" if abs(e) <= TARGET else "missed: off by more than 10%")
                     for p, m, e in zip(out, df["measured"], df["error"], strict=True)]
    return df


def fit(figures: tuple[Figure, ...] = FIGURES, step: float = 0.05, top: float = 6.0) -> tuple[float, int]:
    """The constants no document states, from the ``fit`` rows only: the kernels a training step loads into the
    context (a fit nvidia-smi figure minus the reserved figure of the same source and configuration, minus the
    bare context; mean over such pairs), then the workspace factor (grid of ``step`` up to ``top``) minimising
    the squared log error of the fit rows."""
    import math

    from ..measure.device import context_figure

    fits = [f for f in figures if f.split == "fit"]
    same = {(f.url, f.planner, f.configuration, f.measured): f for f in figures}
    pairs = [(f, same[(f.url, f.planner, f.configuration, "reserved")]) for f in fits
             if f.measured == "nvidia-smi" and (f.url, f.planner, f.configuration, "reserved") in same]
    if not pairs:
        raise ValueError("no fit row states both nvidia-smi and reserved: the context's kernels cannot be fitted")
    kernels = round(sum((s.published_gib - r.published_gib) * GiB - context_figure(s.gpu).nbytes
                        for s, r in pairs) / len(pairs) / 2**20) * 2**20

    def loss(factor: float) -> float:
        errs = [predict_figure(f, factor, kernels)["pred_gib"] for f in fits]
        return sum(math.log(p / f.published_gib) ** 2 if p else 1e9 for p, f in zip(errs, fits, strict=True))

    grid = [round(i * step, 4) for i in range(int(top / step) + 1)]
    return min(grid, key=loss), kernels


def summary(pred: pd.DataFrame) -> pd.DataFrame:
    """Median and worst absolute error per split and measured quantity."""
    out = []
    for (split, what), d in pred.groupby(["split", "measured"], sort=True):
        e = d["error"].abs()
        out.append({"split": split, "measured": what, "rows": len(d), "median_abs_error": e.median(),
                    "worst_abs_error": e.max()})
    return pd.DataFrame(out)
