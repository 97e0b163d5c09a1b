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
from ..options import CascadeReading, GiB, Mode, Precision, signed_percent
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
                      f"{gb:.1f} GB predicted ({gib:.2f} GiB, the largest of the stages' {stages} GiB), "
                      f"{gb / NNUNET_CASCADE_GB:.2f}x the paper's figure, "
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
                      arch_key=spec.key_name, arch_label=spec.short_name) for st in stages]


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
          measured: pd.DataFrame | None = None, jobs: int | None = None,
          peaks: dict[tuple[Part, str], int] | None = None) -> pd.DataFrame:
    """One line per row: the paper's GB, our predicted reserved/allocated GiB, measured GiB (if
    ``measured`` records are given), and the paper's and our ratios. The predictions run on ``jobs``
    processes (default: every core); ``progress`` is called as each of :func:`predictions` ends.
    ``peaks``: those predictions, made already (:func:`as_built_peaks`)."""
    rows = paper_rows() if rows is None else rows
    work = predictions(rows)
    peak = dict(zip(work, pmap(_predict, work, jobs, progress))) if peaks is None else peaks
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


# ----- readings: what the paper leaves unstated, each a parameter, every row under each ---------------------
#
# What the paper states: AMP, gradient checkpointing "on" for meU-net, one 16 GB P100, GB read off the GPU, and
# (its notebook) ``cudnn.benchmark = True``. What it does not state, and so is a parameter here: which modules
# meU-net checkpoints (every level of both paths, the encoder only, the expanded branch only, or none), whether
# its plain U-net (Table 2's k = 1.0 "is the same network and code") checkpoints too, whether its GB include
# cuDNN's benchmark workspaces and the CUDA context (nvidia-smi's figure), and the precision.

#: meU-net's checkpoint scopes (``none`` switches checkpointing off)
SCOPES = ("all", "encoder", "expanded", "none")
#: the CUDA context of the paper's setup as a labelled constant: PyTorch 1.x before CUDA 11.7 loaded every kernel
#: at start-up, about 1 GB (pytorch/pytorch#28394: 1008 MB after the first tensor on a Titan V, PyTorch 1.3;
#: #107667: "before CUDA 11.7 all kernels were loaded into the context ... which took >1000MB"; #28113:
#: 200-700 MB on other machines). Not a P100 measurement: no P100 trace exists here.
CONTEXT_GIB = 1.0
#: the CUDA version assumed for the paper's P100 when the device model gives the context: one before 11.7 (kernels
#: loaded eagerly), as PyTorch builds of 2021-2022 shipped (an assumption: the paper does not say)
PAPER_CUDA = "11.3"
#: the paper's GPU (bench.measure.gpus): its memory bounds cudnn.benchmark's workspaces
PAPER_GPU = "P100"


def context_gib() -> float:
    """The context a reading adds: the device model's P100 figure (bare context with eager loading plus a training
    step's kernels, ``bench.measure.device``) where it exists, else the labelled constant CONTEXT_GIB."""
    try:
        from ..measure.device import context_bytes
    except ImportError:
        return CONTEXT_GIB
    return context_bytes(PAPER_GPU, PAPER_CUDA, training=True) / GiB


#: rows whose GB the paper estimated rather than measured (left out of every reading's worst error)
ESTIMATED = frozenset({("1", "U-net, 240^3 b4")})
#: rows of architectures that are not the paper's own code (nnU-Net's cascade, run by nnunetv2); reported, and
#: the best reading is also named without them
FOREIGN = frozenset({"nnunet", "nnunet_cascade"})


@dataclass(frozen=True)
class Reading:
    """One reading of the paper's memory setup; the default is what ``table`` predicts (as built)."""

    scope: str = "all"  # what meU-net (and the cascade's stage-1 meU-nets) checkpoint: SCOPES
    unet_checkpointing: bool = False  # the plain U-nets (k = 1.0, Tables 1 and 4, the cascade's stage 2) too
    workspace: bool = False  # cudnn.benchmark's workspaces on the P100 (needs the device model, bench.measure.device)
    context: bool = False  # nvidia-smi's figure: + the CUDA context (context_gib())
    precision: str = PRECISION.value

    def label(self) -> str:
        return (f"meU-net ckpt {self.scope}, U-net ckpt {'on' if self.unet_checkpointing else 'off'}, "
                f"{self.precision}{', cudnn.benchmark workspace' if self.workspace else ''}"
                f"{f', + {context_gib():.2f} GiB context' if self.context else ''}")

    def overrides(self, arch: str) -> dict[str, Any]:
        """The architecture overrides that make this reading (none where it is the architecture's default)."""
        ckpt: dict[str, Any] = {} if self.scope == "all" else (
            {"checkpoint_scope": self.scope} if self.scope != "none" else {"checkpointing": False})
        unet = {"checkpointing": True} if self.unet_checkpointing else {}
        if arch == "meunet":
            return ckpt
        if arch == "unet":
            return unet
        if arch == "cascade":
            return ({f"stage1_{k}": v for k, v in ckpt.items()}
                    | ({"stage2_checkpointing": True} if self.unet_checkpointing else {}))
        return {}


