"""Step time of every learner relative to our MAML, and learn2learn's MAML / MetaSGD loops as reference.

One step = ``meta_gradients`` of one meta-batch: post-adaptation query losses and the k per-task
meta-gradients [k, d] that every weighting needs. learn2learn's loops do the same work one task at a
time (clone, adapt, query loss, ``autograd.grad`` of that task's loss). Two settings:

- sinusoid: MLP 1→32→32→1, 16 tasks, 5 support + 5 query points, 5 inner SGD steps (lr 0.01);
- conv4: 5-way 1-shot mini-ImageNet-sized random images (3×84×84), 32 filters, 4 tasks per meta-batch,
  ``--query`` query images per class, 5 inner SGD steps (lr 0.01);
- omniglot: the issue's setting, conv4 with 64 filters on 1×28×28 random images, 16 tasks of 5-way
  ``--shots``-shot with ``--query`` queries per class, 5 inner SGD steps (lr 0.4, Finn et al.'s
  Omniglot rate), second order. learn2learn's loop against our MAML with the default
  ``task_chunk: auto`` and with ``task_chunk`` null (one graph for all tasks) and 1; each row also
  gives the achieved GFLOP/s (FLOPs counted once with ``torch.utils.flop_counter.FlopCounterMode`` over
  learn2learn's step, forward and backward: all contenders do the same arithmetic) against the
  device's fp32 peak. Two control rows say where the difference comes from: ours pooling with
  ``F.max_pool2d`` instead of conv4's ``max_pool_2x2``, and learn2learn's loop on a model that pools
  with ``max_pool_2x2`` too.

Second-order unless the name says otherwise. "task_chunk 1" runs the tasks one graph at a time (same
results, less memory); the default ``auto`` does that for conv nets on the CPU. CAVIA
uses the same network with context (4 inputs for the MLP, 100 parameters into FiLM on block 3 for
conv4). "coupling penalty" is MAML with a quadratic centroid penalty coupling the tasks (a local
stand-in for Nash-GBML's penalties, same cost structure), with exact per-task rows
(``penalty_gradients: jacobian``) or one-backward ``per_copy`` rows. Contenders are timed
interleaved in one process so machine noise hits all alike; read the ratios, not the absolute numbers.
``--device cuda`` runs every setting on the GPU (synchronising around each step).

The CPU peak is cores × clock × fp32 FLOPs per cycle per core from the instruction set: AVX-512 with
``--fma-units`` (default 2) 512-bit FMA units = 2 × 16 lanes × 2 FLOPs (multiply and add) = 64,
AVX2 + FMA = 32, else 8 (SSE). The clock is ``--ghz``, by default /proc/cpuinfo's "cpu MHz" (under a
hypervisor often the nominal clock, not the boost clock). A large sgemm (``torch.mm``, MKL) and the
same product as a channels-last 1×1 convolution (oneDNN) measure an achieved peak as a check; when
they beat the nominal peak the clock is higher than assumed, and the script says so.

    python benchmarks/bench_learners.py [--repeats 3] [--threads 1] [--query 15] [--shots 1]
                                        [--only sinusoid|conv4|omniglot] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from contextlib import contextmanager

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch.func import vmap
from torch.utils.flop_counter import FlopCounterMode

from taskbal.learners import CAVIA, MAML, MetaSGD, ProtoNet, Reptile, TaskBatch
from taskbal.models import build_model, conv4

INNER_STEPS, INNER_LR = 5, 0.01
OMNIGLOT_LR = 0.4  # Finn et al.'s inner rate on Omniglot
DEVICE = torch.device("cpu")


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
    return TaskBatch(xs, amplitude * torch.sin(xs + phase), xq, amplitude * torch.sin(xq + phase),
                     torch.zeros(k, 1)).to(DEVICE)


def image_batch(k: int = 4, ways: int = 5, shots: int = 1, query: int = 15, seed: int = 0,
                shape: tuple[int, int, int] = (3, 84, 84)) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(k, -1).clone()
    query_y = torch.arange(ways).repeat_interleave(query).expand(k, -1).clone()
    return TaskBatch(torch.randn(k, ways * shots, *shape, generator=g), support_y,
                     torch.randn(k, ways * query, *shape, generator=g), query_y, torch.zeros(k, 1)).to(DEVICE)


def sinusoid_contenders() -> tuple[dict, TaskBatch, list[str]]:
    torch.manual_seed(0)
    batch = sinusoid_batch()
    mlp = build_model({"hidden": [32, 32]}, (1, 1)).to(DEVICE)
    cavia_mlp = build_model({"hidden": [32, 32], "context": 4}, (1, 1)).to(DEVICE)
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
    conv = build_model({"name": "conv4", "filters": 32}, ((3, 84, 84), 5)).to(DEVICE)
    cavia_conv = build_model({"name": "conv4", "filters": 32, "context": 100}, ((3, 84, 84), 5)).to(DEVICE)
    options = dict(inner_steps=INNER_STEPS, inner_lr=INNER_LR, loss="cross_entropy")
    generic = MAML(conv, **options)
    generic._batched_forward = vmap(generic._forward_one_task)
    learners = {
        "maml": MAML(conv, **options),
        "maml first_order": MAML(conv, first_order=True, **options),
        "maml (generic vmap path)": generic,
        "maml task_chunk null": MAML(conv, task_chunk=None, **options),
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


class GatherPoolBlock(conv4.ConvBlock):
    """A conv4 block whose one-task forward pools with ``max_pool_2x2`` (control row for learn2learn)."""

    def forward(self, x, context):
        h = conv4.max_pool_2x2(self.norm(self.conv(x)))
        if self.film is not None:
            raise NotImplementedError("control row: no FiLM")
        return F.relu(h)


@contextmanager
def nchw_max_pool():
    """conv4's batched forward pools with plain ``F.max_pool2d`` inside (control row)."""
    saved = conv4.max_pool_2x2
    conv4.max_pool_2x2 = lambda h: F.max_pool2d(h, 2)
    try:
        yield
    finally:
        conv4.max_pool_2x2 = saved


