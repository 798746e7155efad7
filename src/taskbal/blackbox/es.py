"""ES: the OpenAI evolution strategy (Salimans, Ho, Chen, Sidor & Sutskever, 2017), a thesis baseline.

A fixed isotropic Gaussian N(μ, σ²I) smooths the equal-weight sum F = F₁ + … + F_m and μ follows
the Monte-Carlo gradient of the smoothed objective (Salimans et al., Algorithm 1, written for
minimisation):

    ε_j ~ N(0, I),   μ ← μ − β · (1/(Nσ)) Σ_j s_j ε_j,   s_j = shaped F(μ + σ ε_j)

Choices (the thesis only gives the step size, β = 0.01, "the default of [Salimans et al.]"):
  * ``antithetic: true`` — mirrored pairs ±ε_j (Salimans et al. §2.3), N/2 pairs; an odd N
    adds one unpaired draw.
  * ``fitness_shaping: rank`` — centred ranks in [−0.5, 0.5] (Salimans et al. §2.3); 'none'
    uses F(μ + σε_j) − F(μ) instead (one more query per iteration).
  * σ = ``init_sigma`` = 1 stays fixed: the thesis starts every method at Σ₀ = I and ES has no
    step-size adaptation. Plain (SGD) steps, as Algorithm 1; no Adam, no weight decay.
"""
from __future__ import annotations

import numpy as np

from .base import BlackBoxOptimizer, Objectives

SHAPINGS = ("rank", "none")


def centred_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` mapped linearly to [−0.5, 0.5] (lowest value → −0.5)."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks / max(len(values) - 1, 1) - 0.5


def mirrored_normal(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """``count`` draws of N(0, I): ⌊count/2⌋ antithetic pairs (+ one unpaired draw if count is odd)."""
    half = rng.standard_normal((count // 2, dim))
    extra = rng.standard_normal((count % 2, dim))
    return np.concatenate([half, -half, extra])


class ES(BlackBoxOptimizer):
    name = "es"

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray, rng: np.random.Generator,
                 init_sigma: float = 1.0, step_size: float = 0.01, antithetic: bool = True,
                 fitness_shaping: str = "rank"):
        super().__init__(dim, num_objectives, population, mean, rng, init_sigma)
        if step_size <= 0:
            raise ValueError(f"weighting.step_size: must be > 0, got {step_size}")
        if fitness_shaping not in SHAPINGS:
            raise ValueError(f"weighting.fitness_shaping: expected one of {list(SHAPINGS)}, got {fitness_shaping!r}")
        self.step_size, self.antithetic, self.fitness_shaping = float(step_size), bool(antithetic), fitness_shaping

    def step(self, objectives: Objectives) -> dict[str, float]:
        sigma = self.init_sigma
        if self.antithetic:
            noise = mirrored_normal(self.rng, self.population, self.dim)
        else:
            noise = self.rng.standard_normal((self.population, self.dim))
        values = self.query_sum(objectives, self.mean + sigma * noise)
        if self.fitness_shaping == "rank":
            shaped = centred_ranks(values)
        else:
            shaped = values - self.query_sum(objectives, self.mean[None])[0]
        gradient = noise.T @ shaped / (self.population * sigma)
        self.mean = self.mean - self.step_size * gradient
        self.iteration += 1
        return {"sigma_mean": sigma}
