"""SIMOL: soft-improvement multi-objective meta-learning (Yu, Chen, Wang & Kwok, ICLR 2023).

The outer step descends along the re-weighted mean of the per-task meta-gradients
(Algorithm 1, step 6; Eq. 15 with MAML)::

    w ← w − β · (1/k) Σ_τ r_θ(τ) ∇_w L_τ(w_τ*(w))        (r_θ detached: Lemma 4.1)

and the re-weighting network r_θ(τ) (its last layer's output squared, so r > 0) is
trained by gradient *ascent* on the mini-batch objective (Eqs. 13–14)::

    K̃_B(θ) = −1/(2λ̂') · ‖(1/k) Σ_τ r_θ(τ) g_τ‖² − λ̂''/2 · ((1/k) Σ_τ r_θ(τ) − 1)²
    θ ← θ + β' ∇_θ K̃_B(θ)

The norm is computed from the k×k Gram matrix G = [⟨g_i, g_j⟩], so ‖·‖² = rᵀGr / k²
and no second copy of the k gradients is kept.

Choices where the paper is silent or inconsistent (notes/000_simol.md §7):
- Input of r_θ (A7, config ``features``): ``support`` feeds each task's support set
  (x_1, y_1, …, x_K, y_K); ``support+loss`` appends the task's post-adaptation query loss.
  The network is an MLP with the meta-learner's widths (``hidden``, default 32-32, ReLU).
- Initialisation: the output layer starts with small weights (``init_scale``) and bias 1,
  so r ≈ 1 and the first steps equal MAML's.
- Where ∇_θ K̃ is evaluated (A8, ``theta_at``): ``current`` reuses the gradients at w^s
  (Eqs. 13–14; what the paper's 15 % time overhead implies); ``next`` recomputes them at
  w^{s+1} as Algorithm 1 step 7 literally says (one more meta-gradient pass per step).
- λ̂', λ̂'', β' and the θ optimiser (A9, A12): the paper selected λ̂', λ̂'' from
  {0.001, 0.01, 0.1, 1} and β' from {0.01, 0.03, 0.1, 0.3, 1} without reporting the
  choice, and names Adam as the optimiser only for classification. Plain gradient
  ascent (Eq. 14, ``theta_optimizer: sgd``) diverges on the sinusoid for every β' of
  that grid we tried (0.1 within 3 iterations at 5 shots, 0.01 within 4 at 2 shots: the
  Gram matrix of the task gradients is large early in training), so the defaults are Adam with β' = 0.01,
  λ̂' = 1, λ̂'' = 1 — our choice, not the paper's.
"""
from __future__ import annotations

import torch

from ..models import MLP
from .base import Combined, TaskGradients, Weighting


class SIMOL(Weighting):
    name = "simol"

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, lambda_grad: float = 1.0,
                 lambda_mean: float = 1.0, theta_lr: float = 0.01, theta_optimizer: str = "adam",
                 hidden: list[int] | None = None, features: str = "support", init_scale: float = 0.01,
                 theta_at: str = "current"):
        super().__init__(num_params, feature_dim, seed)
        if features not in ("support", "support+loss"):
            raise ValueError(f"weighting.features: expected 'support' or 'support+loss', got {features!r}")
        if theta_at not in ("current", "next"):
            raise ValueError(f"weighting.theta_at: expected 'current' or 'next', got {theta_at!r}")
        self.lambda_grad, self.lambda_mean = lambda_grad, lambda_mean
        self.features, self.theta_at = features, theta_at
        self.needs_gradients_after_step = theta_at == "next"
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed + 7919)  # the network's initialisation depends on the run's seed only
        self.net = MLP(feature_dim + (features == "support+loss"), list(hidden or [32, 32]), 1)
        torch.random.set_rng_state(generator_state)
        with torch.no_grad():
            self.net[-1].weight.mul_(init_scale / max(self.net[-1].weight.abs().max().item(), 1e-12))
            self.net[-1].bias.fill_(1.0)
        if theta_optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=theta_lr)
        elif theta_optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=theta_lr)
        else:
            raise ValueError(f"weighting.theta_optimizer: expected 'sgd' or 'adam', got {theta_optimizer!r}")

    def weights(self, tasks: TaskGradients) -> torch.Tensor:
        """r_θ(τ) for the k tasks: the squared output of the re-weighting network."""
        self.net.to(tasks.features.device)  # in place: the optimiser keeps the same parameters
        net_dtype = self.net[0].weight.dtype
        inputs = tasks.features.to(net_dtype)
        if self.features == "support+loss":
            inputs = torch.cat([inputs, tasks.losses[:, None].to(net_dtype)], dim=1)
        return self.net(inputs).squeeze(1).pow(2).to(tasks.grads.dtype)

    def objective(self, r: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """K̃_B(θ) of Eq. 13 from the weights and the Gram matrix of the task gradients."""
        k = r.shape[0]
        norm_sq = r @ gram @ r / k**2
        return -norm_sq / (2 * self.lambda_grad) - self.lambda_mean / 2 * (r.mean() - 1) ** 2

    def ascend(self, tasks: TaskGradients) -> float:
        """One step θ ← θ + β' ∇_θ K̃_B(θ); returns K̃_B before the step."""
        gram = tasks.grads @ tasks.grads.T
        objective = self.objective(self.weights(tasks), gram)
        self.optimizer.zero_grad()
        (-objective).backward()  # the optimisers minimise: ascend on K̃ by descending on −K̃
        self.optimizer.step()
        return objective.item()

    def combine(self, tasks: TaskGradients) -> Combined:
        with torch.no_grad():
            r = self.weights(tasks)
        direction = r @ tasks.grads / tasks.num_tasks
        stats = {"simol_r_mean": r.mean().item(), "simol_r_min": r.min().item(), "simol_r_max": r.max().item()}
        if self.theta_at == "current":
            stats["simol_objective"] = self.ascend(tasks)
        return Combined(direction=direction, weights=r / tasks.num_tasks, stats=stats)

    def after_step(self, tasks: TaskGradients) -> dict[str, float]:
        return {"simol_objective": self.ascend(tasks)} if self.theta_at == "next" else {}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
