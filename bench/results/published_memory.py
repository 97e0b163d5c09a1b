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
- MONAI issue #8042: SwinUNETR out of memory on a 12 GB RTX 4070 (an ``oom`` row).
- MONAI research-contributions ``UNETR/BTCV/README.md`` (commit ae00f99, July 2021, Apache-2.0): "Batch sizes of 2
  and 1 require 16G and 9G VRAM respectively on 32G V100 GPUs", the network, crops and optimizer from the same
  commit's code (UNETR with 16 heads, 2 or 1 volumes x 4 crops of 96^3, AdamW, fp32, cudnn.benchmark on). Read as
  the process's whole memory (nvidia-smi level); rounded to whole GB, and the run's periodic validation is in it.
- nnU-Net issue #876: nnU-Net v1's 3d_fullres plans for BraTS (4 channels, 128^3, batch 2, printed in the issue)
  out of memory on a 6 GB RTX 3060 laptop GPU (an ``oom`` row).
- MONAI tutorials' ``automatic_mixed_precision.ipynb`` (Apache-2.0): ``torch.cuda.memory_summary()`` printed in the
  committed outputs of three runs (V100 with torch 1.6, V100 with NGC 20.08, A100 80GB PCIe), each with AMP and in
  fp32: the peak of allocated memory over the whole run, the network and training from the same notebook.

A source's own training where it differs from the architecture's recipe is the figure's ``recipe``; its CUDA
version (stated, or the newest its date allows) sets the context: eager before CUDA 11.7.

"GB" in these sources is read as GiB (nvidia-smi prints MiB; torch figures are commonly divided by
1024^3); read as 10^9 bytes every published figure would be 7 % smaller.