def workspace_model_available() -> bool:
    """Whether cuDNN's workspaces can be predicted (the device model, ``bench.measure.device``)."""
    try:
        from ..measure import device  # noqa: F401
    except ImportError:
        return False
    return True


def readings(precision: str = PRECISION.value) -> list[Reading]:
    """Every combination of the parameters at ``precision`` (the workspace only where it can be predicted)."""
    workspaces = (False, True) if workspace_model_available() else (False,)
    return [Reading(s, u, w, c, precision) for s in SCOPES for u in (False, True) for w in workspaces for c in (False, True)]


Job = tuple[str, str, tuple[tuple[str, Any], ...], tuple[int, int, int], int, str]


def _stage_jobs(part: Part, reading: Reading) -> list[tuple[tuple, Job]]:
    """(dedup key, job) per trained stage of ``part`` under ``reading``: the key names the network that is
    traced (its spec and the overrides that differ from its defaults), so that Table 2's k = 1.75 row and the
    cascade's k = 1.75 stage are one prediction."""
    spec = architectures.spec(part.arch)
    ov = dict(part.overrides) | reading.overrides(part.arch)
    stages = [part.stage] if part.stage else ([s.name for s in spec.train_stages(**ov)] if spec.stages else [""])
    out = []
    for st in stages:
        sp, sov = spec.stage(st, **ov)
        defaults = sp.hparams()
        # the sample's tensors, not the size's name: meU-net's 240^3 expanded and 160^3 standard are one network
        shapes = tuple((t.name, t.crop, t.stride) for t in sp.layout(part.size, 1, 3, sp.hparams(**sov)))
        named = tuple(sorted((k, v) for k, v in sov.items() if defaults.get(k) != v and k != "size_refers_to"))
        key = (sp.name, named, shapes, part.batch, reading.precision)
        out.append((key, (part.arch, st, tuple(sorted(ov.items())), part.size, part.batch, reading.precision)))
    return out


def predict_job(job: Job) -> tuple[int, int, float | None]:
    """One traced training step: (peak allocated, peak reserved, peak reserved with cudnn.benchmark's
    workspaces on the P100, inf where that runs out of its memory, or None where the device model is missing)."""
    from ..measure.predict import trace
    from ..measure.tracker import replay

    arch, stage, ov, size, batch, precision = job
    sp, sov = architectures.spec(arch).stage(stage, **dict(ov))
    tracker, host, _ = trace(sp, sov, size, batch, "train", precision)
    start = tracker.marks["measured"]
    alloc = replay(tracker, host, start)
    with_ws = None
    if workspace_model_available():
        from ..measure.allocator import AllocatorOOM
        from ..measure.device import replay_device
        from ..measure.gpus import lookup

        room = lookup(PAPER_GPU).memory_bytes - int(context_gib() * GiB)
        try:  # the workspaces bounded by what the P100 has left, as cuDNN's search is
            with_ws = replay_device(tracker, host, start, True, capacity=room).model.peak_reserved
        except AllocatorOOM:  # the reading says the step runs out of the P100's memory: infinitely far off a
            with_ws = math.inf  # figure the paper measured (and "did not fit" where it estimated one)
    return alloc.peak_allocated, alloc.peak_reserved, with_ws


def reading_jobs(rows: Sequence[Row], reads: Sequence[Reading]) -> dict[tuple, Job]:
    return {k: j for r in reads for row in rows for p in row.parts for k, j in _stage_jobs(p, r)}


def predict_readings(rows: Sequence[Row], reads: Sequence[Reading], jobs: int | None = None,
                     progress: Callable[[Job], None] | None = None) -> dict[tuple, tuple[int, int, int | None]]:
    """Every distinct traced step the readings need, once each, on ``jobs`` processes."""
    work = reading_jobs(rows, reads)
    return dict(zip(work, pmap(predict_job, list(work.values()), jobs, progress)))


