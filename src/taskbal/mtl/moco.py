"""MoCo: stochastic multi-objective descent with tracked gradients (the thesis' MOBLO baseline).

Paper: Fernando, Shen, Liu, Chaudhury, Murugesan & Chen (ICLR 2023), "Mitigating Gradient Bias in
Multi-objective Learning: A Provably Convergent Approach". The thesis (Ye 2024, §3.4, Table 3.1,
Fig. A.1, Table 3.2) compares MOML and FORUM with "MoCo": the same ITD hypergradients as MOML,
combined by MoCo instead of MGDA. In this package that is ``moml`` with ``combiner: moco``.

Per call k = 1, 2, … with task gradients g_i and losses ℓ_i:

    g_i ← g_i / (‖g_i‖ + 1e-8) · ℓ_i                         (normalize='loss'; 'none' keeps g_i)
    y_i ← y_i − β_k (y_i − g_i),            β_k = beta / k^beta_sigma        (tracking)
    λ   ← P(λ − γ_k (Y Yᵀ + ρ I) λ),        γ_k = gamma / k^gamma_sigma
    direction = Yᵀ λ

Hyper-parameters (the thesis gives none; these are LibMTL's defaults, used by the thesis'
FORUM code): beta 0.5, beta_sigma 0.5, gamma 0.1, gamma_sigma 0.5, rho 0.

Deliberate choices:
  * ``lambda_update='softmax'`` (default) is the official code's P = softmax of the updated
    weights (LibMTL ``MoCo.aggregated_grad``); ``'projection'`` is the paper's Euclidean
    projection onto the simplex.
  * y starts at 0 and λ at 1/k (LibMTL); the first call then gives y = β_1 g.
  * Reported weights are λ (the coefficients of the TRACKED gradients Y, not of the raw g_i).
  * The state (step, y, λ) is checkpointed, so a resumed run continues the same tracking.
"""
from __future__ import annotations

import torch

from ..options import OptionError
from ..weighting.base import Combined, TaskGradients, Weighting

LAMBDA_UPDATES = ("softmax", "projection")
NORMALIZATIONS = ("loss", "none")


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {x >= 0, Σx = 1} (sort-based, Held et al. / Duchi et al. 2008)."""
    sorted_v, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(sorted_v, 0) - 1.0
    ranks = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    support = sorted_v - cumulative / ranks > 0
    rho = int(torch.nonzero(support).max())
    theta = cumulative[rho] / (rho + 1)
    return torch.clamp(v - theta, min=0.0)


class MoCo(Weighting):
    name = "moco"

    def __init__(self, num_params: int, feature_dim: int, seed: int, beta: float = 0.5, beta_sigma: float = 0.5,
                 gamma: float = 0.1, gamma_sigma: float = 0.5, rho: float = 0.0, normalize: str = "loss",
                 lambda_update: str = "softmax"):
        super().__init__(num_params, feature_dim, seed)
        for field, value in (("beta", beta), ("gamma", gamma)):
            if not value > 0:
                raise OptionError(field, f"must be > 0, got {value}")
        for field, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma), ("rho", rho)):
            if value < 0:
                raise OptionError(field, f"must be >= 0, got {value}")
        if lambda_update not in LAMBDA_UPDATES:
            raise OptionError("lambda_update", f"unknown {lambda_update!r}; known: {list(LAMBDA_UPDATES)}")
        if normalize not in NORMALIZATIONS:
            raise OptionError("normalize", f"unknown {normalize!r}; known: {list(NORMALIZATIONS)}")
        self.beta, self.beta_sigma, self.gamma, self.gamma_sigma = beta, beta_sigma, gamma, gamma_sigma
        self.rho, self.normalize, self.lambda_update = rho, normalize, lambda_update
        self.step = 0
        self.tracked: torch.Tensor | None = None  # y [k, d]
        self.lam: torch.Tensor | None = None  # λ [k]

    def combine(self, tasks: TaskGradients) -> Combined:
        grads = tasks.grads.to(torch.float64)
        k = grads.shape[0]
        if self.tracked is None:
            self.tracked = torch.zeros_like(grads)
            self.lam = torch.full((k,), 1.0 / k, dtype=torch.float64, device=grads.device)
        if self.tracked.shape != grads.shape:
            raise ValueError(f"moco: the task set changed shape from {tuple(self.tracked.shape)} to "
                             f"{tuple(grads.shape)}; MoCo tracks a fixed set of objectives")
        self.step += 1
        if self.normalize == "loss":
            norms = grads.norm(dim=1, keepdim=True)
            grads = grads / (norms + 1e-8) * tasks.losses.to(torch.float64)[:, None]
        beta_k = self.beta / self.step**self.beta_sigma
        gamma_k = self.gamma / self.step**self.gamma_sigma
        self.tracked = self.tracked - beta_k * (self.tracked - grads.to(self.tracked.device))
        gram = self.tracked @ self.tracked.T + self.rho * torch.eye(k, dtype=torch.float64, device=grads.device)
        moved = self.lam - gamma_k * (gram @ self.lam)
        self.lam = torch.softmax(moved, 0) if self.lambda_update == "softmax" else project_to_simplex(moved)
        direction = (self.lam @ self.tracked).to(tasks.grads.dtype)
        return Combined(direction=direction, weights=self.lam.to(tasks.grads.dtype).clone(),
                        stats={"moco_tracked_norm": float(direction.norm())})

    def state_dict(self) -> dict:
        return {"step": self.step, "tracked": None if self.tracked is None else self.tracked.clone(),
                "lam": None if self.lam is None else self.lam.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.tracked = None if state["tracked"] is None else state["tracked"].clone()
        self.lam = None if state["lam"] is None else state["lam"].clone()
