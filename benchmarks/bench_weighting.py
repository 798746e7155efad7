"""Outer-step time of every weighting relative to plain MAML (the mean), measured in one run.

One step = ``Run.step`` of the training loop: sample a meta-batch, per-task meta-gradients,
the weighting's ``combine`` (and ``after_step`` if it needs one), the Adam step. The setting is
SIMOL's Table 1 sinusoid: MLP 1→32→32→1, 16 tasks per meta-batch, 5 support + 5 query points,
5 inner Adam steps (lr 0.01), second order. Weightings use their default options.

Contenders are timed interleaved (every repeat runs each of them for ``--iterations`` steps),
so machine noise hits all alike; the table gives the median step time and its ratio to the
mean's median, in CPU time of this process (``time.process_time``: with one thread it does
not count the time the process waits for a core on a busy machine) and in wall-clock time.
The CPU time spent inside the weighting (``combine`` and ``after_step``, during those same
steps) is reported separately, and 1 + that time / MAML's step time as a less noisy ratio.

    python benchmarks/bench_weighting.py [--iterations 50] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from taskbal.config import load_table, resolve_experiment
from taskbal.data.sinusoid import write_splits
from taskbal.train import Run

METHODS = ["mean", "mgda", "cagrad", "pcgrad", "improvement", "simol", "tr_maml", "damaml", "explore_exploit"]
GOALS = {"simol": 1.05, "mgda": 1.3, "cagrad": 1.3, "pcgrad": 1.3}  # ≤ this × MAML at meta-batch 16
DATA = {"train_tasks": 20000, "val_tasks": 10, "test_tasks": 10}


def experiment(method: str) -> dict:
    """SIMOL Table 1's 5-shot experiment with a small task pool and the given weighting."""
    base = resolve_experiment(load_table("simol_table1"), "paper", {"data": DATA})
    base = copy.deepcopy(base)
    base["weighting"] = {"name": method}
    base["outer"]["iterations"] = 100000
    base["evaluation"]["curve_every"] = 10**9
    return base


def seconds_per_call(call, iterations: int) -> tuple[float, float]:
    """(CPU seconds, wall-clock seconds) per call."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.process_time() - cpu) / iterations, (time.perf_counter() - wall) / iterations


class Timed:
    """Wraps a weighting's ``combine``/``after_step`` and adds up the seconds spent in them."""

    def __init__(self, weighting):
        self.seconds = 0.0
        for method in ("combine", "after_step"):
            setattr(weighting, method, self.timed(getattr(weighting, method)))

    def timed(self, function):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start
        return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50, help="outer steps per contender and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    args = parser.parse_args()
    if "mean" not in args.methods:
        args.methods = ["mean"] + args.methods
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        split = Path(folder) / "tasks.npz"
        spec = experiment("mean")["data"]
        write_splits(split, spec)
        runs = {name: Run(experiment(name), 0, split, torch.device("cpu")) for name in args.methods}
        for run in runs.values():  # warm-up
            for _ in range(3):
                run.step()
        timers = {name: Timed(run.weighting) for name, run in runs.items()}
        cpu_steps, wall_steps = {name: [] for name in runs}, {name: [] for name in runs}
        combines = {name: [] for name in runs}
        for _ in range(args.repeats):  # interleaved repeats
            for name, run in runs.items():
                before = timers[name].seconds
                cpu, wall = seconds_per_call(run.step, args.iterations)
                cpu_steps[name].append(cpu)
                wall_steps[name].append(wall)
                combines[name].append((timers[name].seconds - before) / args.iterations)
    step = {name: statistics.median(values) for name, values in cpu_steps.items()}
    wall = {name: statistics.median(values) for name, values in wall_steps.items()}
    combine = {name: statistics.median(values) for name, values in combines.items()}
    reference, wall_reference = step["mean"], wall["mean"]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.iterations} steps x {args.repeats} "
          "interleaved repeats, median")
    print("setting: SIMOL Table 1 sinusoid, MLP 1-32-32-1, meta-batch 16, 5+5 points, 5 inner Adam steps\n")
    print(f"{'weighting':16s} {'CPU ms/step':>11s} {'vs MAML':>8s} {'weighting ms':>13s} {'1+w/MAML':>9s} "
          f"{'goal':>12s} {'wall ms/step':>13s} {'vs MAML':>8s}")
    for name in runs:
        goal, estimate = GOALS.get(name), 1 + (combine[name] - combine["mean"]) / reference
        met = goal is not None and max(step[name] / reference, estimate) <= goal
        verdict = "" if goal is None else f"<={goal:.2f} {'ok' if met else 'MISSED'}"
        print(f"{name:16s} {1000 * step[name]:11.2f} {step[name] / reference:7.2f}x {1000 * combine[name]:13.3f} "
              f"{estimate:8.2f}x {verdict:>12s} {1000 * wall[name]:13.2f} {wall[name] / wall_reference:7.2f}x")
    print("\n'vs MAML' = median step time / the mean weighting's median step time (1.00x = as fast).")
    print("'weighting ms' = CPU time inside combine()/after_step() per step, measured in the same steps;")
    print("'1+w/MAML' = 1 + (that time − the mean's) / MAML's CPU step time: the ratio without the noise of")
    print("two medians. A goal counts as met when both CPU ratios are within it.")


if __name__ == "__main__":
    main()
