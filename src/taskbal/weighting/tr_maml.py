"""TR-MAML (Collins, Mokhtari & Shakkottai, "Task-Robust Model-Agnostic Meta-Learning", NeurIPS 2020).

Minimax over a distribution p on the m training tasks (or training groups: the skewed
sinusoid's 100 amplitude bins), min_w max_{p∈Δ} Σ_i p_i L_i(w), solved by stochastic
gradient descent on w and projected gradient ascent on p:

- direction: Σ_{b∈batch} (m/C)·p_{id_b}·∇L_b, with C the meta-batch size, so at p uniform
  the weights are 1/C (plain MAML);
- after the step: p ← Π_Δ(p + step_size·ĝ_p), where ĝ_p[i] sums the (detached) losses of
  the batch's copies of task i at the same w (the losses the direction was computed at);
  tasks not in the batch get 0. Π_Δ is the sort-based Euclidean projection (simplex.py).

This follows the authors' public sinusoid code (as the Nash-GBML paper's "task-probability
learning rate" 1e-5 implies): there the ascent increment is step_size·L for every
copy of a task in the batch, without the unbiasing factor m/C of the paper's Eq. 9 (DA-MAML,
damaml.py, keeps that factor), and p is updated with the losses at the same w as the step.
One deliberate difference: that code differentiates Σ_b m·p_{id_b}·L_b (a sum, not a mean, over
the batch), i.e. C times our direction; under Adam a constant factor only changes the weight
of Adam's ε, and the 1/C keeps p = uniform exactly equal to plain MAML.

Options:
- ``step_size``: p's learning rate η_p (Nash-GBML sinusoid: 1e-5).
- ``variant``: ``distribution`` (default, the algorithm above) or ``batch_max`` (the Nash-GBML
  paper's Sec. 3.2 wording, F = max over the batch: the direction is the gradient of the
  highest-loss task of the batch; p is not used).
- ``duplicates``: how repeated pool ids in one batch enter ĝ_p: ``sum`` (default; every
  occurrence adds its loss, the unbiased estimate of Eq. 28) or ``once`` (each id counted once
  with the mean loss of its copies).
"""
from __future__ import annotations

import torch

from ..options import OptionError
from .base import Combined, TaskGradients, Weighting
from .simplex import project_to_simplex


def pool_loss_sums(tasks: TaskGradients, num_pool: int, duplicates: str) -> torch.Tensor:
    """[m] vector: for each pool id, the sum (or mean, ``duplicates='once'``) of its batch losses; 0 if absent."""
    ids = tasks.task_ids.to(torch.int64).cpu()
    losses = tasks.losses.detach().to(torch.float64).cpu()
    sums = torch.zeros(num_pool, dtype=torch.float64).index_add_(0, ids, losses)
    if duplicates == "once":
        counts = torch.zeros(num_pool, dtype=torch.float64).index_add_(0, ids, torch.ones_like(losses))
        sums = sums / counts.clamp(min=1.0)
    return sums


def check_pool(tasks: TaskGradients, method: str) -> int:
    if tasks.task_ids is None or tasks.num_pool_tasks <= 0:
        raise ValueError(f"weighting.name: {method} needs the training-pool ids of the batch's tasks "
                         "(TaskGradients.task_ids and num_pool_tasks); this runner does not provide them")
    ids = tasks.task_ids
    if ids.numel() != tasks.num_tasks or int(ids.min()) < 0 or int(ids.max()) >= tasks.num_pool_tasks:
        raise ValueError(f"{method}: task_ids must be {tasks.num_tasks} pool indices in "
                         f"[0, {tasks.num_pool_tasks}), got {ids.tolist()}")
    return int(tasks.num_pool_tasks)


class DistributionWeighting(Weighting):
    """Shared machinery of TR-MAML and DA-MAML: p on the simplex over the pool, weights (m/C)·p."""
    reads = frozenset({"grads", "losses", "task_ids", "num_pool_tasks"})

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, step_size: float,
                 duplicates: str = "sum"):
        super().__init__(num_params, feature_dim, seed)
        if not step_size >= 0:
            raise OptionError("step_size", f"must be ≥ 0, got {step_size!r}")
        if duplicates not in ("sum", "once"):
            raise OptionError("duplicates", f"expected 'sum' or 'once', got {duplicates!r}")
        self.step_size = float(step_size)
        self.duplicates = duplicates
        self.p: torch.Tensor | None = None  # [m] float64, created at the first batch (m comes from the pool)

    def distribution(self, tasks: TaskGradients) -> torch.Tensor:
        m = check_pool(tasks, self.name)
        if self.p is None:
            self.p = torch.full((m,), 1.0 / m, dtype=torch.float64)
        elif self.p.numel() != m:
            raise ValueError(f"{self.name}: the pool has {m} tasks but p has {self.p.numel()} entries")
        return self.p

    def ascent_scale(self, tasks: TaskGradients) -> float:
        return 1.0

    def weights_before_gradients(self, tasks: TaskGradients) -> torch.Tensor:
        """(m/C)·p of the batch's pool ids (float64)."""
        p = self.distribution(tasks)
        return (p.numel() / tasks.num_tasks) * p[tasks.task_ids.to(torch.int64).cpu()]

    def combine(self, tasks: TaskGradients) -> Combined:
        weights = self.weights_before_gradients(tasks).to(dtype=tasks.grads.dtype, device=tasks.grads.device)
        return self.combine_weighted(tasks, weights, weights @ tasks.grads)

    def combine_weighted(self, tasks: TaskGradients, weights: torch.Tensor, direction: torch.Tensor) -> Combined:
        """The direction as it is, and p's ascent step on the batch's losses."""
        p = self.distribution(tasks)
        gradient_p = pool_loss_sums(tasks, p.numel(), self.duplicates)
        self.p = project_to_simplex(p + self.step_size * self.ascent_scale(tasks) * gradient_p)
        stats = {"p_max": float(self.p.max()), "p_min": float(self.p.min()),
                 "p_entropy": float(-(self.p * torch.log(self.p.clamp(min=1e-300))).sum())}
        return Combined(direction=direction, weights=weights, stats=stats)

    def state_dict(self) -> dict:
        return {"p": None if self.p is None else self.p.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.p = None if state["p"] is None else state["p"].clone().to(torch.float64)


class TRMAML(DistributionWeighting):
    name = "tr_maml"

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, step_size: float = 1e-5,
                 variant: str = "distribution", duplicates: str = "sum"):
        super().__init__(num_params, feature_dim, seed, step_size=step_size, duplicates=duplicates)
        if variant not in ("distribution", "batch_max"):
            raise OptionError("variant", f"expected 'distribution' or 'batch_max', got {variant!r}")
        self.variant = variant

    def weights_before_gradients(self, tasks: TaskGradients) -> torch.Tensor | None:
        return super().weights_before_gradients(tasks) if self.variant == "distribution" else None

    def combine(self, tasks: TaskGradients) -> Combined:
        if self.variant == "distribution":
            return super().combine(tasks)
        chosen = int(torch.argmax(tasks.losses))
        weights = torch.zeros(tasks.num_tasks, dtype=tasks.grads.dtype, device=tasks.grads.device)
        weights[chosen] = 1.0
        return Combined(direction=tasks.grads[chosen].clone(), weights=weights,
                        stats={"max_task_loss": tasks.losses[chosen].item()})
