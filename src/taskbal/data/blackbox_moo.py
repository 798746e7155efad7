"""Synthetic black-box bi-objective problems of the thesis' ASMG chapter (Ye, thesis §4.6.1).

Three d-dimensional problems, each with m = 2 objectives, queried only through their values:

(4.21) shift l1-ellipsoid   F = ( Σ_i a_i² |x_i − 0.01|,  Σ_i a_i² |x_i + 0.01| )
(4.22) shift l½-ellipsoid   F = ( Σ_i |x_i − 0.1|^½,       Σ_i |x_i + 0.1|^½ )
(4.23) mixed ellipsoid–rastrigin 10
                            F = ( Σ_i a_i² |x_i|^½,  10d + Σ_i ((a_i x_i)² − 10 cos(2π a_i x_i)) )

with a_i = 10^{(i−1)/(d−1)} (so a_i² = 10^{2(i−1)/(d−1)}, the ellipsoid's conditioning 10²).

The thesis measures E = dist(x, P), the Euclidean distance of a solution to the Pareto set:
  (4.21) P₁ = {x : x_i ∈ [−0.01, 0.01]}   →  E = ‖max(|x| − 0.01, 0)‖₂
  (4.22) the front is concave, so ASMG and the equal-weight baselines end at the vertices
         P̂₂ = {x : x_i ∈ {−0.1, 0.1}} ⊂ P₂, and the thesis measures against P̂₂
                                        →  E = ‖min(|x − 0.1|, |x + 0.1|)‖₂ (element-wise min)
  (4.23) P₃ = {0}                        →  E = ‖x‖₂

"Tasks" here are the objectives. The split rule writes the problem's constants (the scales a_i²,
the shift, the Rastrigin frequencies) to an ``.npz`` with a JSON sidecar holding the SHA-256, so
the runs read exactly the problem that was written; the starting point μ₀ ~ U[0, 1]^d is drawn by
the runner from the run's seed (the same point for every method of a seed, so methods compare paired).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import verified_sidecar, write_arrays
from .checks import data_settings

PROBLEMS = ("shift_l1_ellipsoid", "shift_l_half_ellipsoid", "mixed_ellipsoid_rastrigin")
REQUIRED_KEYS = ("problem", "dim")
NUM_OBJECTIVES = 2


def constants(problem: str, dim: int) -> dict[str, np.ndarray]:
    """The numbers that define a problem of dimension ``dim`` (float64)."""
    if problem not in PROBLEMS:
        raise ValueError(f"data.problem: unknown problem {problem!r}; known: {list(PROBLEMS)}")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"data.dim: must be an integer >= 2, got {dim!r}")
    exponent = np.arange(dim, dtype=np.float64) / (dim - 1)  # (i − 1)/(d − 1), i = 1..d
    frequency = 10.0**exponent  # a_i
    shift = {"shift_l1_ellipsoid": 0.01, "shift_l_half_ellipsoid": 0.1, "mixed_ellipsoid_rastrigin": 0.0}[problem]
    return {"scale": frequency**2, "frequency": frequency, "shift": np.array(shift)}


def evaluate(problem: str, consts: dict[str, np.ndarray], points: np.ndarray) -> np.ndarray:
    """[n, 2] objective values of the [n, d] points (a [d] point gives [2])."""
    x = np.asarray(points, dtype=np.float64)
    scale, frequency, shift = consts["scale"], consts["frequency"], float(consts["shift"])
    if problem == "shift_l1_ellipsoid":
        f1 = np.abs(x - shift) @ scale
        f2 = np.abs(x + shift) @ scale
    elif problem == "shift_l_half_ellipsoid":
        f1 = np.sqrt(np.abs(x - shift)).sum(-1)
        f2 = np.sqrt(np.abs(x + shift)).sum(-1)
    elif problem == "mixed_ellipsoid_rastrigin":
        f1 = np.sqrt(np.abs(x)) @ scale
        y = frequency * x
        f2 = 10.0 * x.shape[-1] + (y**2 - 10.0 * np.cos(2.0 * np.pi * y)).sum(-1)
    else:
        raise ValueError(f"data.problem: unknown problem {problem!r}; known: {list(PROBLEMS)}")
    return np.stack([f1, f2], axis=-1)


def distance_to_pareto_set(problem: str, consts: dict[str, np.ndarray], point: np.ndarray) -> float:
    """E = dist(x, P) as the thesis defines it for each problem (see the module docstring)."""
    x = np.asarray(point, dtype=np.float64)
    shift = float(consts["shift"])
    if problem == "shift_l1_ellipsoid":
        gap = np.maximum(np.abs(x) - shift, 0.0)
    elif problem == "shift_l_half_ellipsoid":
        gap = np.minimum(np.abs(x - shift), np.abs(x + shift))
    elif problem == "mixed_ellipsoid_rastrigin":
        gap = x
    else:
        raise ValueError(f"data.problem: unknown problem {problem!r}; known: {list(PROBLEMS)}")
    return float(np.linalg.norm(gap))


def check_data(data: dict) -> dict:
    settings = data_settings(data, "blackbox_moo", REQUIRED_KEYS, integers={"dim": 2})
    constants(settings["problem"], settings["dim"])  # validates the problem's name
    return settings


def write_splits(path: Path | str, data: dict) -> dict:
    """Write the problem's constants and a sidecar with their hash; returns the sidecar metadata."""
    check_data(data)
    path = Path(path)
    consts = constants(data["problem"], data["dim"])
    meta = {"family": "blackbox_moo", "problem": data["problem"], "dim": data["dim"],
            "num_objectives": NUM_OBJECTIVES,
            "definition": "Ye (thesis) Eqs. 4.21-4.23; E = dist(x, P) as in section 4.6.1"}
    return write_arrays(path, consts, meta)


class BlackBoxProblem:
    """A written problem: objective values of points and the thesis' distance to the Pareto set."""

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "problem")
        with np.load(path) as arrays:
            self.consts = {key: arrays[key] for key in arrays.files}
        self.problem, self.dim = self.meta["problem"], int(self.meta["dim"])
        self.num_objectives = NUM_OBJECTIVES
        self.io_dims = (self.dim, self.num_objectives)
        self.feature_dim = 0

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return evaluate(self.problem, self.consts, points)

    def distance(self, point: np.ndarray) -> float:
        return distance_to_pareto_set(self.problem, self.consts, point)

    # The task-family contract, read with "task" = objective: there is one split of m objectives.
    def num_tasks(self, split: str = "test") -> int:
        return self.num_objectives

    def task_table(self, split: str = "test") -> dict[str, np.ndarray]:
        return {"objective": np.array([f"F{i + 1}" for i in range(self.num_objectives)])}

    def batch(self, split, indices=None):
        raise NotImplementedError("blackbox_moo problems are queried through __call__, not as meta-learning "
                                  "batches; use experiment.runner: blackbox_moo")


Tasks = BlackBoxProblem  # the name every family module exports
