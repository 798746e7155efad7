"""Step time of every learner relative to our MAML, and learn2learn's MAML / MetaSGD loops as reference.

One step = ``meta_gradients`` of one meta-batch: post-adaptation query losses and the k per-task
meta-gradients [k, d] that every weighting needs. learn2learn's loops do the same work one task at a
time (clone, adapt, query loss, ``autograd.grad`` of that task's loss). Two settings:

- sinusoid: MLP 1→32→32→1, 16 tasks, 5 support + 5 query points, 5 inner SGD steps (lr 0.01);
- conv4: 5-way 1-shot mini-ImageNet-sized random images (3×84×84), 32 filters, 4 tasks per meta-batch,
  ``--query`` query images per class, 5 inner SGD steps (lr 0.01).

Second-order unless the name says otherwise. "task_chunk 1" runs the tasks one graph at a time (same
results, less memory; on the CPU this is what makes conv nets as fast as learn2learn's loop). CAVIA
uses the same network with context (4 inputs for the MLP, 100 parameters into FiLM on block 3 for
conv4). "coupling penalty" is MAML with a quadratic centroid penalty coupling the tasks (a local
stand-in for Nash-GBML's penalties, same cost structure), with exact per-task rows
(``penalty_gradients: jacobian``) or one-backward ``per_copy`` rows. Contenders are timed
interleaved in one process so machine noise hits all alike; read the ratios, not the absolute numbers.

    python benchmarks/bench_learners.py [--repeats 3] [--threads 1] [--query 15] [--only sinusoid|conv4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch.func import vmap

from taskbal.learners import CAVIA, MAML, MetaSGD, ProtoNet, Reptile, TaskBatch
from taskbal.models import build_model

INNER_STEPS, INNER_LR = 5, 0.01


class PerTensorAdamMAML(MAML):
    """MAML whose inner Adam loops over tensors (the implementation before torch._foreach_*)."""

    def inner_update(self, task_params, names, values, grads, step, state):
        beta1, beta2 = self.adam_betas
        t = step + 1
        if "first" not in state:
            state["first"] = [torch.zeros_like(p) for p in values]
            state["second"] = [torch.zeros_like(p) for p in values]
        updated = []
        for i, (p, g) in enumerate(zip(values, grads)):
            state["first"][i] = beta1 * state["first"][i] + (1 - beta1) * g
            state["second"][i] = beta2 * state["second"][i] + (1 - beta2) * g * g
            m_hat = state["first"][i] / (1 - beta1 ** t)
            v_hat = state["second"][i] / (1 - beta2 ** t)
            updated.append(p - self.inner_lr * m_hat / ((v_hat + 1e-16).sqrt() + self.adam_eps))
        return updated


class CouplingPenalty:
    """(c/2)‖θ − mean_j φ_j‖² for every task: couples the tasks of the batch."""

    def __call__(self, anchor, task_params, step):
        k = next(iter(task_params.values())).shape[0]
        return sum(0.05 * (anchor[n] - task_params[n].mean(0)).pow(2).sum() for n in anchor).expand(k)


def learn2learn_loop(wrapper, batch: TaskBatch, loss) -> tuple[torch.Tensor, torch.Tensor]:
    """learn2learn's recipe, one task at a time, returning the same per-task losses and gradients."""
    meta_params = list(wrapper.parameters())
    losses, grads = [], []
    for i in range(batch.num_tasks):
        learner = wrapper.clone()
        for _ in range(INNER_STEPS):
            learner.adapt(loss(learner(batch.support_x[i]), batch.support_y[i]))
        query_loss = loss(learner(batch.query_x[i]), batch.query_y[i])
        losses.append(query_loss.detach())
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(query_loss, meta_params)]))
    return torch.stack(losses), torch.stack(grads)


