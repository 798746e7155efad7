"""Meta-training iterations per second: our batched MAML against learn2learn's MAML loop.

Both sides do the same work on the same tasks — SIMOL's sinusoid setting: MLP 1→32→32→1,
16 tasks per meta-batch, K support + K query points, 5 inner SGD steps (lr 0.01),
second-order meta-gradients, Adam outer step (lr 0.001) — and are timed in one process,
interleaved, so machine noise hits all alike. The ratio is what to read; absolute
numbers depend on the machine.

    python benchmarks/bench_maml.py [--iterations 100] [--repeats 3] [--shots 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import learn2learn as l2l
import torch
from torch.func import vmap

from taskbal.data.sinusoid import write_splits
from taskbal.train import Run

META_BATCH, INNER_STEPS, INNER_LR = 16, 5, 0.01


def experiment(shots: int, weighting: str = "mean") -> dict:
    return {"data": {"family": "sinusoid", "shots": shots, "query": shots, "train_tasks": 20000,
                     "val_tasks": 10, "test_tasks": 10, "split_seed": 0},
            "model": {"hidden": [32, 32]},
            "learner": {"name": "maml", "inner_steps": INNER_STEPS, "inner_lr": INNER_LR,
                        "inner_optimizer": "sgd", "first_order": False},
            "weighting": {"name": weighting},
            "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": META_BATCH, "iterations": 100000},
            "evaluation": {"curve_every": 1000000}}


class Learn2LearnLoop:
    """learn2learn's maml_sine loop: clone, adapt, query loss, backward — one task at a time."""

    def __init__(self, run: Run):
        self.run = run
        self.model = run.model
        self.maml = l2l.algorithms.MAML(self.model, lr=INNER_LR, first_order=False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.001)
        self.iteration = 0

    def batch(self):
        indices = self.run.order[self.iteration * META_BATCH:(self.iteration + 1) * META_BATCH]
        self.iteration += 1
        return self.run.tasks.batch("train", indices)

    def accumulate_meta_gradient(self, batch) -> None:
        """The mean meta-gradient of the batch, accumulated into the model's .grad."""
        self.optimizer.zero_grad()
        for i in range(META_BATCH):
            learner = self.maml.clone()
            for _ in range(INNER_STEPS):
                learner.adapt(((learner(batch.support_x[i]) - batch.support_y[i]) ** 2).mean())
            query_loss = ((learner(batch.query_x[i]) - batch.query_y[i]) ** 2).mean()
            (query_loss / META_BATCH).backward()

    def step(self):
        self.accumulate_meta_gradient(self.batch())
        self.optimizer.step()


def equal_work_check(split: Path, shots: int) -> float:
    """Max difference between learn2learn's and our mean meta-gradient on one batch."""
    run = Run(experiment(shots), 0, split, torch.device("cpu"))
    batch = run.tasks.batch("train", run.order[:META_BATCH])
    _, ours = run.learner.meta_gradients(batch)
    Learn2LearnLoop(run).accumulate_meta_gradient(batch)
    theirs = torch.cat([p.grad.reshape(-1) for p in run.model.parameters()])
    return (ours.mean(0) - theirs).abs().max().item()


def contenders(split: Path, shots: int, with_weightings: bool) -> dict:
    def ours(weighting="mean", generic=False):
        run = Run(experiment(shots, weighting), 0, split, torch.device("cpu"))
        if generic:  # the generic torch.func path instead of the MLP's own batched forward
            run.learner._batched_forward = vmap(run.learner._forward_one_task)
        return run.step

    steps = {"learn2learn MAML loop": Learn2LearnLoop(Run(experiment(shots), 0, split, torch.device("cpu"))).step,
             "ours (batched forward)": ours(),
             "ours (torch.func vmap)": ours(generic=True)}
    if with_weightings:
        for name in ("simol", "mgda", "cagrad", "pcgrad", "improvement"):
            steps[f"ours + {name}"] = ours(name)
    return steps


def iterations_per_second(step, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-weightings", action="store_true", help="skip SIMOL / MGDA / CAGrad / PCGrad")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        split = Path(folder) / "tasks.npz"
        write_splits(split, dict(shots=args.shots, query=args.shots, train_tasks=20000, val_tasks=10,
                                 test_tasks=10, split_seed=0))
        print(f"equal work: max |mean meta-gradient(ours) - learn2learn| = {equal_work_check(split, args.shots):.2e}")
        steps = contenders(split, args.shots, not args.no_weightings)
        for step in steps.values():  # warm-up
            for _ in range(5):
                step()
        rates = {name: [] for name in steps}
        for _ in range(args.repeats):  # interleaved repeats
            for name, step in steps.items():
                rates[name].append(iterations_per_second(step, args.iterations))
    median = {name: statistics.median(values) for name, values in rates.items()}
    reference, ours = median["learn2learn MAML loop"], median["ours (batched forward)"]
    print(f"\n{'implementation':32s} {'it/s (median)':>14s} {'vs learn2learn':>15s} {'vs our MAML':>12s}")
    for name, rate in median.items():
        print(f"{name:32s} {rate:14.1f} {rate / reference:14.1f}x {ours / rate:11.2f}x")
    print(f"\nspeedup over learn2learn (median of {args.repeats}, {args.threads} thread(s)): {ours / reference:.1f}x")
    print("'vs our MAML' is the step time relative to plain MAML (1.00x = as fast).")


if __name__ == "__main__":
    main()
