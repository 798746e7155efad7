"""Outer-step time of TOW against plain MAML (``mean``) on the sinusoid MAML setup.

SIMOL's sinusoid setting (MLP 1→32→32→1, 5 inner SGD steps of lr 0.01, second-order MAML, Adam
outer lr 0.001, K = 5 support and query points) at meta-batch 16. TOW plans T outer steps at once,
so its time is measured per window of T steps and divided by T. All contenders run in one process,
interleaved window by window, and the ratio of the medians is reported (machine noise hits all alike;
absolute times depend on the machine). The paper measured TOW at 5.6× uniform MAML on Omniglot (Table 2).

    python benchmarks/bench_tow.py [--windows 20] [--horizon 5] [--meta-batch 16] [--first-order] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

from taskbal.data.sinusoid import write_splits
from taskbal.train import Run

VARIANTS = {
    "mean (MAML)": {"name": "mean"},
    "tow (paper: 2 iLQR iterations, simulated final pass)": {"name": "tow"},
    "tow (2 iterations, live final pass)": {"name": "tow", "final_pass": "live"},
    "tow (1 iteration, live final pass)": {"name": "tow", "final_pass": "live", "iterations": 1},
    "tow (paper, full V_t)": {"name": "tow", "value": "full"},
}


def experiment(weighting: dict, meta_batch: int, first_order: bool, shots: int) -> dict:
    return {"data": {"family": "sinusoid", "shots": shots, "query": shots, "train_tasks": 20000,
                     "val_tasks": 10, "test_tasks": 10, "split_seed": 0},
            "model": {"hidden": [32, 32]},
            "learner": {"name": "maml", "inner_steps": 5, "inner_lr": 0.01, "inner_optimizer": "sgd",
                        "first_order": first_order},
            "weighting": weighting,
            "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": meta_batch, "iterations": 100000},
            "evaluation": {"curve_every": 1000000}}


def window_time(run: Run, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        run.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20, help="timed windows of T outer steps per contender")
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-full", action="store_true", help="leave out the full-V_t variant")
    parser.add_argument("--profile", action="store_true", help="cProfile the paper-default TOW")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {name: dict(w) for name, w in VARIANTS.items() if not (args.skip_full and "full" in name)}
    for w in variants.values():
        if w["name"] == "tow":
            w["horizon"] = args.horizon
    with tempfile.TemporaryDirectory() as folder:
        split = Path(folder) / "tasks.npz"
        write_splits(split, dict(shots=args.shots, query=args.shots, train_tasks=20000, val_tasks=10,
                                 test_tasks=10, split_seed=0))
        runs = {name: Run(experiment(w, args.meta_batch, args.first_order, args.shots), 0, split,
                          torch.device("cpu")) for name, w in variants.items()}
        for run in runs.values():  # warm-up: one window
            window_time(run, args.horizon)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            window_time(runs["tow (paper: 2 iLQR iterations, simulated final pass)"], 4 * args.horizon)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        times = {name: [] for name in runs}
        for _ in range(args.windows):  # interleaved
            for name, run in runs.items():
                times[name].append(window_time(run, args.horizon))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference = median["mean (MAML)"]
    print(f"sinusoid MAML, meta-batch {args.meta_batch}, T = {args.horizon}, "
          f"{'first' if args.first_order else 'second'}-order, {args.threads} thread(s), "
          f"median of {args.windows} windows")
    print(f"{'weighting':58s} {'ms / outer step':>16s} {'vs mean':>8s}")
    for name, value in median.items():
        print(f"{name:58s} {1000 * value:16.2f} {value / reference:7.2f}x")


if __name__ == "__main__":
    main()
