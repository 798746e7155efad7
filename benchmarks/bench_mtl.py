"""Step time of the thesis' multi-task methods relative to equal weighting (EW), in the same process.

Two settings, each with its own equal-weighting reference:

- hyper-cleaning (thesis §3.7.1, Table 3.2 / Fig. 3.1 shapes): 2 tasks, 784 inputs, 10 classes, shared
  MLP 784→512→256 with one 256→10 head per task, mini-batch 100 per task. The data are generated
  (taskbal/mtl/blobs.py with MNIST's shapes; the timing does not depend on the pixels). One step of

    EW, MGDA      the single-level loop (mtl/weighted.py): per-task shared gradients → weighting;
    NORMAL        the same with the heavy-ball ODE neck (10 Euler steps) and the position update;
    MOML, MoCo    one UL iteration: T unrolled LL steps, the m hypergradients by back-propagation
                  through them (mtl/moml.py), combined by MGDA / MoCo;
    FORUM         one UL iteration: T first-order LL steps for the value function, the (m+1)-gradient
                  QP and the step (mtl/forum.py).

  The bi-level methods do T LL steps per UL iteration (the thesis' T = 64; ``--lower-steps``), so their
  ratio to one EW step is mostly T; their ratio to each other is what Fig. 3.1 (a, b) plots.
- black-box synthetic (thesis §4.6.1, Figs. 4.1–4.4): the shift l1-ellipsoid with d = 100 and N = 50
  samples per iteration; ASMG against ASMG-EW (the same sampler and update with the weights fixed at
  1/m, i.e. the black-box equal weighting), plus ES and CMA-ES for scale.

Contenders run interleaved (round-robin over repeats), each repeat a block of steps; the median over
repeats is reported. Read the ratios, not the absolute times.

    python benchmarks/bench_mtl.py [--repeats 5] [--steps 10] [--threads 1] [--lower-steps 64] [--only mtl|blackbox]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from taskbal.blackbox import build_optimizer
from taskbal.data import blackbox_moo
from taskbal.mtl import blobs
from taskbal.mtl.data import MultiTaskData
from taskbal.mtl.trainer import build_model, build_step, method_and_options, settings

HIDDEN = [512, 256]
DATA = {"family": "mtl_blobs", "tasks": 2, "classes": 10, "dim": 784, "train": 5000, "val": 1000, "val2": 1000,
        "test": 200, "corruption": 0.5, "split_seed": 0}


def mtl_contenders(lower_steps: int) -> dict[str, dict]:
    bilevel = {"lower_steps": lower_steps, "lower_lr": 0.3, "alpha_lr": 10.0}
    return {
        "EW": {"name": "mean"},
        "MGDA": {"name": "mgda"},
        "NORMAL": {"name": "normal"},
        "MOML": {"name": "moml", **bilevel},
        "MoCo": {"name": "moml", "combiner": "moco", **bilevel},
        "FORUM": {"name": "forum", "lower_steps": lower_steps, "lower_lr": 0.3, "alpha_lr": 10.0, "omega_lr": 0.3,
                  "rho": 0.5},
    }


def build_mtl_step(split: Path, weighting: dict, seed: int = 0):
    experiment = {"runner": "mtl", "data": DATA, "weighting": weighting,
                  "mtl": {"iterations": 1, "hidden": HIDDEN, "batch_size": 100, "upper_batch_size": 100,
                          "optimizer": "sgd", "lr": 0.3, "bilevel": "hyper_cleaning"}}
    conf = settings(experiment)
    data = MultiTaskData(blobs.Tasks(split))
    name, options = method_and_options(experiment)
    torch.manual_seed(seed)
    model = build_model(conf, data, name, options)
    return build_step(experiment, conf, model, data, seed)


def time_interleaved(steppers: dict, repeats: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each contender; contenders alternate within every repeat."""
    counters = {name: 0 for name in steppers}
    for name, step in steppers.items():  # warm-up (allocations, first QP solves)
        step(counters[name])
        counters[name] += 1
    samples = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            started = time.perf_counter()
            for _ in range(steps):
                step(counters[name])
                counters[name] += 1
            samples[name].append((time.perf_counter() - started) / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, times: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    print(f"{'method':<10} {'ms/step':>10} {'× ' + reference:>10}")
    for name, seconds in times.items():
        print(f"{name:<10} {1e3 * seconds:>10.2f} {seconds / times[reference]:>10.2f}")


def bench_mtl(repeats: int, steps: int, lower_steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "blobs.npz"
        blobs.write_splits(split, DATA)
        steppers = {}
        for name, weighting in mtl_contenders(lower_steps).items():
            step_object = build_mtl_step(split, weighting)
            steppers[name] = step_object.step
        bilevel_steps = max(1, steps // 5)
        single = {k: v for k, v in steppers.items() if k in ("EW", "MGDA", "NORMAL")}
        times = time_interleaved(single, repeats, steps)
        times.update(time_interleaved({k: v for k, v in steppers.items() if k not in single}, repeats, bilevel_steps))
    report(f"hyper-cleaning shapes (2 tasks, 784-512-256, 10 classes, batch 100; bi-level T = {lower_steps})",
           times, "EW")
    for name in ("MoCo", "FORUM"):
        print(f"{name} / MOML: {times[name] / times['MOML']:.2f}")


def bench_blackbox(repeats: int, steps: int, dim: int = 100, population: int = 50) -> None:
    consts = blackbox_moo.constants("shift_l1_ellipsoid", dim)

    def objectives(points):
        return blackbox_moo.evaluate("shift_l1_ellipsoid", consts, points)

    start = np.random.default_rng(0).uniform(0.0, 1.0, dim)
    steppers = {}
    for name in ("asmg_ew", "asmg", "es", "cmaes"):
        optimizer = build_optimizer(name, dim, 2, population, start, np.random.default_rng(1))
        steppers[{"asmg_ew": "ASMG-EW", "asmg": "ASMG", "es": "ES", "cmaes": "CMA-ES"}[name]] = \
            (lambda opt: (lambda _: opt.step(objectives)))(optimizer)
    times = time_interleaved(steppers, repeats, steps * 10)
    report(f"black-box shift l1-ellipsoid (d = {dim}, N = {population})", times, "ASMG-EW")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per repeat (bi-level: a fifth of it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lower-steps", type=int, default=64, help="LL steps T of MOML / MoCo / FORUM")
    parser.add_argument("--only", choices=["mtl", "blackbox"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats")
    if args.only in (None, "mtl"):
        bench_mtl(args.repeats, args.steps, args.lower_steps)
    if args.only in (None, "blackbox"):
        bench_blackbox(args.repeats, args.steps)


if __name__ == "__main__":
    main()
