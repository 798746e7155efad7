"""BES: Bernoulli smoothing for random search (Gao & Sener, ICML 2022), a thesis baseline.

Gao & Sener replace the Gaussian perturbations of Gaussian smoothing by the distribution that
minimises the mean squared error of the gradient estimate; for their Bernoulli choice the
perturbations are Rademacher vectors u_j ∈ {−1, +1}^d (so E[u uᵀ] = I, like the Gaussian, but with
no heavy tails). The estimate of ∇F for the equal-weight sum F = F₁ + … + F_m is the forward
difference

    ĝ = (1/(cN)) Σ_j (F(μ + c u_j) − F(μ)) u_j,      μ ← μ − β ĝ

which equals ∇F(μ) exactly in expectation for quadratic F (odd moments of u vanish).

Choices: β = 0.01 (the thesis: "the default step size from [Gao & Sener]"); the smoothing radius
c = ``init_sigma`` = 1, which gives the perturbation the unit covariance Σ₀ = I the thesis uses for
every method (the thesis does not state c). Plain steps, no noisy-evaluation machinery.
"""
from __future__ import annotations

import numpy as np

from .base import BlackBoxOptimizer, Objectives


def rademacher(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    return rng.integers(0, 2, size=(count, dim)).astype(np.float64) * 2.0 - 1.0


def forward_difference_gradient(directions: np.ndarray, values: np.ndarray, base: float, radius: float) -> np.ndarray:
    """(1/(cN)) Σ_j (F(μ + c u_j) − F(μ)) u_j."""
    return directions.T @ (values - base) / (radius * directions.shape[0])


class BES(BlackBoxOptimizer):
    name = "bes"

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray, rng: np.random.Generator,
                 init_sigma: float = 1.0, step_size: float = 0.01):
        super().__init__(dim, num_objectives, population, mean, rng, init_sigma)
        if step_size <= 0:
            raise ValueError(f"weighting.step_size: must be > 0, got {step_size}")
        self.step_size = float(step_size)

    def step(self, objectives: Objectives) -> dict[str, float]:
        radius = self.init_sigma
        directions = rademacher(self.rng, self.population, self.dim)
        values = self.query_sum(objectives, self.mean + radius * directions)
        base = self.query_sum(objectives, self.mean[None])[0]
        self.mean = self.mean - self.step_size * forward_difference_gradient(directions, values, base, radius)
        self.iteration += 1
        return {"sigma_mean": radius}
