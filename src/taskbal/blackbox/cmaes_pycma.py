"""CMA-ES as the thesis ran it: Hansen's ``pycma`` (the package ``cma``) with its default parameters, minimising
the equal-weight sum F = F₁ + … + F_m (thesis Ch. 4 baselines, after Sun et al.).

pycma's defaults differ from the tutorial algorithm of ``cmaes.py`` (our own implementation, kept as the row
"CMA-ES (tutorial)"): the "active" covariance update with negative recombination weights, its own learning
rates and step-size damping, and lazy eigen-decompositions, so only this one is the thesis' baseline. Only
pycma's termination criteria are not used: every method runs the figure's fixed number of iterations.

Population λ = N (the thesis' sample size), σ₀ = ``init_sigma`` = 1, m₀ = the shared starting point; no
bounds; pycma writes no log files (``verb_log: 0``). pycma draws its Gaussian samples from NumPy's global
random state unless given ``randn``: here it draws from the run's own generator, so a run is a function of
its seed and a resumed run continues exactly (the whole pycma object is the optimiser's state).
"""
from __future__ import annotations

import numpy as np

from .base import BlackBoxOptimizer, Objectives


class StandardNormal:
    """pycma's ``randn(*shape)`` option, drawn from a NumPy generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


class PyCMAES(BlackBoxOptimizer):
    name = "cmaes_pycma"
    STATE = ("es",)

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray, rng: np.random.Generator,
                 init_sigma: float = 1.0):
        import cma

        super().__init__(dim, num_objectives, population, mean, rng, init_sigma)
        options = {"popsize": self.population, "randn": StandardNormal(self.rng), "verbose": -9, "verb_log": 0,
                   "verb_disp": 0}
        self.es = cma.CMAEvolutionStrategy(self.mean.copy(), self.init_sigma, options)

    def step(self, objectives: Objectives) -> dict[str, float]:
        points = np.asarray(self.es.ask(), dtype=np.float64)
        values = self.query_sum(objectives, points)
        self.es.tell(list(points), values.tolist())
        self.mean = np.array(self.es.mean, dtype=np.float64)
        self.iteration += 1
        return {"sigma_mean": float(np.sqrt(np.mean(np.asarray(self.es.stds) ** 2)))}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.es.opts["randn"].rng = self.rng  # the restored pycma object draws from the restored generator