def omniglot_contenders(shots: int, query: int, tasks: int) -> tuple[dict, TaskBatch, list[str], float]:
    """The issue's Omniglot step; also returns its FLOP count (one meta-step, forward and backward)."""
    torch.manual_seed(0)
    batch = image_batch(k=tasks, shots=shots, query=query, shape=(1, 28, 28))
    conv = build_model({"name": "conv4", "filters": 64}, ((1, 28, 28), 5)).to(DEVICE)
    options = dict(inner_steps=INNER_STEPS, inner_lr=OMNIGLOT_LR, loss="cross_entropy")
    learners = {"maml (task_chunk auto)": MAML(conv, **options),
                "maml task_chunk null": MAML(conv, task_chunk=None, **options),
                "maml task_chunk 1": MAML(conv, task_chunk=1, **options)}
    steps = {"learn2learn MAML loop": None}
    steps.update({name: (lambda learner=learner: learner.meta_gradients(batch)) for name, learner in learners.items()})
    l2l_maml = l2l.algorithms.MAML(conv, lr=OMNIGLOT_LR)
    steps["learn2learn MAML loop"] = lambda: learn2learn_loop(l2l_maml, batch, F.cross_entropy)
    if DEVICE.type == "cpu":  # controls: where the CPU difference comes from (max_pool_2x2 is F.max_pool2d elsewhere)
        def auto_with_nchw_pool(learner=learners["maml (task_chunk auto)"]):
            with nchw_max_pool():
                return learner.meta_gradients(batch)

        steps["control: maml auto, F.max_pool2d"] = auto_with_nchw_pool
        same_pool = copy.deepcopy(conv)
        for block in same_pool.embedding.blocks:
            block.__class__ = GatherPoolBlock
        l2l_same_pool = l2l.algorithms.MAML(same_pool, lr=OMNIGLOT_LR)
        steps["control: learn2learn, max_pool_2x2"] = lambda: learn2learn_loop(l2l_same_pool, batch, F.cross_entropy)
    checks = equal_work(learners, steps, batch, *((name, "learn2learn MAML loop") for name in learners))
    # FlopCounterMode over learn2learn's step: one task per graph, plain convolutions. (It over-counts
    # a grouped convolution's weight gradient by the number of groups, so not over our whole-batch graph;
    # every contender does the same arithmetic.)
    with FlopCounterMode(display=False) as counter:
        steps["learn2learn MAML loop"]()
    return steps, batch, checks, float(counter.get_total_flops())


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(step, iterations: int) -> float:
    synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize()
    return (time.perf_counter() - start) / iterations


