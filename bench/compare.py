"""Memory regression from GPU-free predictions, which are deterministic on any machine.

The baseline (``reports/baseline/memory.csv``, committed, one row per configuration, sorted) holds
the predicted peak allocated and reserved bytes and the per-category breakdown at the peak for a
fixed grid: every architecture x two sizes (its CPU default and its paper default) x train and infer
x fp32 and fp16 autocast, plus meU-net without checkpointing. :func:`compare` re-predicts and reports
growth beyond a tolerance (failure), configurations that disappeared (failure), shrinkage (good
news) and new configurations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import architectures

from .config import RunConfig
from .measure.predict import predict
from .step import stage_of
from .sweep import expand

BASELINE = Path("reports/baseline/memory.csv")
TOTALS = ["pred_peak_allocated_bytes", "pred_peak_reserved_bytes"]
CATEGORY_COLUMNS = ["pred_parameter_bytes", "pred_gradient_bytes", "pred_optimizer_bytes", "pred_input_bytes",
                    "pred_activation_bytes", "pred_temporary_bytes"]
FIGURES = TOTALS + CATEGORY_COLUMNS
ID_COLUMNS = ["key", "arch", "stage", "mode", "precision", "size", "batch", "options"]


def grid(names: Sequence[str] | None = None) -> list[RunConfig]:
    """The baseline grid (see the module docstring)."""
    configs: list[RunConfig] = []
    for name in names or architectures.names():
        spec = architectures.spec(name)
        sizes = [spec.cpu_sizes[0], spec.default_sizes[0]]
        configs += expand([name], sizes, [1], ["train", "infer"], ["fp32", "fp16"], "predict")
        if spec.checkpointing == "checkpointing" and spec.hparams().get("checkpointing"):
            configs += expand([name], sizes, [1], ["train"], ["fp32", "fp16"], "predict", checkpointing=False)
    return configs


def predict_grid(configs: Sequence[RunConfig], tamper: Mapping[str, Mapping[str, Any]] | None = None,
                 progress: Callable[[RunConfig], None] | None = None) -> pd.DataFrame:
    """Predict each configuration in this process. ``tamper`` adds build overrides per architecture
    without changing the configurations' keys (how tests plant a regression)."""
    rows = []
    for cfg in configs:
        if progress:
            progress(cfg)
        spec, ov = stage_of(architectures.spec(cfg.arch), cfg.stage, cfg.overrides_dict)
        ov.update((tamper or {}).get(cfg.arch, {}))
        pred = predict(spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision, cfg.channels_last,
                       with_memtracker=False)
        rows.append({"key": cfg.key(), "arch": cfg.arch, "stage": cfg.stage, "mode": cfg.mode,
                     "precision": cfg.precision, "size": "x".join(map(str, cfg.size)), "batch": cfg.batch,
                     "options": json.dumps(cfg.overrides_dict, sort_keys=True, default=list),
                     **{f: int(pred[f]) for f in FIGURES}})
    return pd.DataFrame(rows, columns=ID_COLUMNS + FIGURES).sort_values(ID_COLUMNS[1:]).reset_index(drop=True)


def write(df: pd.DataFrame, path: Path = BASELINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n")


def read(path: Path = BASELINE) -> pd.DataFrame:
    if not Path(path).exists():
        raise FileNotFoundError(f"no baseline at {path}; create it with `bench baseline --update`")
    return pd.read_csv(path, dtype={"stage": str, "options": str}, keep_default_na=False)


@dataclass
class Comparison:
    grown: list[dict[str, Any]] = field(default_factory=list)
    shrunk: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.grown or self.missing)


def _label(row: Mapping[str, Any]) -> str:
    stage = f"[{row['stage']}]" if row["stage"] else ""
    opts = json.loads(row["options"]) if row["options"] else {}
    extra = "".join(f" {k}={v}" for k, v in opts.items())
    return f"{row['arch']}{stage} {row['mode']} {row['size']} b{row['batch']} {row['precision']}{extra}"


def compare(baseline: pd.DataFrame, current: pd.DataFrame, tolerance: float = 0.005) -> Comparison:
    """Each figure of each configuration against the baseline; growth above ``tolerance`` (relative)
    fails, a configuration in the baseline but not in ``current`` fails."""
    out = Comparison()
    cur = current.set_index("key")
    base = baseline.set_index("key")
    out.missing = [_label(base.loc[k]) for k in base.index if k not in cur.index]
    out.added = [_label(cur.loc[k]) for k in cur.index if k not in base.index]
    for key in base.index.intersection(cur.index):
        b, c = base.loc[key], cur.loc[key]
        for fig in FIGURES:
            old, new = int(b[fig]), int(c[fig])
            if old == new:
                continue
            rel = (new - old) / old if old else float("inf")
            entry = {"config": _label(b), "figure": fig.removeprefix("pred_").removesuffix("_bytes"),
                     "baseline_bytes": old, "current_bytes": new, "change": rel}
            if rel > tolerance:
                out.grown.append(entry)
            elif rel < 0:
                out.shrunk.append(entry)
    return out


def compare_pytest_benchmark(a: Path, b: Path, tolerance: float = 0.005) -> Comparison:
    """Compare the ``*_bytes`` figures in ``extra_info`` of two saved pytest-benchmark runs."""

    def frame(path: Path) -> pd.DataFrame:
        data = json.loads(Path(path).read_text())
        rows = []
        for bm in data.get("benchmarks", []):
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
