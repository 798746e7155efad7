"""The contract of a black-box optimiser: query objective values, move a search distribution.

A black-box optimiser only sees values: each ``step`` draws a population of ``population``
points around the current solution, asks ``objectives(points) -> [n, m]`` for their m objective
values, and updates its search distribution. The current solution is ``mean`` (the mean of the
search distribution for every method here — the thesis does not say which point it evaluates, and
the mean is our choice). All randomness comes from the ``rng`` handed in, and its state is
part of ``state_dict``, so a run resumed from a checkpoint draws exactly the numbers it would have.

Single-objective baselines (ES, BES, CMA-ES, MMES) optimise the equal-weight sum F₁ + … + F_m,
as the thesis does following Sun et al. ("we aggregate multiple objectives with equal weights").
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

Objectives = Callable[[np.ndarray], np.ndarray]  # [n, d] points → [n, m] objective values


class BlackBoxOptimizer:
    name = "base"

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray,
                 rng: np.random.Generator, init_sigma: float = 1.0):
        if population < 2:
            raise ValueError(f"problem.population: must be >= 2, got {population}")
        if init_sigma <= 0:
            raise ValueError(f"problem.init_sigma: must be > 0, got {init_sigma}")
        self.dim, self.num_objectives, self.population = int(dim), int(num_objectives), int(population)
        self.mean = np.array(mean, dtype=np.float64)
        if self.mean.shape != (self.dim,):
            raise ValueError(f"initial mean: expected shape ({self.dim},), got {self.mean.shape}")
        self.rng = rng
        self.init_sigma = float(init_sigma)
        self.evaluations = 0  # objective-vector queries (one query returns all m objectives)
        self.iteration = 0

    def query(self, objectives: Objectives, points: np.ndarray) -> np.ndarray:
        values = np.asarray(objectives(np.atleast_2d(points)), dtype=np.float64)
        self.evaluations += values.shape[0]
        return values

    def query_sum(self, objectives: Objectives, points: np.ndarray) -> np.ndarray:
        """The equal-weight aggregate F₁ + … + F_m of the single-objective baselines."""
        return self.query(objectives, points).sum(axis=1)

    def step(self, objectives: Objectives) -> dict[str, float]:  # pragma: no cover - interface
        raise NotImplementedError

    # Everything that changes during a run; subclasses list their extra attributes in STATE.
    STATE: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        state = {key: copy.deepcopy(getattr(self, key)) for key in ("mean", "evaluations", "iteration") + self.STATE}
        state["rng"] = copy.deepcopy(self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key == "rng":
                self.rng.bit_generator.state = value
            else:
                setattr(self, key, copy.deepcopy(value))


def recombination_weights(population: int) -> tuple[np.ndarray, float]:
    """CMA-ES's positive log-rank weights over the best ⌊λ/2⌋ points and their effective mass μ_eff."""
    parents = population // 2
    raw = np.log((population + 1) / 2.0) - np.log(np.arange(1, parents + 1))
    weights = raw / raw.sum()
    return weights, float(1.0 / np.sum(weights**2))