Every figure is predicted with its source's training: the nnU-Net rows with nnU-Net's as segmem runs it (fp16
autocast, deep supervision on, ``cudnn.benchmark`` on: nnU-Net sets it), the others with their architecture's recipe
and the changes the source states (the figure's ``precision``, ``cudnn_benchmark`` and ``recipe``); the GPU's
capacity from the catalogue. The constants of
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
#: MONAI tutorials' automatic_mixed_precision.ipynb (Apache-2.0): the commits whose outputs print memory_summary()
AMP_TUTORIAL = "https://github.com/Project-MONAI/tutorials/blob/{commit}/{path}"
#: its network: monai.networks.nets.UNet(3 dims, 1 -> 2, channels 16..256, strides 2, 2 residual units, batch norm)
AMP_UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"}
AMP_PLANS = ("the notebook at commit {commit} ({software}): UNet(spatial_dims 3, 1 -> 2 channels, channels (16, 32, 64, 128, "
             "256), strides 2, num_res_units 2, batch norm) through monai:UNet; batch_size 2 x RandCropByPosNegLabeld "
             "num_samples 4 = 8 crops of {patch}; Adam, DiceLoss (predicted with segmem's CE+Dice), cudnn.benchmark "
             "not set (off), data cached on the CPU. The figure is memory_summary()'s peak of allocated memory after the "
             "whole run, each epoch's sliding-window validation ({roi}, 4 windows a batch, no_grad) included: the model "
             "predicts the training step, which its own inference figure of those windows stays below")
_AMP_RUNS = (  # commit, path, GPU (catalogue, printed), torch as printed, software, patch, validation window,
    # {precision: peak MiB}
    ("52013d70400a71457d98891f3f865fc81ee7a23e", "automatic_mixed_precision.ipynb", "V100-PCIe", "Tesla V100-PCIE-32GB",
     "1.6.0", "PyTorch 1.6.0, MONAI 0.2.0, printed", (96, 96, 96), "160^3", {"fp16": 1152, "fp32": 1730}),
    ("a7f97e3553d68ee2f3bdd3fd107b375e9b2460e1", "automatic_mixed_precision.ipynb", "V100-PCIe", "Tesla V100-PCIE-32GB",
     "", "NGC PyTorch 20.08 container, CUDA 11", (128, 128, 96), "160x160x128", {"fp16": 1876, "fp32": 2788}),
    ("bb333155b2c213c6535a573da42c4d3d22f713bd", "acceleration/automatic_mixed_precision.ipynb", "A100-80GB-PCIe",
     "NVIDIA A100 80GB PCIe", "", "January 2023, versions not printed", (128, 128, 96), "160x160x128",
     {"fp16": 1829, "fp32": 2892}),
)
UNETR_BTCV_COMMIT = "ae00f99feaa9516f50e9ca316aa91f2992c66398"
UNETR_BTCV_URL = (f"https://github.com/Project-MONAI/research-contributions/blob/{UNETR_BTCV_COMMIT}/UNETR/BTCV/"
                  "README.md")
#: UNETR/BTCV's network at that commit (networks/unetr.py, its __main__.py's defaults: 16 heads, MONAI's 12;
#: pos_embed "perceptron", MONAI's proj_type now; res_block always, conv_block off), as monai.networks.nets.UNETR's
UNETR_BTCV = {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 16, "proj_type": "perceptron",
              "norm_name": "instance", "conv_block": False, "res_block": True, "dropout_rate": 0.0}
UNETR_BTCV_PLANS = ("UNETR/BTCV at commit ae00f99 (its README, __main__.py and utils/data_utils.py; MONAI 0.6.dev2127, "
                    "July 2021: torch 1.9, CUDA 11.1 at most): UNETR(1 -> 14 classes, img_size 96^3, its arguments above) "
                    "through monai:UNETR; --batch_size={b} x RandCropByPosNegLabeld num_samples 4 = {n} crops of 96^3 a "
                    "step; AdamW (lr 1e-4, weight decay 1e-5), DiceCE (predicted with segmem's CE+Dice), fp32, "
                    "cudnn.benchmark on; the figure is rounded to whole GB and the run's validation (sliding window, "
                    "4 windows a batch, every 500 steps) is inside it")
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
    #: the source's training where it is not the architecture's recipe (JSON of Recipe fields: optimizer, ...)
    recipe: str = "{}"
    #: the CUDA version the source ran, where stated or implied by its date ("": a current one); before 11.7 the
    #: context loads every kernel at start (bench.measure.device.lazy_loading)
    cuda: str = ""


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
) + tuple(
    Figure(f"UNETR-BTCV:batch {b}", f"MONAI research-contributions UNETR/BTCV/README.md: 'Batch sizes of 2 and 1 require "
           f"16G and 9G VRAM respectively on 32G V100 GPUs' (batch {b}: {gib:g}G)", UNETR_BTCV_URL, "V100-SXM2",
           "V100 32GB", "", "nvidia-smi", gib, "", "monai:UNETR", "fp32", True, UNETR_BTCV_PLANS.format(b=b, n=4 * b),
           "held-out", json.dumps(UNETR_BTCV), (96, 96, 96), 4 * b, 1, 14,
           json.dumps({"optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-5}), "11.1")
    for b, gib in ((2, 16.0), (1, 9.0))
) + (
    Figure("nnUNet#876:oom", "nnU-Net issue #876: nnUNetTrainerV2 3d_fullres on BraTS (Task001, 4 modalities, 3 classes "
           "and background), plans printed in the issue: batch 2, patch 128x128x128, 5 poolings of 2, 3x3x3 "
           "convolutions; 'I am using RTX3060, 16GB RAM, 6GB VRam to train the model and received RuntimeError'",
           "https://github.com/MIC-DKFZ/nnUNet/issues/876", "RTX-3060-Laptop", "RTX 3060 6 GB (laptop)", "", "oom", 6.0,
           "", "nnunet", "fp16", True,
           "the issue's plans as segmem's nnunet (PlainConvUNet, 6 stages of 32 to 320 features, nnU-Net v1's "
           "Generic_UNet of those plans) by nnU-Net's recipe; the capacity is the card's 6 GB as stated (CUDA reports "
           "a little less); nnU-Net v1 of December 2021 ran torch 1.10 (CUDA 11.3 at most)",
           "held-out", "{}", (128, 128, 128), 2, 4, 4, "{}", "11.3"),
) + tuple(
    Figure(f"MONAI-AMP-tutorial:{commit[:8]} {prec}",
           f"MONAI tutorials automatic_mixed_precision.ipynb at {commit[:8]}: torch.cuda.memory_summary() on '{printed}' "
           f"after the {'AMP' if prec == 'fp16' else 'fp32'} run, 'Allocated memory' Peak Usage '{mib} MB'",
           AMP_TUTORIAL.format(commit=commit, path=path), gpu, printed, torch, "allocated", mib / 1024, "",
           "monai:UNet", prec, False,
           AMP_PLANS.format(commit=commit[:8], software=software, patch="x".join(map(str, patch)), roi=roi),
           "held-out", json.dumps(AMP_UNET), patch, 8, 1, 2)
    for commit, path, gpu, printed, torch, software, patch, roi, peaks in _AMP_RUNS for prec, mib in peaks.items()
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
           in_channels: int, num_classes: int, recipe: str = "{}"):  # noqa: ANN202
    """The fake-tensor trace of a configuration's training step (figures of one configuration share it), by the
    architecture's recipe with ``recipe``'s changes (JSON)."""
    import dataclasses

    from ..measure.predict import trace

    spec, ov, size, n, _ = _rebuild(planner, configuration, overrides, patch, batch)
    spec = dataclasses.replace(spec, recipe=spec.recipe.with_overrides(json.loads(recipe)))
    tracker, host, _ = trace(spec, ov, size, n, "train", precision, in_channels=in_channels, num_classes=num_classes)
    return tracker, host


def _traced(f: Figure):  # noqa: ANN202
    return _trace(f.planner, f.configuration, f.overrides, f.patch, f.batch, f.precision, f.in_channels, f.num_classes,
                  f.recipe)


def predict_figure(f: Figure, factor: float | None = None, kernels: int | None = None) -> dict:
    """What the model predicts for one figure, with the workspace ``factor`` and context ``kernels`` given
    (default: the fitted constants of bench.measure.device). ``pred_gib``: the measured quantity in GiB at the
    GPU's capacity (None where the model runs out of memory there); for an ``oom`` figure the nvidia-smi-level
    need without a capacity, and ``oom`` whether the model runs out at the published capacity."""
    from ..measure import gpus
    from ..measure.device import context_bytes, run_device

    tracker, host = _traced(f)
    context = context_bytes(f.gpu, f.cuda or None, training=True, kernels=kernels)
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
    """Median and worst absolute error per split and measured quantity (``oom`` rows apart: :func:`oom_line`)."""
    out = []
    for (split, what), d in pred[pred["measured"] != "oom"].groupby(["split", "measured"], sort=True):
        e = d["error"].abs()
        out.append({"split": split, "measured": what, "rows": len(d), "median_abs_error": e.median(),
                    "worst_abs_error": e.max()})
    return pd.DataFrame(out)


def oom_line(pred: pd.DataFrame) -> str | None:
    """How many ``oom`` rows the model meets (runs out of memory at the published capacity): their error is no
    distance to a figure but whether the verdict holds, so it stays out of the error statistics."""
    oom = pred[pred["measured"] == "oom"]
    if oom.empty:
        return None
    met = int(oom["verdict"].str.startswith("met").sum())
    return f"oom rows (the GPU ran out of memory): the model runs out too on {met} of {len(oom)}"
