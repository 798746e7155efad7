"""Outer-step time of TOW against plain MAML (``mean``) on the sinusoid MAML setup.

SIMOL's sinusoid setting (MLP 1→32→32→1, 5 inner SGD steps of lr 0.01, second-order MAML, Adam
outer lr 0.001, K = 5 support and query points) at meta-batch 16. TOW plans T outer steps at once,
so its time is measured per window of T steps and divided by T. All contenders run in one process,
interleaved window by window, and the ratio of the medians is reported (machine noise hits all alike;
absolute times depend on the machine). The paper measured TOW at 5.6× uniform MAML on Omniglot (Table 2).

``--omniglot``: TOW Table 1's own quick Omniglot MAML run instead (conv4 with 32 filters, 10 tasks of 5-way
1-shot with 15 queries per class, 5 first-order inner steps, Adam), on the real images of its split file, which
must have been built (``snakemake --config scale=quick -- tow_table1`` or the file the error names); the TOW
variants are its TOW row with the options changed. Each TOW window there takes about a minute on one core.

    python benchmarks/bench_tow.py [--windows 20] [--horizon 5] [--meta-batch 16] [--first-order] [--profile]
    python benchmarks/bench_tow.py --omniglot [--windows 3] [--skip-full]
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


def omniglot_experiments(variants: dict) -> tuple[dict, Path]:
    """TOW Table 1's quick Omniglot MAML cell per variant (its TOW row's weighting with the variant's options),
    and the split file they train on."""
    from taskbal.artifacts import split_file
    from taskbal.config import load_table, table_cells

    cells = [cell for cell in table_cells(load_table("tow_table1"), "quick")
             if cell.column == "omniglot" and cell.row.startswith("MAML")]
    uniform = next(cell for cell in cells if cell.experiment["weighting"]["name"] == "mean")
    tow = next(cell for cell in cells if cell.experiment["weighting"]["name"] == "tow")
    split = Path(split_file("quick", uniform.split))
    if not split.is_file():
        raise SystemExit(f"{split} is missing: build it with `snakemake --config scale=quick -- {split}`")
    experiments = {}
    for name, weighting in variants.items():
        base = uniform if weighting["name"] == "mean" else tow
        chosen = weighting if weighting["name"] == "mean" else {**tow.experiment["weighting"], **weighting}
        experiments[name] = {**base.experiment, "weighting": chosen,
                             "evaluation": {**base.experiment["evaluation"], "curve_every": 10**6}}
    return experiments, split


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
    parser.add_argument("--omniglot", action="store_true", help="TOW Table 1's quick Omniglot MAML run instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {name: dict(w) for name, w in VARIANTS.items() if not (args.skip_full and "full" in name)}
    for w in variants.values():
        if w["name"] == "tow" and not args.omniglot:
            w["horizon"] = args.horizon
    with tempfile.TemporaryDirectory() as folder:
        if args.omniglot:
            experiments, split = omniglot_experiments(variants)
            horizon = experiments[next(n for n, w in variants.items() if w["name"] == "tow")]["weighting"]["horizon"]
        else:
            split, horizon = Path(folder) / "tasks.npz", args.horizon
            write_splits(split, dict(shots=args.shots, query=args.shots, train_tasks=20000, val_tasks=10,
                                     test_tasks=10, split_seed=0))
            experiments = {name: experiment(w, args.meta_batch, args.first_order, args.shots)
                           for name, w in variants.items()}
        args.horizon = horizon
        runs = {name: Run(spec, 0, split, torch.device("cpu")) for name, spec in experiments.items()}
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
    if args.omniglot:
        print(f"Omniglot conv4 MAML (TOW Table 1, quick), T = {args.horizon}, {args.threads} thread(s), "
              f"median of {args.windows} windows")
    else:
        print(f"sinusoid MAML, meta-batch {args.meta_batch}, T = {args.horizon}, "
              f"{'first' if args.first_order else 'second'}-order, {args.threads} thread(s), "
              f"median of {args.windows} windows")
    print(f"{'weighting':58s} {'ms / outer step':>16s} {'vs mean':>8s}")
    for name, value in median.items():
        print(f"{name:58s} {1000 * value:16.2f} {value / reference:7.2f}x")


if __name__ == "__main__":
    main()
