"""Memory regression from GPU-free predictions, which are deterministic on any machine.

The baseline (``reports/baseline/memory.csv``, committed, one row per configuration, sorted) holds
the predicted peak allocated and reserved bytes and the per-category breakdown at the peak for a
fixed grid: every architecture x two sizes (its CPU default and its paper default) x train and infer
x fp32 and fp16 autocast, plus every architecture whose default checkpoints (its spec's
``checkpointing`` override, whatever it is called) without checkpointing. :func:`compare` re-predicts
and reports growth of a total (peak allocated or reserved) beyond a tolerance (failure), configurations
that disappeared (failure), shrinkage (good news), categories of the breakdown that grew while the
totals did not (the peak moved: information, not a failure) and new configurations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import architectures

from .. import record as R
from ..measure.predict import predict
from ..measure.tracker import CATEGORIES
from ..parallel import pmap
from ..sweep.config import RunConfig
from ..sweep.expand import expand

BASELINE = Path("reports/baseline/memory.csv")
TOTALS = [R.PRED_ALLOCATED, R.PRED_RESERVED]
CATEGORY_COLUMNS = [R.pred_category(c) for c in CATEGORIES]
FIGURES = TOTALS + CATEGORY_COLUMNS
ID_COLUMNS = [R.KEY, R.ARCH, R.STAGE, R.MODE, R.PRECISION, R.SIZE, R.BATCH, R.OPTIONS]


def grid(names: Sequence[str] | None = None) -> list[RunConfig]:
    """The baseline grid (see the module docstring)."""
    configs: list[RunConfig] = []
    for name in names or architectures.names():
        spec = architectures.spec(name)
        sizes = [spec.cpu_sizes[0], spec.default_sizes[0]]
        configs += expand([name], sizes, [1], ["train", "infer"], ["fp32", "fp16"], "predict")
        if spec.checkpointing is not None and spec.hparams().get(spec.checkpointing):
            configs += expand([name], sizes, [1], ["train"], ["fp32", "fp16"], "predict", checkpointing=False)
    return configs


def predict_row(cfg: RunConfig, tamper: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One baseline row: the configuration's identity and its predicted figures."""
    spec, ov = architectures.spec(cfg.arch).stage(cfg.stage, **cfg.overrides_dict)
    ov.update(tamper or {})
    pred = predict(spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision, cfg.channels_last, with_memtracker=False,
                   with_flops=False)
    columns = R.config_columns(cfg)
    return {**{c: columns[c] for c in ID_COLUMNS}, **{f: int(pred[f]) for f in FIGURES}}


def _predict_row(job: tuple[RunConfig, Mapping[str, Any] | None]) -> dict[str, Any]:
    return predict_row(*job)


def predict_grid(configs: Sequence[RunConfig], tamper: Mapping[str, Mapping[str, Any]] | None = None,
                 progress: Callable[[RunConfig], None] | None = None, jobs: int | None = None) -> pd.DataFrame:
    """Predict each configuration, on ``jobs`` processes (default: every core; the rows are the same
    for any number). ``tamper`` adds build overrides per architecture without changing the
    configurations' keys (how tests plant a regression)."""
    work = [(cfg, (tamper or {}).get(cfg.arch)) for cfg in configs]
    rows = pmap(_predict_row, work, jobs, progress=(lambda job: progress(job[0])) if progress else None)
    return pd.DataFrame(rows, columns=ID_COLUMNS + FIGURES).sort_values(ID_COLUMNS[1:]).reset_index(drop=True)


