"""The paper's Dice ranking (cascade >= meU-net >= U-net), re-measured on the built-in phantom at equal memory.

What the paper states (Wang et al., MIDL 2022; ``../shared/paper.md``): at equal GPU memory (Table 4,
13 GB) U-net trains 176^3 patches where meU-net trains 160^3 -> 240^3 (k = 1.5), batch 4; the proposed
cascade (two stage-1 meU-nets, k = 1.5 and 1.75, then the post-concatenation U-net, all on 160^3
standard patches, batch 4) takes 15 GB (Table 3). Test Dice mid-gut / hind-gut: U-net 160^3 .938 / .672
and meU-net 160^3 -> 240^3 .940 / .741 (Table 1), cascade .948 / .768 (Table 3).

Our reading, scaled down for a CPU: meU-net and the cascade keep the paper's shape (k = 1.5; k = 1.5
and 1.75 then stage 2, each architecture's default checkpointing) on a ``edge``^3 standard patch; the
U-net gets the box of the largest volume (sides multiples of its divisor 16, between ``edge`` and the
twice ``edge``) whose *predicted* CUDA peak reserved memory is within meU-net's, at the runs' own
precision: that is "equal memory" (Table 4's U-net is a cube because 176 is a multiple of 16; at a
32^3 scale the next cube, 48^3, is 3.4 x the voxels, so a box keeps the comparison equal). The cascade
is not squeezed into meU-net's memory: as in the paper, it is the same standard patch with a larger
stage-1 expansion, and its predicted memory (its largest stage's) is printed beside the paper's 15/13.

Every training is a ``bench run --dice`` configuration of the sweep engine (one worker process per
configuration, records in the results store, resumable); an iteration budget makes each run
deterministic for its seed, so mean and spread over seeds are the run-to-run variation of
initialisation and patch sampling, not of the machine's speed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

import architectures
from architectures import Shape

from .. import record as R
from ..options import Backend, GiB, Mode, Precision
from ..sweep.config import RunConfig
from ..sweep.expand import expand
from .fit import predicted_peak

#: the paper's test Dice (mid-gut, hind-gut) of each compared architecture, and where it is printed
PAPER_DICE = {
    "unet": ((0.938, 0.672), "Table 1, U-net 160^3 b4 (Table 4's 176^3 row has no Dice)"),
    "meunet": ((0.940, 0.741), "Table 1, meU-net 160^3 -> 240^3 b4"),
    "cascade": ((0.948, 0.768), "Table 3, proposed cascade"),
}
#: the paper's GB of each (Table 4: U-net 176^3 and meU-net at 13 GB; Table 3: the cascade at 15 GB)
PAPER_GB = {"unet": 13.0, "meunet": 13.0, "cascade": 15.0}
#: the ranking the paper reports, best first
PAPER_ORDER = ("cascade", "meunet", "unet")
CLASSES = ("mid_gut", "hind_gut")


@dataclass(frozen=True)
class Scale:
    """How far the paper's setting is scaled down: the standard patch's edge (paper 160), the batch
    (paper 4), the iterations per stage (paper: early stopping after ~30 epochs) and the seeds."""

    edge: int = 16
    batch: int = 2
    iterations: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)
    #: the phantom at half the default's edges, so that a 16^3 patch spans a third of its short side, as the
    #: paper's 160^3 does of its 470 voxels (and the default phantom's of a 32^3 patch)
    data: str = "phantom:64x48x48"
    precision: str = Precision.FP32.value  # the CPU trains in fp32; the equal-memory prediction uses it too

    def describe(self) -> str:
        return (f"standard patch {self.edge}^3 (paper 160^3), batch {self.batch} (paper 4), {self.iterations} "
                f"iterations per stage, seeds {', '.join(map(str, self.seeds))}, data {self.data}, {self.precision}")


def peak_bytes(arch: str, size: Shape, batch: int, precision: str) -> int:
    """Predicted CUDA peak reserved bytes of a training step (a cascade: its largest stage)."""
    return predicted_peak(architectures.spec(arch), {}, Mode.TRAIN.value, precision)(size, batch)


def equal_memory_box(budget: int, edge: int, batch: int, precision: str, top: int | None = None) -> tuple[Shape, int]:
    """The U-net box of most voxels (then the most cubic; the longest side first, along the phantom's long
    axis) whose predicted peak is within ``budget``, sides multiples of 16 from ``edge`` to ``top``."""
    divisor = architectures.spec("unet").size_divisor(Mode.TRAIN.value)
    top = top or 2 * edge
    sides = range(edge, top + 1, divisor)
    boxes = sorted({tuple(sorted(b, reverse=True)) for b in itertools.product(sides, repeat=3)},
                   key=lambda b: (-b[0] * b[1] * b[2], b[0] - b[2]))
    for box in boxes:
        peak = peak_bytes("unet", box, batch, precision)  # type: ignore[arg-type]
        if peak <= budget:
            return box, peak  # type: ignore[return-value]
    raise ValueError(f"no U-net box of sides {edge}..{top} fits meU-net's {budget / GiB:.3g} GiB at batch {batch}")


@dataclass(frozen=True)
class Plan:
    """What each architecture trains, and its predicted memory (bytes)."""

    sizes: dict[str, Shape]
    peaks: dict[str, int]


def plan(scale: Scale) -> Plan:
    """The equal-memory plan: meU-net's predicted peak is the budget the U-net's box must fit."""
    std = (scale.edge,) * 3
    budget = peak_bytes("meunet", std, scale.batch, scale.precision)
    box, unet_peak = equal_memory_box(budget, scale.edge, scale.batch, scale.precision)
    return Plan({"unet": box, "meunet": std, "cascade": std},
                {"unet": unet_peak, "meunet": budget, "cascade": peak_bytes("cascade", std, scale.batch, scale.precision)})


def configs(scale: Scale, the_plan: Plan, backend: str = Backend.CPU.value) -> list[RunConfig]:
    """The Dice runs, longest first (so that parallel workers finish together): one per architecture and
    seed (a cascade's Dice run trains all its stages in the record of its last stage)."""
    out = []
    for arch in PAPER_ORDER:
        for seed in scale.seeds:
            dice = {"data": scale.data, "train_minutes": None, "train_iterations": scale.iterations,
                    "weighting": "centre", "seed": seed, "inferer": "segmem"}
            out += [c for c in expand([arch], [the_plan.sizes[arch]], [scale.batch], [Mode.TRAIN], [scale.precision],
                                      backend, dice=dice) if c.dice]
    return out


def per_seed(records: pd.DataFrame, cfgs: Sequence[RunConfig], the_plan: Plan) -> pd.DataFrame:
    """One row per architecture and seed from the store's records of ``cfgs`` (missing ones: status missing)."""
    by_key = records.set_index(R.KEY) if len(records) else pd.DataFrame()
    rows = []
    for c in cfgs:
        rec = by_key.loc[c.key()] if c.key() in by_key.index else None
        row = {"arch": c.arch, "seed": c.seed, "patch": architectures.spec(c.arch).patch_label(
                   the_plan.sizes[c.arch], Mode.TRAIN.value), "batch": c.batch, "iterations_per_stage": c.train_iterations,
               "predicted_peak_gib": the_plan.peaks[c.arch] / GiB}
        if rec is None:
            row["status"] = "missing"
        else:
            ok = rec.get(R.STATUS) == R.OK and rec.get(R.DICE_STATUS) == R.OK
            why = rec.get(R.DICE_ERROR) or rec.get(R.ERROR)
            row["status"] = "ok" if ok else f"{rec.get(R.STATUS)}/{rec.get(R.DICE_STATUS)}: {why}"
            for cls in CLASSES:
                row[f"dice_{cls}"] = rec.get(R.dice_class(cls)) if ok else None
            row["train_iterations"] = rec.get(R.TRAIN_ITERATIONS)
            row["train_time_s"] = rec.get(R.TRAIN_TIME)
        rows.append(row)
    return pd.DataFrame(rows)


def summary(seeds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per architecture, the paper's Dice and GB beside."""
    rows = []
    for arch in PAPER_ORDER:
        part = seeds[seeds["arch"] == arch]
        ok = part[part["status"] == "ok"]
        (paper_mid, paper_hind), source = PAPER_DICE[arch]
        row = {"arch": arch, "patch": part["patch"].iloc[0] if len(part) else "", "seeds_done": f"{len(ok)}/{len(part)}",
               "predicted_peak_gib": part["predicted_peak_gib"].iloc[0] if len(part) else None,
               "paper_gb": PAPER_GB[arch]}
        for cls, paper in zip(CLASSES, (paper_mid, paper_hind)):
            col = f"dice_{cls}"
            vals = ok[col].astype(float) if col in ok else pd.Series(dtype=float)
            row[f"{col}_mean"] = vals.mean() if len(vals) else None
            row[f"{col}_std"] = vals.std(ddof=1) if len(vals) > 1 else None
            row[f"paper_{col}"] = paper
        row["paper_source"] = source
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(summ: pd.DataFrame, seeds: pd.DataFrame) -> list[str]:
    """Whether cascade >= meU-net >= U-net holds, per class: on the means, and seed by seed."""
    lines = []
    means = summ.set_index("arch")
    for cls in CLASSES:
        m = means[f"dice_{cls}_mean"]
        if m.isna().any():
            lines.append(f"{cls.replace('_', '-')}: not every architecture has a Dice yet")
            continue
        order = sorted(PAPER_ORDER, key=lambda a: -m[a])
        holds = all(m[a] >= m[b] for a, b in zip(PAPER_ORDER, PAPER_ORDER[1:]))
        per = seeds[seeds["status"] == "ok"].pivot(index="seed", columns="arch", values=f"dice_{cls}").dropna()
        n_hold = int(sum(all(r[a] >= r[b] for a, b in zip(PAPER_ORDER, PAPER_ORDER[1:])) for _, r in per.iterrows()))
        lines.append(f"{cls.replace('_', '-')}: {'holds' if holds else 'does not hold'} on the means "
                     f"(ours: {' > '.join(f'{a} {m[a]:.3f}' for a in order)}); holds in {n_hold} of {len(per)} seeds")
    return lines


def markdown(summ: pd.DataFrame, seeds: pd.DataFrame, scale: Scale, command: str) -> str:
    from .report import markdown_table

    return "\n".join([
        "# The paper's Dice ranking on the phantom, at equal memory",
        "",
        f"Command: `{command}`",
        "",
        f"Scale: {scale.describe()}. U-net's box is the largest whose predicted CUDA peak reserved memory is "
        "within meU-net's (equal memory, as Table 4); the cascade is the paper's (same standard patch, its "
        "memory its largest stage's; the paper gives 15 GB against meU-net's 13 GB).",
        "",
        "Paper's ranking: cascade >= meU-net >= U-net (mid-gut and hind-gut). Ours:",
        "",
        *[f"- {line}" for line in verdict(summ, seeds)],
        "",
        "## Mean and standard deviation over seeds",
        "",
        markdown_table(summ),
        "",
        "## Per seed",
        "",
        markdown_table(seeds),
        "",
    ])