def interleaved_medians(steps: dict, iterations: int, repeats: int) -> dict[str, float]:
    for step in steps.values():  # warm-up
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved repeats
        for name, step in steps.items():
            times[name].append(seconds_per_step(step, iterations))
    return {name: statistics.median(values) for name, values in times.items()}


def run_setting(title: str, build, iterations: int, repeats: int) -> None:
    steps, _, checks = build()
    print(f"\n== {title} ==")
    for line in checks:
        print(line)
    median = interleaved_medians(steps, iterations, repeats)
    reference = median["maml"]
    print(f"{'learner':38s} {'ms/step (median)':>17s} {'vs our MAML':>12s}")
    for name, seconds in median.items():
        print(f"{name:38s} {1000 * seconds:17.1f} {seconds / reference:11.2f}x")
    print("'vs our MAML' = step time / our MAML's step time (1.00x = as fast; learn2learn rows: how much "
          "slower the one-task-at-a-time loop is).")


# -- peak FLOP/s ---------------------------------------------------------------------------------------------
def cpu_info() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flops_per_cycle(flags: set[str], fma_units: int) -> tuple[int, str]:
    """fp32 FLOPs per cycle of one core from its instruction set (an FMA counts as 2 FLOPs)."""
    if "avx512f" in flags:
        return fma_units * 16 * 2, f"AVX-512: {fma_units} FMA units x 16 fp32 lanes x 2"
    if "avx2" in flags and "fma" in flags:
        return fma_units * 8 * 2, f"AVX2: {fma_units} FMA units x 8 fp32 lanes x 2"
    return 8, "SSE: 4 fp32 lanes x (1 add + 1 multiply)"


def best_gflops(op, flops: float, repeats: int = 5) -> float:
    op()
    best = float("inf")
    for _ in range(repeats):
        best = min(best, seconds_per_step(op, 1))
    return flops / best / 1e9


