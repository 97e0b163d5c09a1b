"""The paper's Tables 1 to 4 (training memory), re-run by prediction or measurement beside its figures.

Wang et al. measured on one 16 GB P100 with automatic mixed precision, and with gradient checkpointing
for meU-net; so every row here is an fp16-autocast training step, checkpointing as each architecture's
default (meU-net and the cascade's meU-nets on, U-net off). The paper's figures are "GB" read off the
GPU (they include the CUDA context and cuDNN workspaces, which the prediction leaves out); ours are
GiB of the allocator's peak reserved memory, or on CUDA the measured peaks. The ratios (meU-net over
U-net at equal input; each expansion over k = 1) are the comparison that does not depend on those
offsets.

Interpretations (see ``../shared/paper.md``): a meU-net row's patch is its *expanded* patch
(``size_refers_to=expanded``), and its label names both (``160^3 -> 240^3``: standard -> expanded; the
paper's "160^3" meU-net row is 112^3 -> 160^3, k rounded to 1.43 so that the standard patch is a
multiple of 16, said in its note); Table 2's k = 1.0 is the plain U-net; a cascade's memory is its
largest stage's.

Table 3's nnU-Net cascade has two readings (``CascadeReading``; ``bench paper --cascade-reading``, both by
default), differing in stage 1 only (stage 2 is 3d_cascade_fullres at 160^3 batch 4 in both, as the paper
states):

- ``paper``: the paper's words, stage 1 on the whole x2-downsampled volume (536 x 235 x 235) at batch 1,
  run at 544 x 256 x 256, the next multiples of nnU-Net's divisor 32 (nnU-Net pads the same way);
- ``planned``: stage 1 as nnU-Net itself plans it, the 3d_lowres configuration of the plans nnunetv2's
  default ExperimentPlanner makes for the paper's fingerprint (1072 x 470 x 470 at 2.95 um, one channel,
  3 classes, 24 training cases: ``reports/plans/paper_microct/``, written by ``bench plan``), at its
  planned patch and batch.

:func:`cascade_verdict` says which one the paper's 15.5 GB fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import architectures

from .. import record as R
from ..options import CascadeReading, GiB, Mode, Precision
from ..parallel import pmap
from ..sweep.config import RunConfig
from .fit import predicted_peak
from .stages import combine

PRECISION = Precision.FP16
EXPANDED = {"size_refers_to": "expanded"}
#: nnunetv2's default plans for the paper's microCT fingerprint (``bench plan --shape 1072x470x470 --spacing
#: 0.00295x0.00295x0.00295 --channels 1 --classes 3 --cases 24 -o ...``)
PAPER_PLANS = Path(__file__).resolve().parents[2] / "reports" / "plans" / "paper_microct" / "nnUNetPlans.json"
#: the GPU the paper measured on (GB)
PAPER_GPU_GB = 16.0
NNUNET_CASCADE_GB = 15.5


@dataclass(frozen=True)
class Part:
    """One trained network of a row: an architecture (or one of its stages) at a size and batch."""

    arch: str
    size: tuple[int, int, int]
    batch: int
    stage: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Row:
    table: str
    label: str
    paper_gb: float
    parts: tuple[Part, ...]
    note: str = ""
    ratio_to: str = ""  # label of the row this one is divided by (same table)
    key: str = field(default="")  # Table 3's nnU-Net cascade rows: the reading of stage 1 (CascadeReading)


def _p(arch: str, edge: int | tuple[int, int, int], batch: int, stage: str = "", **ov: Any) -> Part:
    size = (edge,) * 3 if isinstance(edge, int) else edge
    return Part(arch, size, batch, stage, tuple(sorted(ov.items())))  # type: ignore[arg-type]


ROWS: tuple[Row, ...] = (
    Row("1", "U-net, x2 downsampled, 240^3 b1", 8.0, (_p("unet", 240, 1),)),
    Row("1", "meU-net, x2 downsampled, 160^3 -> 240^3 b1", 4.0, (_p("meunet", 240, 1, **EXPANDED),),
        ratio_to="U-net, x2 downsampled, 240^3 b1"),
    Row("1", "U-net, 160^3 b4", 10.5, (_p("unet", 160, 4),)),
    Row("1", "meU-net, 112^3 -> 160^3 b4", 6.0, (_p("meunet", 160, 4, **EXPANDED),), ratio_to="U-net, 160^3 b4"),
    Row("1", "U-net, 240^3 b4", 30.0, (_p("unet", 240, 4),), note="paper: estimated, did not fit in 16 GB"),
    Row("1", "meU-net, 160^3 -> 240^3 b4", 13.0, (_p("meunet", 240, 4, **EXPANDED),), ratio_to="U-net, 240^3 b4"),
    Row("2", "k=1.0 (U-net), 160^3 b4", 10.5, (_p("unet", 160, 4),)),
    Row("2", "k=1.25, 160^3 -> 200^3 b4", 12.0, (_p("meunet", 160, 4, expansion=1.25),), ratio_to="k=1.0 (U-net), 160^3 b4"),
    Row("2", "k=1.5, 160^3 -> 240^3 b4", 13.0, (_p("meunet", 160, 4, expansion=1.5),), ratio_to="k=1.0 (U-net), 160^3 b4"),
    Row("2", "k=1.75, 160^3 -> 280^3 b4", 15.0, (_p("meunet", 160, 4, expansion=1.75),),
        ratio_to="k=1.0 (U-net), 160^3 b4"),
    # Table 3's nnU-Net cascade rows, one per reading: cascade_rows (paper_rows puts them here)
    Row("3", "proposed cascade (160^3 -> 240^3 and 160^3 -> 280^3, then 160^3, b4)", 15.0, (_p("cascade", 160, 4),)),
    Row("4", "U-net, 176^3 b4", 13.0, (_p("unet", 176, 4),)),
    Row("4", "meU-net, 160^3 -> 240^3 b4", 13.0, (_p("meunet", 240, 4, **EXPANDED),), ratio_to="U-net, 176^3 b4"),
)


def cascade_rows(readings: Sequence[CascadeReading] = tuple(CascadeReading)) -> tuple[Row, ...]:
    """Table 3's nnU-Net cascade, one row per reading of its stage 1 (see the module docstring)."""
    from architectures import nnunet_plans

    stage2 = _p("nnunet_cascade", 160, 4, stage="3d_cascade_fullres")
    out = []
    for reading in readings:
        if reading is CascadeReading.PAPER:
            out.append(Row("3", "nnU-Net cascade, paper's reading (536x235x235 as 544x256x256 b1, then 160^3 b4)",
                           NNUNET_CASCADE_GB, (_p("nnunet", (544, 256, 256), 1), stage2),
                           note="stage 1 is nnU-Net 3d_fullres on the whole x2-downsampled volume, padded to "
                                "multiples of 32; stage 2 is 3d_cascade_fullres at 160^3", key=reading.value))
        else:
            lowres = nnunet_plans.configuration(PAPER_PLANS, "3d_lowres")
            patch = "x".join(map(str, lowres.patch))
            full = nnunet_plans.configuration(PAPER_PLANS, "3d_cascade_fullres")
            out.append(Row("3", f"nnU-Net cascade, as nnU-Net plans it ({patch} b{lowres.batch}, then 160^3 b4)",
                           NNUNET_CASCADE_GB,
                           (_p(nnunet_plans.spec_name(PAPER_PLANS, "3d_lowres"), lowres.patch, lowres.batch), stage2),
                           note=f"stage 1 is nnunetv2's planned 3d_lowres for the paper's fingerprint ({patch} b"
                                f"{lowres.batch}, {lowres.class_name}, divisors {'x'.join(map(str, lowres.divisors))}; "
                                f"reports/plans/paper_microct); stage 2 as the paper states (nnU-Net would plan "
                                f"{'x'.join(map(str, full.patch))} b{full.batch})", key=reading.value))
    return tuple(out)


