"""Episode sampling against learn2learn's TaskDataset and against one conv4 MAML training step (CPU).

Data: a mini-ImageNet-sized meta-training split held in memory as uint8 (64 classes x
``--per-class`` images of 3x84x84; random pixels — sampling cost does not depend on them).
One meta-batch = ``--tasks`` 5-way ``--shots``-shot tasks with ``--query`` query images per class,
ready for the learner (float32 in [0, 1], support/query split, labels 0..4):

- ours: :class:`taskbal.data.episodes.EpisodeSampler` — one batched draw and gather per meta-batch;
- learn2learn: ``TaskDataset`` (NWays, KShots, LoadData, RemapLabels) over a ``TensorDataset`` of
  the same tensor (label index given, so nothing is re-scanned), ``sample()`` per task, then the
  same support/query split and conversion;
- conv4 MAML step: our batched second-order MAML (32 filters, 5 inner SGD steps, lr 0.01)
  computing the post-adaptation losses and per-task meta-gradients of that meta-batch.

Contenders are timed interleaved in one process (medians over ``--repeats`` rounds of
``--iterations`` meta-batches) so machine noise hits all alike; read the ratios.

    python benchmarks/bench_episodes.py [--per-class 600] [--tasks 4] [--shots 1] [--query 15]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from taskbal.data.episodes import EpisodeSampler, episode_generator, l2l_taskset
from taskbal.learners import MAML, TaskBatch
from taskbal.models import build_model

WAYS, CLASSES = 5, 64


def to_batch(support_x, support_y, query_x, query_y) -> TaskBatch:
    tasks = support_x.shape[0]
    return TaskBatch(support_x.float().div_(255), support_y, query_x.float().div_(255), query_y,
                     torch.zeros(tasks, 1))


def ours(sampler: EpisodeSampler, tasks: int, shots: int, query: int, iteration: int) -> TaskBatch:
    sx, sy, qx, qy, _ = sampler.sample(tasks, WAYS, shots, query, episode_generator(0, iteration))
    return to_batch(sx, sy, qx, qy)


def learn2learn(taskset, tasks: int, shots: int, query: int) -> TaskBatch:
    parts = []
    for _ in range(tasks):
        x, y = taskset.sample()
        y = torch.as_tensor(y)
        order = torch.argsort(y, stable=True).view(WAYS, shots + query)  # class by class, as ours
        parts.append((x[order[:, :shots]].flatten(0, 1), y[order[:, :shots]].flatten(),
                      x[order[:, shots:]].flatten(0, 1), y[order[:, shots:]].flatten()))
    return to_batch(*(torch.stack(p) for p in zip(*parts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=5, help="meta-batches per timing round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)

    images = torch.randint(0, 256, (CLASSES * args.per_class, 3, 84, 84), dtype=torch.uint8)
    labels = torch.arange(CLASSES).repeat_interleave(args.per_class)
    sampler = EpisodeSampler(images, [args.per_class] * CLASSES)
    taskset = l2l_taskset(torch.utils.data.TensorDataset(images, labels), WAYS, args.shots, args.query)
    learner = MAML(build_model({"name": "conv4", "filters": 32}, ((3, 84, 84), WAYS)), inner_steps=5,
                   inner_lr=0.01, loss="cross_entropy")
    batch = ours(sampler, args.tasks, args.shots, args.query, 0)
    check = learn2learn(taskset, args.tasks, args.shots, args.query)
    assert all(a.shape == b.shape and a.dtype == b.dtype for a, b in
               zip((batch.support_x, batch.support_y, batch.query_x, batch.query_y),
                   (check.support_x, check.support_y, check.query_x, check.query_y)))

    contenders = {
        "ours: EpisodeSampler (batched)": lambda i: ours(sampler, args.tasks, args.shots, args.query, i),
        "learn2learn TaskDataset": lambda i: learn2learn(taskset, args.tasks, args.shots, args.query),
        "conv4 MAML step (2nd order, 5 steps)": lambda i: learner.meta_gradients(batch),
    }
    times = {name: [] for name in contenders}
    for _name, fn in contenders.items():  # warm-up
        fn(0)
    for repeat in range(args.repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for i in range(args.iterations):
                fn(repeat * args.iterations + i)
            times[name].append((time.perf_counter() - start) / args.iterations)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"meta-batch: {args.tasks} tasks, {WAYS}-way {args.shots}-shot, {args.query} query/class, 3x84x84, "
          f"{CLASSES} classes x {args.per_class} images in memory; {args.threads} thread(s); "
          f"median of {args.repeats} rounds x {args.iterations} meta-batches")
    for name, value in median.items():
        print(f"  {name:40s} {1000 * value:9.2f} ms per meta-batch")
    ours_t, l2l_t, step_t = median.values()
    print(f"ratio learn2learn / ours:          {l2l_t / ours_t:8.1f}x")
    print(f"ratio MAML step / ours sampling:   {step_t / ours_t:8.1f}x  "
          f"(sampling = {100 * ours_t / step_t:.2f} % of a step)")
    print(f"ratio MAML step / learn2learn:     {step_t / l2l_t:8.1f}x  "
          f"(learn2learn = {100 * l2l_t / step_t:.2f} % of a step)")


if __name__ == "__main__":
    main()
