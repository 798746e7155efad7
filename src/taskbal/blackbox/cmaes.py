"""CMA-ES: covariance matrix adaptation evolution strategy (Hansen & Ostermeier, 2001), a thesis baseline.

The (μ/μ_w, λ)-CMA-ES with the default parameters of Hansen's tutorial ("The CMA Evolution
Strategy: A Tutorial", 2016, Table 1), minimising the equal-weight sum F = F₁ + … + F_m:

    y_k = B D z_k, x_k = m + σ y_k (k = 1..λ);  m ← Σ_{i≤μ} w_i x_{i:λ};  y_w = (m_new − m)/σ
    p_σ ← (1 − c_σ) p_σ + √(c_σ(2 − c_σ) μ_eff) C^{-½} y_w
    p_c ← (1 − c_c) p_c + h_σ √(c_c(2 − c_c) μ_eff) y_w
    C ← (1 − c_1 − c_μ + (1 − h_σ) c_1 c_c(2 − c_c)) C + c_1 p_c p_cᵀ + c_μ Σ_i w_i y_{i:λ} y_{i:λ}ᵀ
    σ ← σ exp((c_σ/d_σ)(‖p_σ‖/E‖N(0, I)‖ − 1))

with positive weights only (w_i ∝ ln((λ+1)/2) − ln i over the best μ = ⌊λ/2⌋). The eigen-decomposition
C = B D² Bᵀ is refreshed lazily, every 1/(10 n (c_1 + c_μ)) generations (Hansen's cost-saving rule).

The thesis runs the official ``pycma``; this is our own implementation of the same algorithm with
two differences to pycma's defaults: positive recombination weights only (pycma also applies the
"active" negative-weight covariance update) and no restarts or boundary handling. Population
λ = N (the thesis' sample size), σ₀ = ``init_sigma`` = 1 (Σ₀ = I), m₀ = the shared starting point.
"""
from __future__ import annotations

import numpy as np

from .base import BlackBoxOptimizer, Objectives, recombination_weights


class CMAES(BlackBoxOptimizer):
    name = "cmaes"
    STATE = ("sigma", "covariance", "basis", "scales", "path_sigma", "path_c", "eigen_iteration")

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray, rng: np.random.Generator,
                 init_sigma: float = 1.0):
        super().__init__(dim, num_objectives, population, mean, rng, init_sigma)
        n = self.dim
        self.weights, self.mu_eff = recombination_weights(self.population)
        mu_eff = self.mu_eff
        self.c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)
        self.c_sigma = (mu_eff + 2) / (n + mu_eff + 5)
        self.c_1 = 2 / ((n + 1.3) ** 2 + mu_eff)
        self.c_mu = min(1 - self.c_1, 2 * (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff))
        self.damping = 1 + 2 * max(0.0, np.sqrt((mu_eff - 1) / (n + 1)) - 1) + self.c_sigma
        self.chi_n = np.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))  # E‖N(0, I)‖
        self.eigen_gap = max(1, int(1.0 / (10 * n * (self.c_1 + self.c_mu))))
        self.sigma = self.init_sigma
        self.covariance = np.eye(n)
        self.basis, self.scales = np.eye(n), np.ones(n)  # C = B diag(scales²) Bᵀ
        self.path_sigma, self.path_c = np.zeros(n), np.zeros(n)
        self.eigen_iteration = 0

    def refresh_eigen(self) -> None:
        self.covariance = np.triu(self.covariance) + np.triu(self.covariance, 1).T  # exact symmetry
        eigenvalues, self.basis = np.linalg.eigh(self.covariance)
        self.scales = np.sqrt(np.maximum(eigenvalues, 1e-300))
        self.eigen_iteration = self.iteration

    def step(self, objectives: Objectives) -> dict[str, float]:
        if not self.sigma > 0:  # σ underflowed to 0: the distribution cannot move any more
            self.iteration += 1
            return {"sigma_mean": 0.0}
        if self.iteration - self.eigen_iteration >= self.eigen_gap:
            self.refresh_eigen()
        z = self.rng.standard_normal((self.population, self.dim))
        y = (z * self.scales) @ self.basis.T  # rows B D z_k
        points = self.mean + self.sigma * y
        order = np.argsort(self.query_sum(objectives, points), kind="stable")[: len(self.weights)]
        y_best = y[order]
        y_w = self.weights @ y_best
        self.mean = self.mean + self.sigma * y_w

        whitened = self.basis @ ((self.basis.T @ y_w) / self.scales)  # C^{-½} y_w
        self.path_sigma = (1 - self.c_sigma) * self.path_sigma \
            + np.sqrt(self.c_sigma * (2 - self.c_sigma) * self.mu_eff) * whitened
        generations = self.iteration + 1
        norm_ratio = np.linalg.norm(self.path_sigma) / np.sqrt(1 - (1 - self.c_sigma) ** (2 * generations))
        h_sigma = float(norm_ratio / self.chi_n < 1.4 + 2 / (self.dim + 1))
        self.path_c = (1 - self.c_c) * self.path_c + h_sigma * np.sqrt(self.c_c * (2 - self.c_c) * self.mu_eff) * y_w

        rank_mu = (y_best * self.weights[:, None]).T @ y_best
        decay = 1 - self.c_1 - self.c_mu + (1 - h_sigma) * self.c_1 * self.c_c * (2 - self.c_c)
        self.covariance = decay * self.covariance + self.c_1 * np.outer(self.path_c, self.path_c) + self.c_mu * rank_mu
        self.sigma *= float(np.exp(self.c_sigma / self.damping * (np.linalg.norm(self.path_sigma) / self.chi_n - 1)))
        self.iteration += 1
        return {"sigma_mean": self.sigma * float(np.sqrt(np.mean(np.diag(self.covariance))))}
