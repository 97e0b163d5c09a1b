"""How long a recorded bench validate run would have taken with more spare workers sent configurations ahead.

    PYTHONPATH=. python scripts/ahead_depth.py reports/validation/<run> [--executors 3] [--imports 2.0]

Replays the run's records in the order they started (their ``timestamp``): each executor (``--share-gpu``'s
slots) takes the next configuration when it is free; a configuration's worker becomes ready its import time
(the records' ``imports`` phase where they have it, else ``--imports``) plus its ``ahead`` phase after it was
started, which is when the executor started the configuration ``spares`` places before it; it then holds the
GPU for its ``worker_time_s``. One measured alone (``gpu_shared`` not set) waits for the others and holds the
GPU alone. The memory gate's other waits, the CPU's contention and the prediction's start are not replayed:
an estimate, to set :data:`bench.sweep.executor.SPARES_AHEAD` by, that the next GPU run checks. Prints the
replayed span (first worker's start to last one's end) for one to four spares.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NoReturn

import pandas as pd

from bench import record as R
from bench.sweep import store


def replay(runs: pd.DataFrame, spares: int, executors: int, imports: float) -> float:
    """The span, in seconds, of ``runs`` (one row per measurement, in order) replayed with ``spares`` per executor."""
    free = [0.0] * executors
    started: list[list[float]] = [[] for _ in range(executors)]
    end = 0.0
    for r in runs.itertuples():
        lane = min(range(executors), key=free.__getitem__)
        before = started[lane]
        sent = before[-spares] if len(before) >= spares else 0.0
        ready = sent + (r.imports if pd.notna(r.imports) else imports) + r.ahead
        start = max(free[lane], ready, max(free) if r.alone else 0.0)
        done = start + r.worker
        if r.alone:
            free = [done] * executors
        else:
            free[lane] = done
        before.append(start)
        end = max(end, done)
    return end


class _OneLineParser(argparse.ArgumentParser):
    """Bad input as one line and exit 2, as the bench commands give it (argparse prints its usage line first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def main() -> None:
    ap = _OneLineParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("run", type=Path, help="a bench validate run's folder (holding results.jsonl)")
    ap.add_argument("--executors", type=int, default=3, help="configurations measured at once (--share-gpu)")
    ap.add_argument("--imports", type=float, default=2.0,
                    help="a worker's imports, seconds, where its record does not say (records before 2026-11-27)")
    args = ap.parse_args()
    if args.executors < 1 or args.imports < 0:
        ap.error("--executors must be 1 or more and --imports 0 or more")
    if not store.path(args.run).exists():
        ap.error(store.missing(args.run, "bench validate records"))
    df = store.load(args.run)  # (records made before the phases were recorded lack them)
    for col in (R.BACKEND, R.WORKER_TIME, R.CUDA_PHASES, R.GPU_SHARED):
        if col not in df:
            df[col] = None
    df = df[(df[R.BACKEND] == "cuda") & df[R.WORKER_TIME].notna() & df[R.CUDA_PHASES].notna()]
    if df.empty:
        ap.error(f"no CUDA measurement with its phases (cuda_phase_times_s) in {args.run}")
    phases = pd.DataFrame([json.loads(p) for p in df[R.CUDA_PHASES]], index=df.index)
    runs = pd.DataFrame({
        "start": pd.to_datetime(df[R.TIMESTAMP], utc=True, format="ISO8601"), "worker": df[R.WORKER_TIME],
        "ahead": phases.get(R.AHEAD_PHASE, pd.Series(0.0, index=df.index)).fillna(0.0),
        "imports": phases.get(R.IMPORTS_PHASE, pd.Series(float("nan"), index=df.index)),
        "alone": df[R.GPU_SHARED].ne(True),
    }).sort_values("start", kind="stable")
    print(f"{len(runs)} measurements of {args.run}, {args.executors} at once")
    for spares in range(1, 5):
        print(f"  {spares} spare(s) per executor: {replay(runs, spares, args.executors, args.imports) / 60:.1f} min")


if __name__ == "__main__":
    main()