def paper_rows(readings: Sequence[CascadeReading] = tuple(CascadeReading)) -> tuple[Row, ...]:
    """Every row, Table 3's nnU-Net cascade once per reading asked for (first in Table 3)."""
    at = next(i for i, r in enumerate(ROWS) if r.table == "3")
    return ROWS[:at] + cascade_rows(readings) + ROWS[at:]


def cascade_verdict(df: pd.DataFrame, rows: Sequence[Row]) -> str:
    """Which reading of the nnU-Net cascade the paper's 15.5 GB fits: the one whose prediction is nearer
    (log ratio), each reading's stages, and whether each could run on the paper's 16 GB GPU at all."""
    readings = {r.label: r.key for r in rows if r.key}
    sub = df[df["configuration"].isin(list(readings))]
    if len(sub) == 0:
        return ""
    found = []
    for label, gib, stages in zip(sub["configuration"], sub["predicted_reserved_gib"], sub["predicted_stages_gib"]):
        gb = gib * GiB / 1e9
        fits = "fits" if gb <= PAPER_GPU_GB else "cannot fit"
        found.append((abs(math.log(gb / NNUNET_CASCADE_GB)), readings[label],
                      f"{gb:.1f} GB predicted (stages {stages} GiB), {gb / NNUNET_CASCADE_GB:.2f}x the paper's figure, "
                      f"{fits} its {PAPER_GPU_GB:g} GB GPU"))
    found.sort()
    text = "; ".join(f"reading {name!r}: {what}" for _, name, what in found)
    head = (f"nnU-Net cascade (Table 3, paper: {NNUNET_CASCADE_GB:g} GB): " if len(found) == 1 else
            f"nnU-Net cascade (Table 3): the paper's {NNUNET_CASCADE_GB:g} GB fits reading {found[0][1]!r} best. ")
    return head + text + " (predictions leave the CUDA context and cuDNN workspaces out)."


def part_configs(part: Part, backend: str) -> list[RunConfig]:
    """The run configurations a part is measured by (every stage of a multi-stage architecture)."""
    spec = architectures.spec(part.arch)
    ov = dict(part.overrides)
    stages = [part.stage] if part.stage else ([s.name for s in spec.train_stages(**ov)] if spec.stages else [""])
    return [RunConfig(part.arch, part.size, part.batch, Mode.TRAIN, backend, PRECISION, st, part.overrides,
                      arch_key=spec.key_name) for st in stages]


