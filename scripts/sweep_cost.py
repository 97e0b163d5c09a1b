"""The arithmetic of a full sweep in GPU-hours (README: "What a full sweep costs").

Predicts every configuration of the default full sweep (``bench run --arch all --mode train --mode infer
--precision fp32 --precision fp16 --dice`` on CUDA) on every core: its peak reserved memory, its FLOPs
per step, how long its prediction took here (a worker predicts before it measures, holding its
GPU) and whether it fits each GPU memory of BUDGETS_GB by the rule of the ``--gpu-memory`` screen (the
prediction at that memory, :func:`bench.measure.predict.device_columns`; the generic CUDA context, as
the H100 has no figure of its own). Then the GPU time of each configuration under the assumptions below, the sweep's wall time on
1 GPU, one 8-GPU node and 64 GPUs, and what screening (``--gpu-memory``) leaves out. Writes the
per-configuration predictions as CSV to the path given (default ``sweep_cost.csv``) and prints the
summary (``summary(pandas.read_csv(path))`` prints it again without predicting).

    PYTHONPATH=. python scripts/sweep_cost.py [sweep_cost.csv]
"""

from __future__ import annotations

import sys
import time

import pandas as pd

import architectures
from bench import record as R
from bench.measure.allocator import AllocatorOOM
from bench.measure.gpus import peak_flops
from bench.measure.predict import predict
from bench.options import GB
from bench.parallel import pmap
from bench.sweep.config import RunConfig
from bench.sweep.expand import expand

#: assumptions (no GPU has been lent to this repository): a worker's start (interpreter, imports, CUDA
#: context, building the network) and the fraction of the H100's datasheet FLOP rate a 3D conv net reaches
START_S = 30.0
EFFICIENCY = 0.4
STEPS = 1 + 3  # the warm-up step and --repeats 3
DICE_MIN_PER_STAGE = 60  # --train-minutes default on CUDA
BUDGETS_GB = (16, 24, 40, 80)


def cost(cfg: RunConfig) -> dict:
    spec = architectures.spec(cfg.arch)
    stage_spec, ov = spec.stage(cfg.stage, **cfg.overrides_dict)
    t0 = time.perf_counter()
    args = (stage_spec, ov, cfg.size, cfg.batch, cfg.mode, cfg.precision, cfg.channels_last)
    cudnn = stage_spec.recipe.cudnn_benchmark
    pred = predict(*args, with_memtracker=False, cudnn_benchmark=cudnn)
    predict_s = time.perf_counter() - t0
    stages = spec.train_stages(**cfg.overrides_dict) if (cfg.mode == "train" and spec.stages) else []
    dice = cfg.mode == "train" and (not stages or cfg.stage == stages[-1].name)
    row = {"config": cfg.label(), "precision": cfg.precision, "reserved_gb": pred[R.PRED_RESERVED] / GB,
           "nvidia_smi_gb": pred[R.PRED_NVIDIA_SMI] / GB, "flops_per_step": pred[R.FLOPS_PER_STEP],
           "predict_s": predict_s, "dice_stages": (len(stages) or 1) if dice else 0}
    for b in BUDGETS_GB:  # a figure within the budget fits; one above it may still fit by freeing the cache
        row[f"fits_{b}gb"] = pred[R.PRED_NVIDIA_SMI] <= b * GB or _fits_at(args, cudnn, b * GB)
    return row


def _fits_at(args: tuple, cudnn: bool, gpu_memory: int) -> bool:
    try:
        predict(*args, with_memtracker=False, cudnn_benchmark=cudnn, gpu_memory=gpu_memory)
    except AllocatorOOM:
        return False
    return True


def summary(df: pd.DataFrame, gpu_gb: float = 80) -> None:
    """GPU time per configuration on a GPU of ``gpu_gb`` (a configuration that does not fit stops at its
    out-of-memory error: no Dice run follows), the sweep's wall time on 1, 8 and 64 GPUs, and what
    screening leaves out at each budget."""
    rate = df["precision"].map(lambda p: EFFICIENCY * peak_flops("H100-SXM", p))
    df["steps_s"] = STEPS * df["flops_per_step"] / rate
    df["measure_s"] = START_S + df["predict_s"] + df["steps_s"]
    df["dice_s"] = df["dice_stages"] * DICE_MIN_PER_STAGE * 60 * df[f"fits_{gpu_gb:g}gb"]
    df["gpu_s"] = df["measure_s"] + df["dice_s"]
    total, longest = df["gpu_s"].sum(), df["gpu_s"].max()
    print(f"{len(df)} configurations, {(df['dice_stages'] > 0).sum()} Dice runs training {df['dice_stages'].sum()} "
          f"stages; on a {gpu_gb:g} GB GPU:")
    print(f"measurement {df['measure_s'].sum() / 3600:.2f} GPU-h (of which prediction {df['predict_s'].sum() / 3600:.2f} h, "
          f"steps {df['steps_s'].sum() / 3600:.3f} h), Dice {df['dice_s'].sum() / 3600:.1f} GPU-h, "
          f"total {total / 3600:.1f} GPU-h")
    for gpus in (1, 8, 64):  # a list schedule: at least total/gpus and the longest configuration, at most their sum
        low = max(total / gpus, longest)
        print(f"{gpus:>2} GPU(s): wall time {low / 3600:.1f} h to {min(total, total / gpus + longest) / 3600:.1f} h")
    for b in BUDGETS_GB:
        out = df[~df[f"fits_{b}gb"]]
        print(f"--gpu-memory {b}GB: {len(out)} predicted_oom, saving {out['measure_s'].sum() / 60:.1f} GPU-min "
              f"({', '.join(out['config'].str.replace(' predict', ''))})")


def main() -> None:
    configs = expand(["all"], modes=["train", "infer"], precisions=["fp32", "fp16"], backend="predict")
    df = pd.DataFrame(pmap(cost, configs))
    df.to_csv(sys.argv[1] if len(sys.argv) > 1 else "sweep_cost.csv", index=False)
    summary(df)


if __name__ == "__main__":
    main()
