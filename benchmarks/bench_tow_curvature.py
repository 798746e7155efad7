"""ProtoNet's Gauss–Newton diagonal in TOW, the two ways it is computed, on one meta-batch at a paper's shapes.

ProtoNet's query logits depend on the support set, so a per-query-point diagonal either copies the whole support
set once per query point (``per_query_point_gauss_newton``), or splits each row into its query part (one weight
copy per query image) and its prototype part (the prototypes' Jacobian, E probes through one copy per class),
``prototype_factored_gauss_newton``. TOW picks the second where it needs fewer backward passes (a small
embedding: Omniglot's 32 dimensions; mini-ImageNet's 800 keep the copies). Both run in one process on generated
images of the shapes (the work does not depend on the pixels), interleaved, with BatchNorm's statistics held as in
TOW's planning; the ratio of the medians is printed and the two diagonals are compared.

    python benchmarks/bench_tow_curvature.py [--repeats 3] [--image-size 28] [--channels 1] [--tasks 10]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from taskbal.data.generated_images import write_splits
from taskbal.train import Run
from taskbal.weighting.tow import curvature, problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=10, help="tasks per meta-batch (TOW on Omniglot: 10)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {"family": "generated_images", "ways": 5, "shots": 1, "query": 15, "image_size": args.image_size,
            "channels": args.channels, "train_tasks": args.tasks, "val_tasks": 1, "test_tasks": 1, "split_seed": 0}
    experiment = {"data": data, "model": {"name": "conv4", "filters": args.filters, "bn_affine": False},
                  "learner": {"name": "protonet", "distance": "euclidean"}, "weighting": {"name": "mean"},
                  "outer": {"lr": 1e-4, "meta_batch": args.tasks, "iterations": 1}, "evaluation": {"curve_every": 1}}
    with tempfile.TemporaryDirectory() as folder:
        split = Path(folder) / "split.npz"
        write_splits(split, data)
        run = Run(experiment, 0, split, torch.device("cpu"))
        _, batch = run.training_batch(0)
    flat = run.learner.flat_meta_parameters()
    factored_pays = curvature.prototype_factored_pays
    ways = {"copies of the support set per query point": lambda *a: False, "prototype-factored": lambda *a: True}
    times: dict[str, list[float]] = {name: [] for name in ways}
    diagonals = {}
    for _ in range(args.repeats):
        for name, pays in ways.items():
            curvature.prototype_factored_pays = pays
            started = time.perf_counter()
            diagonals[name] = problem.evaluate_learner(run.learner, batch, flat, "diagonal").curvature
            times[name].append(time.perf_counter() - started)
    curvature.prototype_factored_pays = factored_pays
    print(f"ProtoNet conv4 ({args.filters} filters), {args.tasks} tasks of 5-way 1-shot, 15 queries, "
          f"{args.channels}x{args.image_size}x{args.image_size}; median of {args.repeats}, one stage evaluation "
          f"(losses, meta-gradients, Gauss-Newton diagonal):")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"  {name:45s} {median:7.2f} s")
    copies, factored = medians.values()
    print(f"  ratio copies / factored: {copies / factored:.2f}x (TOW itself takes the factored one here: "
          f"{factored_pays(batch, run.learner.model(batch.query_x[0, :2]).shape[-1])})")
    first, second = diagonals.values()
    relative = float((first - second).abs().max() / first.abs().max())
    print(f"  largest relative difference of the diagonals: {relative:.1e}")


if __name__ == "__main__":
    main()