def patch_label(part: Part) -> str:
    """The part's patch in words, as every label names it (meU-net: ``112^3 -> 160^3``)."""
    return architectures.spec(part.arch).patch_label(part.size, "train", part.stage, **dict(part.overrides))


def size_note(part: Part) -> str:
    """What the spec says about the part's size (meU-net: k rounded when 160 / 1.5 is not a multiple of 16)."""
    spec, ov = architectures.spec(part.arch).stage(part.stage, **dict(part.overrides))
    return (spec.size_warning(part.size, spec.hparams(**ov)) or "") if spec.size_warning else ""


def predict_part(part: Part, figure: str) -> int:
    spec = architectures.spec(part.arch)
    sp, ov = spec.stage(part.stage, **dict(part.overrides))
    return predicted_peak(sp, ov, "train", PRECISION, figure)(part.size, part.batch)


def predictions(rows: Sequence[Row] | None = None) -> list[tuple[Part, str]]:
    """The predictions the rows need, each once (rows share parts: U-net 160^3 b4 is in Tables 1 and 2)."""
    rows = paper_rows() if rows is None else rows
    return list(dict.fromkeys((p, fig) for r in rows for p in r.parts for fig in ("reserved", "allocated")))


def _predict(job: tuple[Part, str]) -> int:
    return predict_part(*job)


def table(rows: Sequence[Row] | None = None, progress: Callable[[tuple[Part, str]], None] | None = None,
          measured: pd.DataFrame | None = None, jobs: int | None = None) -> pd.DataFrame:
    """One line per row: the paper's GB, our predicted reserved/allocated GiB, measured GiB (if
    ``measured`` records are given), and the paper's and our ratios. The predictions run on ``jobs``
    processes (default: every core); ``progress`` is called as each of :func:`predictions` ends."""
    rows = paper_rows() if rows is None else rows
    work = predictions(rows)
    peak = dict(zip(work, pmap(_predict, work, jobs, progress)))
    out = []
    for row in rows:
        rec: dict[str, Any] = {"table": row.table, "configuration": row.label, "paper_gb": row.paper_gb,
                               "predicted_reserved_gib": combine(peak[(p, "reserved")] for p in row.parts) / GiB,
                               "predicted_allocated_gib": combine(peak[(p, "allocated")] for p in row.parts) / GiB}
        # a row of several separately trained parts (the nnU-Net cascade's two stages): each one's figure
        rec["predicted_stages_gib"] = (" / ".join(f"{peak[(p, 'reserved')] / GiB:.1f}" for p in row.parts)
                                       if len(row.parts) > 1 else None)
        if measured is not None and len(measured):
            rec.update(_measured(row, measured))
        rec["note"] = "; ".join(n for n in (row.note, *map(size_note, row.parts)) if n)
        out.append(rec)
    df = pd.DataFrame(out)
    by_label = {(r.table, r.label): i for i, r in enumerate(rows)}
    for col, ratio in (("paper_gb", "paper_ratio"), ("predicted_reserved_gib", "predicted_ratio"),
                       ("measured_reserved_gib", "measured_ratio")):
        if col not in df:
            continue
        df[ratio] = [df[col][i] / df[col][by_label[(r.table, r.ratio_to)]] if r.ratio_to else None
                     for i, r in enumerate(rows)]
    return df


def _measured(row: Row, records: pd.DataFrame) -> dict[str, Any]:
    keys = [c.key() for p in row.parts for c in part_configs(p, "cuda")]
    rec = records[records[R.KEY].isin(keys)]
    if len(rec) < len(keys):
        return {"measured_status": "missing"}
    if (rec[R.STATUS] != R.OK).any():
        return {"measured_status": ", ".join(sorted(set(rec[R.STATUS])))}
    return {"measured_status": "ok",
            "measured_reserved_gib": combine(rec[R.PEAK_RESERVED]) / GiB,
            "measured_allocated_gib": combine(rec[R.PEAK_ALLOCATED]) / GiB,
            "measured_device_gib": combine(rec[R.NVML_PEAK]) / GiB if R.NVML_PEAK in rec else None}


def markdown(df: pd.DataFrame, device_note: str) -> str:
    from .report import markdown_table

    lines = [
        "# The paper's memory tables, re-run",
        "",
        "Wang et al., MIDL 2022, measured training memory on one 16 GB P100 with AMP (and gradient "
        "checkpointing for meU-net). Rows here: fp16-autocast training steps, each architecture's default "
        f"checkpointing. {device_note}",
        "",
        "Paper: GB as read from the GPU (includes the CUDA context and workspaces). Ours: GiB of the caching "
        "allocator's peak (prediction leaves the context out), so compare the ratios first.",
        "",
    ]
    for t, part in df.groupby("table", sort=True):
        lines += [f"## Table {t}", "", markdown_table(part.drop(columns=["table"])), ""]
    return "\n".join(lines)