def sinusoid_batch(k: int = 16, shots: int = 5, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    amplitude, phase = torch.rand(k, 1, 1, generator=g) * 4.9 + 0.1, torch.rand(k, 1, 1, generator=g) * torch.pi
    xs, xq = torch.rand(k, shots, 1, generator=g) * 10 - 5, torch.rand(k, shots, 1, generator=g) * 10 - 5
    return TaskBatch(xs, amplitude * torch.sin(xs + phase), xq, amplitude * torch.sin(xq + phase), torch.zeros(k, 1))


def image_batch(k: int = 4, ways: int = 5, shots: int = 1, query: int = 15, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(k, -1).clone()
    query_y = torch.arange(ways).repeat_interleave(query).expand(k, -1).clone()
    return TaskBatch(torch.randn(k, ways * shots, 3, 84, 84, generator=g), support_y,
                     torch.randn(k, ways * query, 3, 84, 84, generator=g), query_y, torch.zeros(k, 1))


def sinusoid_contenders() -> tuple[dict, TaskBatch, list[str]]:
    torch.manual_seed(0)
    batch = sinusoid_batch()
    mlp = build_model({"hidden": [32, 32]}, (1, 1))
    cavia_mlp = build_model({"hidden": [32, 32], "context": 4}, (1, 1))
    options = dict(inner_steps=INNER_STEPS, inner_lr=INNER_LR)
    penalised = MAML(mlp, **options)
    penalised.penalty = CouplingPenalty()
    penalised_per_copy = MAML(mlp, penalty_gradients="per_copy", **options)
    penalised_per_copy.penalty = CouplingPenalty()
    learners = {
        "maml": MAML(mlp, **options),
        "maml first_order": MAML(mlp, first_order=True, **options),
        "maml inner adam (foreach)": MAML(mlp, inner_optimizer="adam", **options),
        "maml inner adam (per-tensor loop)": PerTensorAdamMAML(mlp, inner_optimizer="adam", **options),
        "metasgd": MetaSGD(mlp, **options),
        "cavia (4 context inputs)": CAVIA(cavia_mlp, **options),
        "reptile": Reptile(mlp, **options),
        "maml + coupling penalty (jacobian)": penalised,
        "maml + coupling penalty (per_copy)": penalised_per_copy,
    }
    steps = {name: (lambda learner=learner: learner.meta_gradients(batch)) for name, learner in learners.items()}
    l2l_maml = l2l.algorithms.MAML(mlp, lr=INNER_LR)
    l2l_metasgd = l2l.algorithms.MetaSGD(mlp, lr=INNER_LR)
    steps["learn2learn MAML loop"] = lambda: learn2learn_loop(l2l_maml, batch, F.mse_loss)
    steps["learn2learn MetaSGD loop"] = lambda: learn2learn_loop(l2l_metasgd, batch, F.mse_loss)
    checks = equal_work(learners, steps, batch,
                        ("maml", "learn2learn MAML loop"), ("metasgd", "learn2learn MetaSGD loop"))
    return steps, batch, checks


def conv4_contenders(query: int) -> tuple[dict, TaskBatch, list[str]]:
    torch.manual_seed(0)
    batch = image_batch(query=query)
    conv = build_model({"name": "conv4", "filters": 32}, ((3, 84, 84), 5))
    cavia_conv = build_model({"name": "conv4", "filters": 32, "context": 100}, ((3, 84, 84), 5))
    options = dict(inner_steps=INNER_STEPS, inner_lr=INNER_LR, loss="cross_entropy")
    generic = MAML(conv, **options)
    generic._batched_forward = vmap(generic._forward_one_task)
    learners = {
        "maml": MAML(conv, **options),
        "maml first_order": MAML(conv, first_order=True, **options),
        "maml (generic vmap path)": generic,
        "maml task_chunk 1": MAML(conv, task_chunk=1, **options),
        "metasgd": MetaSGD(conv, **options),
        "cavia (100 context, FiLM block 3)": CAVIA(cavia_conv, **options),
        "reptile": Reptile(conv, **options),
        "protonet (embedding only)": ProtoNet(conv),
    }
    steps = {name: (lambda learner=learner: learner.meta_gradients(batch)) for name, learner in learners.items()}
    l2l_maml = l2l.algorithms.MAML(conv, lr=INNER_LR)
    l2l_metasgd = l2l.algorithms.MetaSGD(conv, lr=INNER_LR)
    steps["learn2learn MAML loop"] = lambda: learn2learn_loop(l2l_maml, batch, F.cross_entropy)
    steps["learn2learn MetaSGD loop"] = lambda: learn2learn_loop(l2l_metasgd, batch, F.cross_entropy)
    checks = equal_work(learners, steps, batch,
                        ("maml", "learn2learn MAML loop"), ("metasgd", "learn2learn MetaSGD loop"))
    return steps, batch, checks


def equal_work(learners: dict, steps: dict, batch: TaskBatch, *pairs) -> list[str]:
    """Both sides compute the same per-task gradients (float32 rounding apart)."""
    lines = []
    for ours, theirs in pairs:
        _, mine = learners[ours].meta_gradients(batch)
        _, reference = steps[theirs]()
        lines.append(f"equal work: max |{ours} - {theirs}| per-task gradients = "
                     f"{(mine - reference).abs().max().item():.2e} (largest entry {reference.abs().max().item():.2e})")
    return lines


def seconds_per_step(step, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return (time.perf_counter() - start) / iterations


def run_setting(title: str, build, iterations: int, repeats: int) -> None:
    steps, _, checks = build()
    print(f"\n== {title} ==")
    for line in checks:
        print(line)
    for step in steps.values():  # warm-up
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved repeats
        for name, step in steps.items():
            times[name].append(seconds_per_step(step, iterations))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference = median["maml"]
    print(f"{'learner':38s} {'ms/step (median)':>17s} {'vs our MAML':>12s}")
    for name, seconds in median.items():
        print(f"{name:38s} {1000 * seconds:17.1f} {seconds / reference:11.2f}x")
    print("'vs our MAML' = step time / our MAML's step time (1.00x = as fast; learn2learn rows: how much "
          "slower the one-task-at-a-time loop is).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--query", type=int, default=15, help="query images per class in the conv4 setting")
    parser.add_argument("--sinusoid-iterations", type=int, default=50)
    parser.add_argument("--conv4-iterations", type=int, default=1)
    parser.add_argument("--only", choices=["sinusoid", "conv4"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} interleaved repeats")
    if args.only in (None, "sinusoid"):
        run_setting("sinusoid: MLP 1-32-32-1, 16 tasks, 5+5 points, 5 inner SGD steps",
                    sinusoid_contenders, args.sinusoid_iterations, args.repeats)
    if args.only in (None, "conv4"):
        run_setting(f"conv4: 5-way 1-shot 3x84x84 random images, {args.query} query/class, 4 tasks, 5 inner SGD steps",
                    lambda: conv4_contenders(args.query), args.conv4_iterations, args.repeats)


if __name__ == "__main__":
    main()