def measured_peaks() -> dict[str, float]:
    """Achieved fp32 GFLOP/s of large matrix products on DEVICE (a sanity check of the peak)."""
    n = 2048
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    peaks = {f"sgemm {n}^3 (torch.mm)": best_gflops(lambda: a @ b, 2 * n ** 3)}
    if DEVICE.type == "cpu":  # the same product as a channels-last 1x1 convolution: oneDNN's GEMM kernels
        x = torch.randn(n // 64, n, 8, 8).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
        peaks[f"sgemm {n}^3 (oneDNN 1x1 conv)"] = best_gflops(lambda: F.conv2d(x, w), 2 * n ** 3)
    return peaks


def peak_report(threads: int, ghz: float | None, fma_units: int) -> tuple[float | None, float]:
    """Print the assumed and measured peaks; return (nominal peak, best measured) in GFLOP/s."""
    measured = measured_peaks()
    best = max(measured.values())
    for name, value in measured.items():
        print(f"measured: {name}: {value:.1f} GFLOP/s")
    if DEVICE.type == "cuda":
        print(f"device: {torch.cuda.get_device_name()}; peak = the measured sgemm (TF32 off)")
        return None, best
    info = cpu_info()
    per_cycle, how = cpu_flops_per_cycle(set(info.get("flags", "").split()), fma_units)
    ghz = ghz or (float(info["cpu MHz"]) / 1000 if "cpu MHz" in info else None)
    if ghz is None:
        print("no clock known (pass --ghz): fractions of the measured peak only")
        return None, best
    nominal = threads * ghz * per_cycle
    print(f"CPU: {info.get('model name', '?')}; nominal fp32 peak = {threads} core(s) x {ghz:.2f} GHz x "
          f"{per_cycle} FLOP/cycle ({how}) = {nominal:.1f} GFLOP/s")
    if best > nominal:
        print(f"the measured {best:.1f} GFLOP/s beats it: the core runs at >= {best / threads / per_cycle:.2f} GHz "
              f"(boost clock), so the measured figure is the better peak")
    return nominal, best


def run_omniglot(args) -> None:
    title = (f"omniglot: conv4 64 filters, 1x28x28 random images, {args.omniglot_tasks} tasks 5-way "
             f"{args.shots}-shot, {args.query} query/class, {INNER_STEPS} inner SGD steps lr {OMNIGLOT_LR}, "
             f"second order, {DEVICE.type}")
    print(f"\n== {title} ==")
    nominal, measured = peak_report(args.threads, args.ghz, args.fma_units)
    steps, _, checks, flops = omniglot_contenders(args.shots, args.query, args.omniglot_tasks)
    for line in checks:
        print(line)
    print(f"FLOPs per meta-step (FlopCounterMode, forward + backward): {flops / 1e9:.1f} GFLOP")
    median = interleaved_medians(steps, 1, args.repeats)
    reference = median["learn2learn MAML loop"]
    header = f"{'contender':36s} {'s/step':>8s} {'l2l / this':>11s} {'GFLOP/s':>8s} {'of measured':>12s}"
    print(header + (f" {'of nominal':>11s}" if nominal else ""))
    for name, seconds in median.items():
        rate = flops / seconds / 1e9
        row = f"{name:36s} {seconds:8.3f} {reference / seconds:10.2f}x {rate:8.1f} {100 * rate / measured:11.0f}%"
        print(row + (f" {100 * rate / nominal:10.0f}%" if nominal else ""))
    print("'l2l / this' = learn2learn's step time / this one (above 1: faster than learn2learn's loop); "
          "'of measured' / 'of nominal': achieved GFLOP/s as a share of the peaks above.")


def main() -> None:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--query", type=int, default=15, help="query images per class (conv4, omniglot settings)")
    parser.add_argument("--shots", type=int, default=1, help="support images per class in the omniglot setting")
    parser.add_argument("--omniglot-tasks", type=int, default=16)
    parser.add_argument("--sinusoid-iterations", type=int, default=50)
    parser.add_argument("--conv4-iterations", type=int, default=1)
    parser.add_argument("--only", choices=["sinusoid", "conv4", "omniglot"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument("--ghz", type=float, help="core clock for the nominal CPU peak (default: /proc/cpuinfo)")
    parser.add_argument("--fma-units", type=int, default=2, help="vector FMA units per core (nominal CPU peak)")
    args = parser.parse_args()
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {DEVICE}, median of {args.repeats} interleaved "
          f"repeats, pid {os.getpid()}")
    if args.only in (None, "sinusoid"):
        run_setting("sinusoid: MLP 1-32-32-1, 16 tasks, 5+5 points, 5 inner SGD steps",
                    sinusoid_contenders, args.sinusoid_iterations, args.repeats)
    if args.only in (None, "conv4"):
        run_setting(f"conv4: 5-way 1-shot 3x84x84 random images, {args.query} query/class, 4 tasks, 5 inner SGD steps",
                    lambda: conv4_contenders(args.query), args.conv4_iterations, args.repeats)
    if args.only in (None, "omniglot"):
        run_omniglot(args)


if __name__ == "__main__":
    main()
