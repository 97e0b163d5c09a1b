"""The arithmetic of a full sweep in GPU-hours (README: "What a full sweep costs").

Predicts every configuration of the default full sweep (``bench run --arch all --mode train --mode infer
--precision fp32 --precision fp16 --dice``) on every core: its peak reserved memory, its FLOPs per step
and how long its prediction took here (a worker predicts before it measures, holding its GPU). Prints
one CSV line per configuration and a summary; the README's figures come from it. Usage:

    python scripts/sweep_cost.py > sweep_cost.csv
"""

from __future__ import annotations

import sys
import time

import architectures
from bench.measure.predict import predict
from bench.options import GB
from bench.parallel import pmap
from bench.sweep.config import RunConfig
from bench.sweep.expand import expand


def cost(cfg: RunConfig) -> dict:
    spec, ov = architectures.spec(cfg.arch).stage(cfg.stage, **cfg.overrides_dict)
    t0 = time.perf_counter()
    pred = predict(spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision, cfg.channels_last, with_memtracker=False)
    stages = len(architectures.spec(cfg.arch).train_stages(**cfg.overrides_dict)) if cfg.mode == "train" else 0
    return {"config": cfg.label(), "mode": cfg.mode, "precision": cfg.precision, "stage": cfg.stage,
            "reserved_gb": pred["pred_peak_reserved_bytes"] / GB, "flops_per_step": pred["flops_per_step"],
            "predict_s": time.perf_counter() - t0, "last_stage": stages and cfg.stage == (
                architectures.spec(cfg.arch).train_stages(**cfg.overrides_dict)[-1].name if stages > 1 else ""),
            "stages": stages}


def main() -> None:
    configs = expand(["all"], modes=["train", "infer"], precisions=["fp32", "fp16"], backend="predict")
    rows = pmap(cost, configs)
    cols = list(rows[0])
    print(",".join(cols))
    for r in rows:
        print(",".join(str(r[c]) for c in cols))
    print(f"# {len(rows)} configurations, {sum(r['stages'] > 0 for r in rows)} training stage configurations",
          file=sys.stderr)


if __name__ == "__main__":
    main()