def reading_figure(row: Row, reading: Reading, peaks: dict[tuple, tuple[int, int, int | None]]) -> float:
    """The row's predicted GiB under ``reading``: its largest stage's reserved peak (with workspaces), plus the
    context."""
    idx = 2 if reading.workspace else 1
    stage_peaks = [peaks[k][idx] for p in row.parts for k, _ in _stage_jobs(p, reading)]
    return combine(stage_peaks) / GiB + (context_gib() if reading.context else 0.0)


def readings_table(rows: Sequence[Row], reads: Sequence[Reading],
                   peaks: dict[tuple, tuple[int, int, int | None]]) -> pd.DataFrame:
    """Long format: one line per reading and row, the predicted GiB and the error against the paper's GB."""
    out = []
    for i, reading in enumerate(reads):
        for row in rows:
            fig = reading_figure(row, reading, peaks)
            out.append({"reading": i, "reading_label": reading.label(), "table": row.table, "configuration": row.label,
                        "paper_gb": row.paper_gb, "predicted_gib": fig, "error": fig / row.paper_gb - 1,
                        "measured_by_paper": (row.table, row.label) not in ESTIMATED,
                        "paper_code": not any(p.arch in FOREIGN for p in row.parts)})
    return pd.DataFrame(out)


def reading_scores(long: pd.DataFrame) -> pd.DataFrame:
    """Per reading: the worst and median |error| over the rows the paper measured, with and without the rows
    of code that is not the paper's; sorted best first (by the worst error over the paper's own rows)."""
    rows = []
    for (i, label), part in long.groupby(["reading", "reading_label"], sort=False):
        measured = part[part["measured_by_paper"]]
        own = measured[measured["paper_code"]]
        worst = own.loc[own["error"].abs().idxmax()]
        rows.append({"reading": i, "reading_label": label,
                     "worst_abs_error_own_rows": worst["error"], "worst_row": f"T{worst['table']} {worst['configuration']}",
                     "median_abs_error_own_rows": own["error"].abs().median(),
                     "rows_within_10pct": f"{int((own['error'].abs() <= 0.10).sum())}/{len(own)}",
                     "worst_abs_error_all_measured": measured["error"].abs().max()})
    df = pd.DataFrame(rows)
    return df.iloc[df["worst_abs_error_own_rows"].abs().argsort()].reset_index(drop=True)


def readings_markdown(long: pd.DataFrame, scores: pd.DataFrame) -> str:
    """The readings as Markdown: the scores, then every row's figure and error under each reading (one column
    per reading, best first)."""
    from .report import markdown_table

    best = scores.iloc[0]
    wide = long.assign(cell=[f"{g:.2f} ({signed_percent(e, 0)})" for g, e in zip(long["predicted_gib"], long["error"])])
    wide = wide.pivot_table(index=["table", "configuration", "paper_gb"], columns="reading", values="cell",
                            aggfunc="first", sort=False)
    order = [c for c in scores["reading"] if c in wide.columns]
    wide = wide[order].rename(columns=lambda c: f"R{c}").reset_index()
    legend = [f"- R{r.reading}: {r.reading_label}" for r in scores.itertuples()]
    return "\n".join([
        "## Readings: which unstated settings reproduce the paper's memory",
        "",
        "Each reading is one choice of what the paper leaves open (meU-net's checkpoint scope, the U-net's "
        "checkpointing, cuDNN's benchmark workspaces, the CUDA context in nvidia-smi's figure, precision); every "
        "row is predicted under each. Errors: predicted GiB over the paper's GB, minus 1. The worst error is "
        "over the rows the paper measured (not its estimated 30 GB) of its own code (the nnU-Net cascade row is "
        "reported beside).",
        "",
        f"Best single reading: R{best.reading} ({best.reading_label}): worst error "
        f"{signed_percent(best.worst_abs_error_own_rows, 0)} "
        f"({best.worst_row}), {best.rows_within_10pct} rows within 10%; with the nnU-Net cascade row "
        f"{best.worst_abs_error_all_measured:.0%}.",
        "",
        markdown_table(scores),
        "",
        *legend,
        "",
        markdown_table(wide),
        "",
    ])


def as_built_peaks(rows: Sequence[Row], peaks: dict[tuple, tuple[int, int, int | None]]) -> dict[tuple[Part, str], int]:
    """:func:`table`'s predictions taken from the readings' (the default reading is the suite as built), so that
    ``bench paper`` traces each step once."""
    out = {}
    for part in {p for r in rows for p in r.parts}:
        stage = [peaks[k] for k, _ in _stage_jobs(part, Reading())]
        out[(part, "allocated")] = int(combine(s[0] for s in stage))
        out[(part, "reserved")] = int(combine(s[1] for s in stage))
    return out
