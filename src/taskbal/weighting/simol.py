"""SIMOL: soft-improvement multi-objective meta-learning (Yu, Chen, Wang & Kwok, ICLR 2023).

The outer step descends along the re-weighted mean of the per-task meta-gradients
(Algorithm 1, step 6; Eq. 15 with MAML)::

    w ← w − β · (1/k) Σ_τ r_θ(τ) ∇_w L_τ(w_τ*(w))        (r_θ detached: Lemma 4.1)

and the re-weighting network r_θ(τ) (its last layer's output squared, so r > 0) is
trained by gradient *ascent* on the mini-batch objective (Eqs. 13–14)::

    K̃_B(θ) = −1/(2λ̂') · ‖(1/k) Σ_τ r_θ(τ) g_τ‖² − λ̂''/2 · ((1/k) Σ_τ r_θ(τ) − 1)²
    θ ← θ + β' ∇_θ K̃_B(θ)

With G = [⟨g_i, g_j⟩] the k×k Gram matrix, ‖·‖² = rᵀGr / k² (``objective``). The training
step computes ∇_θ K̃_B in closed form (``theta_gradients``):
∂K̃/∂r = −Gr/(λ̂'k²) − λ̂''/k·(r̄ − 1), with Gr = g(gᵀr) (G is never formed), back-propagated
by hand through r = out², the linear layers and their ReLUs. These are the numbers autograd
gives for ``objective`` (to float rounding; tests/test_simol.py checks both) at about half of
the weighting's former cost (benchmarks/bench_weighting.py).

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
import torch.nn.functional as F
from torch import nn

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
        # One multi-tensor SGD update / one fused Adam kernel over the network's tensors: the same
        # update as the per-tensor loops (Adam's to float rounding) at a fraction of the overhead.
        if theta_optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=theta_lr, foreach=True)
        elif theta_optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=theta_lr, fused=True)
        else:
            raise ValueError(f"weighting.theta_optimizer: expected 'sgd' or 'adam', got {theta_optimizer!r}")

    def weights(self, tasks: TaskGradients) -> torch.Tensor:
        """r_θ(τ) for the k tasks: the squared output of the re-weighting network."""
        return self.net(self.network_inputs(tasks)).squeeze(1).pow(2).to(tasks.grads.dtype)

    def objective(self, r: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """K̃_B(θ) of Eq. 13 from the weights and the Gram matrix of the task gradients."""
        k = r.shape[0]
        norm_sq = r @ gram @ r / k**2
        return -norm_sq / (2 * self.lambda_grad) - self.lambda_mean / 2 * (r.mean() - 1) ** 2

    def network_inputs(self, tasks: TaskGradients) -> torch.Tensor:
        if self.net[0].weight.device != tasks.features.device:
            self.net.to(tasks.features.device)  # in place: the optimiser keeps the same parameters
        net_dtype = self.net[0].weight.dtype
        inputs = tasks.features.to(net_dtype)
        if self.features == "support+loss":
            inputs = torch.cat([inputs, tasks.losses[:, None].to(net_dtype)], dim=1)
        return inputs

    @torch.no_grad()
    def theta_gradients(self, tasks: TaskGradients) -> tuple[float, list[torch.Tensor], torch.Tensor]:
        """K̃_B(θ), ∇_θ K̃_B(θ) (one tensor per parameter of the network) and r_θ, by hand.

        Forward through the Linear/ReLU stack keeping the activations, ∂K̃/∂r in closed form,
        then the chain rule backwards: ∂K̃/∂out = 2·out·∂K̃/∂r, and per linear layer
        ∂W = δᵀh_in, ∂b = Σδ, δ_in = (δW)·[h_in > 0].
        """
        activations = [self.network_inputs(tasks)]
        layers = list(self.net)
        for layer in layers:
            if isinstance(layer, nn.Linear):
                activations.append(F.linear(activations[-1], layer.weight, layer.bias))
            elif isinstance(layer, nn.ReLU):
                activations.append(torch.relu(activations[-1]))
            else:  # pragma: no cover - SIMOL builds Linear/ReLU networks only
                raise TypeError(f"SIMOL: no closed-form gradient through {type(layer).__name__}")
        out = activations[-1].squeeze(1)
        r = out.pow(2).to(tasks.grads.dtype)  # K̃ in the gradients' precision, as ``objective``
        k = r.shape[0]
        gram_r = tasks.grads @ (tasks.grads.T @ r)  # G r without forming G
        r_gram_r, mean_gap = torch.stack([r @ gram_r, r.mean() - 1]).tolist()
        objective = -(r_gram_r / k**2) / (2 * self.lambda_grad) - self.lambda_mean / 2 * mean_gap**2
        d_r = gram_r * (-1.0 / (self.lambda_grad * k**2)) - self.lambda_mean / k * mean_gap
        delta = (2 * out * d_r.to(out.dtype))[:, None]
        gradients = []
        for index in range(len(layers) - 1, -1, -1):
            layer, below = layers[index], activations[index]
            if isinstance(layer, nn.Linear):
                gradients += [delta.sum(0), delta.T @ below]  # bias, weight (reversed below)
                if index > 0:
                    delta = delta @ layer.weight
            else:  # ReLU: pass δ where the unit was active (autograd's own ReLU backward)
                delta = torch.ops.aten.threshold_backward(delta, activations[index + 1], 0)
        return objective, gradients[::-1], r

    def ascend(self, tasks: TaskGradients) -> tuple[float, torch.Tensor]:
        """One step θ ← θ + β' ∇_θ K̃_B(θ); returns K̃_B before the step and r_θ(τ) before the step."""
        objective, gradients, r = self.theta_gradients(tasks)
        for parameter, gradient in zip(self.net.parameters(), gradients):
            parameter.grad = -gradient  # the optimisers minimise: ascend on K̃ by descending on −K̃
        self.optimizer.step()  # (the next call overwrites .grad, so no zero_grad is needed)
        return objective, r

    def combine(self, tasks: TaskGradients) -> Combined:
        if self.theta_at == "current":
            objective, r = self.ascend(tasks)
            stats = {"simol_objective": objective}
        else:
            with torch.no_grad():
                r = self.weights(tasks)
            stats = {}
        direction = r @ tasks.grads / tasks.num_tasks
        r_mean, r_min, r_max = torch.stack([r.mean(), r.min(), r.max()]).tolist()
        stats.update({"simol_r_mean": r_mean, "simol_r_min": r_min, "simol_r_max": r_max})
        return Combined(direction=direction, weights=r / tasks.num_tasks, stats=stats)

    def after_step(self, tasks: TaskGradients) -> dict[str, float]:
        return {"simol_objective": self.ascend(tasks)[0]} if self.theta_at == "next" else {}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
