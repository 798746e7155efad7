"""MMES: mixture-model-based evolution strategy for large-scale optimisation (He, Zheng & Zhou,
IEEE TEVC 2021), a thesis baseline with "the default hyper-parameters of [He et al.]".

MMES replaces CMA-ES's d×d covariance by an archive of m ≪ d evolution paths q_1..q_m. A mutation
mixes an isotropic part with ``mixing_strength`` (l) archived paths picked with a recency bias:

    z = √(1 − γ) ε + √(γ/l) Σ_{k=1..l} r_k q_{j_k},   ε ~ N(0, I), r_k ~ N(0, 1),
    j_k = the path (G_k mod m) places behind the newest, G_k ~ Geometric(c_a),  γ = 1 − (1 − c_a)^m

(mirrored: x = mean ± σ z). The mean moves to the weighted recombination of the best half, the
evolution path p ← (1 − c_c) p + √(c_c(2 − c_c) μ_eff)(m_new − m)/σ is archived every generation —
into an empty slot at first, then replacing the path whose neighbour in time is closest (or the
oldest when all gaps exceed T = ⌈1/c_c⌉) — and σ follows the paired-test adaptation (PTA):

    s ← (1 − c_s) s + √(c_s(2 − c_s) μ_eff) (2 Σ_{i≤μ} w_i [f_{i:λ} < f^{prev}_{i:λ}] − 1),
    σ ← σ exp(Φ(s) − 1 + a_z)

Defaults (He et al.; the same in pypop7's and the authors' MATLAB code): m = 2⌈√d⌉, c_c = 0.4/√d,
l = 4, c_s = 0.3, a_z = 0.05, c_a = 3.8/d. Population λ = N, σ₀ = ``init_sigma`` = 1 (Σ₀ = I).
Our choices: the archive records each path's generation from the start (the reference codes leave
the first m generation stamps at 0), and the first PTA comparison is against F(m₀).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr  # the standard normal CDF that scipy.stats.norm.cdf evaluates

from .base import BlackBoxOptimizer, Objectives, recombination_weights


class MMES(BlackBoxOptimizer):
    name = "mmes"
    STATE = ("sigma", "path", "success", "archive", "stamps", "order", "previous", "stored")

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray, rng: np.random.Generator,
                 init_sigma: float = 1.0, num_paths: int | None = None, mixing_strength: int = 4,
                 path_rate: float | None = None, sigma_rate: float = 0.3, target_significance: float = 0.05):
        super().__init__(dim, num_objectives, population, mean, rng, init_sigma)
        d = self.dim
        self.num_paths = int(num_paths or 2 * math.ceil(math.sqrt(d)))
        if self.num_paths < 1 or mixing_strength < 1:
            raise ValueError("weighting.num_paths and weighting.mixing_strength: must be >= 1")
        self.mixing_strength = int(mixing_strength)
        self.path_rate = float(path_rate or 0.4 / math.sqrt(d))  # c_c
        self.sigma_rate, self.target_significance = float(sigma_rate), float(target_significance)
        self.min_gap = math.ceil(1.0 / self.path_rate)  # T
        self.selection_rate = 3.8 / d  # c_a
        self.gamma = 1.0 - (1.0 - self.selection_rate) ** self.num_paths
        self.weights, self.mu_eff = recombination_weights(self.population)
        self.sigma = self.init_sigma
        self.path = np.zeros(d)
        self.success = 0.0
        self.archive = np.zeros((self.num_paths, d))
        self.stamps = np.zeros(self.num_paths)
        self.order = np.arange(self.num_paths)  # archive slots from oldest to newest
        self.stored = 0
        self.previous: np.ndarray | None = None  # sorted fitness of the previous generation

    def mutations(self) -> np.ndarray:
        half = (self.population + 1) // 2
        z = math.sqrt(1.0 - self.gamma) * self.rng.standard_normal((half, self.dim))
        for k in range(half):
            back = self.rng.geometric(self.selection_rate, size=self.mixing_strength) % self.num_paths
            slots = self.order[self.num_paths - 1 - back]
            z[k] += math.sqrt(self.gamma / self.mixing_strength) * (self.rng.standard_normal(self.mixing_strength)
                                                                   @ self.archive[slots])
        return np.concatenate([z, -z])[: self.population]

    def archive_path(self) -> None:
        if self.stored < self.num_paths:
            slot = self.order[self.stored]
            self.stored += 1
        else:
            gaps = np.diff(self.stamps[self.order])
            position = int(np.argmin(gaps)) + 1
            if gaps[position - 1] > self.min_gap:
                position = 0  # every neighbour is far apart in time: drop the oldest
            slot = self.order[position]
            self.order = np.append(np.delete(self.order, position), slot)
        self.archive[slot], self.stamps[slot] = self.path, self.iteration

    def step(self, objectives: Objectives) -> dict[str, float]:
        if not self.sigma > 0:  # σ underflowed to 0 after long stagnation: the distribution cannot move
            self.iteration += 1
            return {"sigma_mean": 0.0}
        if self.previous is None:
            self.previous = np.full(self.population, self.query_sum(objectives, self.mean[None])[0])
        z = self.mutations()
        points = self.mean + self.sigma * z
        values = self.query_sum(objectives, points)
        order = np.argsort(values, kind="stable")
        parents = len(self.weights)
        new_mean = self.weights @ points[order[:parents]]
        self.path = (1 - self.path_rate) * self.path + math.sqrt(self.path_rate * (2 - self.path_rate) * self.mu_eff) \
            * (new_mean - self.mean) / self.sigma
        self.mean = new_mean
        self.archive_path()
        ranked = values[order]
        wins = float(self.weights @ (ranked[:parents] < self.previous[:parents]))
        self.success = (1 - self.sigma_rate) * self.success \
            + math.sqrt(self.sigma_rate * (2 - self.sigma_rate) * self.mu_eff) * (2 * wins - 1)
        self.sigma *= math.exp(ndtr(self.success) - 1 + self.target_significance)
        self.previous = ranked
        self.iteration += 1
        return {"sigma_mean": self.sigma}