def write(df: pd.DataFrame, path: Path = BASELINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n")


def read(path: Path = BASELINE) -> pd.DataFrame:
    """The baseline CSV; FileNotFoundError where there is none, ValueError (one line) where ``path`` is not
    a baseline (a folder, another CSV, another kind of file): checked before minutes of predictions."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no baseline at {path}; create it with `bench baseline --update`")
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder, not a baseline CSV")
    try:
        df = pd.read_csv(path, dtype={"stage": str, "options": str}, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise ValueError(f"{path} is not a baseline CSV: {str(exc).splitlines()[0]}") from None
    lacking = [c for c in ID_COLUMNS + FIGURES if c not in df.columns]
    if lacking:
        raise ValueError(f"{path} is not a baseline CSV (`bench baseline --update` writes one): it has no "
                         f"{', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''} column")
    return df


@dataclass
class Comparison:
    grown: list[dict[str, Any]] = field(default_factory=list)
    shrunk: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    shifted: list[dict[str, Any]] = field(default_factory=list)  # a category grew, no total did

    @property
    def failed(self) -> bool:
        return bool(self.grown or self.missing)


def _label(row: Mapping[str, Any]) -> str:
    stage = f"[{row['stage']}]" if row["stage"] else ""
    opts = json.loads(row["options"]) if row["options"] else {}
    extra = "".join(f" {k}={v}" for k, v in opts.items())
    return f"{row['arch']}{stage} {row['mode']} {row['size']} b{row['batch']} {row['precision']}{extra}"


def compare(baseline: pd.DataFrame, current: pd.DataFrame, tolerance: float = 0.005) -> Comparison:
    """Each figure of each configuration against the baseline. A total growing above ``tolerance``
    (relative) fails, and the categories of that configuration that grew are listed with it to name the
    cause; a category that grew while no total did is only the peak moving (``shifted``). A
    configuration in the baseline but not in ``current`` fails."""
    out = Comparison()
    cur = current.set_index("key")
    base = baseline.set_index("key")
    out.missing = [_label(base.loc[k]) for k in base.index if k not in cur.index]
    out.added = [_label(cur.loc[k]) for k in cur.index if k not in base.index]
    for key in base.index.intersection(cur.index):
        b, c = base.loc[key], cur.loc[key]
        entries = []
        for fig in FIGURES:
            old, new = int(b[fig]), int(c[fig])
            if old != new:
                entries.append({"config": _label(b), "figure": fig.removeprefix("pred_").removesuffix("_bytes"),
                                "baseline_bytes": old, "current_bytes": new,
                                "change": (new - old) / old if old else float("inf"), "total": fig in TOTALS})
        regressed = any(e["total"] and e["change"] > tolerance for e in entries)
        for e in entries:
            total = e.pop("total")
            if e["change"] < 0:
                out.shrunk.append(e)
            elif regressed and (total or e["change"] > tolerance):
                out.grown.append(e)
            elif not total and e["change"] > tolerance:
                out.shifted.append(e)
    return out


def compare_pytest_benchmark(a: Path, b: Path, tolerance: float = 0.005) -> Comparison:
    """Compare the ``*_bytes`` figures in ``extra_info`` of two saved pytest-benchmark runs."""

    def frame(path: Path) -> pd.DataFrame:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a saved pytest-benchmark run (JSON): {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or not all(
                isinstance(bm, dict) and "fullname" in bm and "name" in bm for bm in data["benchmarks"]):
            raise ValueError(f"{path} is not a saved pytest-benchmark run: no list of benchmarks, each with its "
                             "name and fullname (pytest --benchmark-json writes one)")
        rows = []
        for bm in data["benchmarks"]:
            figs = {k: v for k, v in bm.get("extra_info", {}).items() if k.endswith("_bytes") and v is not None}
            rows.append({"key": bm["fullname"], "arch": bm["name"], "stage": "", "mode": "", "precision": "",
                         "size": "", "batch": "", "options": "", **figs})
        return pd.DataFrame(rows)

    base, cur = frame(a), frame(b)
    figures = sorted((set(base.columns) & set(cur.columns)) - set(ID_COLUMNS))
    out = Comparison()
    cur_i, base_i = cur.set_index("key"), base.set_index("key")
    out.missing = [k for k in base_i.index if k not in cur_i.index]
    out.added = [k for k in cur_i.index if k not in base_i.index]
    for key in base_i.index.intersection(cur_i.index):
        for fig in figures:
            old, new = base_i.loc[key, fig], cur_i.loc[key, fig]
            if pd.isna(old) or pd.isna(new) or old == new:
                continue
            rel = (new - old) / old if old else float("inf")
            entry = {"config": key, "figure": fig, "baseline_bytes": int(old), "current_bytes": int(new), "change": rel}
            (out.grown if rel > tolerance else out.shrunk if rel < 0 else []).append(entry)
    return out
