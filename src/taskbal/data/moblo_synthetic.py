"""The synthetic MOBLO problem of the thesis' Appendix A.1.4 (Ye 2024, problem (A.32), Figure A.1).

    min_{α ∈ R, ω ∈ R²}  ( ‖ω − (1, α)‖²,  ‖ω − (2, α)‖² )    s.t.  ω ∈ argmin_{ω ∈ R²} ‖ω − α‖²

"‖ω − α‖²" is read as ‖ω − (α, α)‖² (the scalar α broadcast to both coordinates), so
ω*(α) = (α, α), the value function f*(α) = 0 and the constraint of FORUM's reformulation is
q(z) = ‖ω − (α, α)‖². On ω*(α) the objectives are φ_i(α) = (α − a_i)² with a = (1, 2), so the
solution set is P = {(α, ω) : α = ω₁ = ω₂ = c, c ∈ [1, 2]}, as the thesis states; the optimality
gap E = dist(z, P) for z = (α, ω₁, ω₂) is the distance to the segment from (1,1,1) to (2,2,2).

``data.upper_targets`` (default [1, 2], the thesis') generalises the first coordinates a_i of the
UL targets (m objectives ‖ω − (a_i, α)‖², solution set c ∈ [min a, max a]); it exists so tests can
vary the problem, the figure uses the thesis' values. The split rule writes the targets and the
segment's end points to an .npz with a SHA-256 sidecar; nothing is random.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import verified_sidecar, write_arrays
from ..mtl.bilevel import MOBLOProblem
from .checks import data_settings

DEFAULTS = {"upper_targets": [1.0, 2.0]}


def check_data(data: dict) -> dict:
    conf = data_settings(data, "moblo_synthetic", defaults=DEFAULTS)
    targets = conf["upper_targets"]
    if not (isinstance(targets, (list, tuple)) and len(targets) >= 2
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in targets)):
        raise ValueError(f"data.upper_targets: expected a list of at least two numbers, got {targets!r}")
    return conf


def write_splits(path: Path | str, data: dict) -> dict:
    """Write the problem definition (targets, solution segment); returns the sidecar metadata."""
    conf = check_data(data)
    path = Path(path)
    targets = np.asarray(conf["upper_targets"], dtype=np.float64)
    arrays = {"upper_targets": targets, "solution_segment": np.array([targets.min(), targets.max()])}
    return write_arrays(path, arrays, {"family": "moblo_synthetic", "upper_targets": targets.tolist(),
                                       "definition": "Ye (2024) thesis, Appendix A.1.4, problem (A.32)"})


def distance_to_solution_set(alpha: float, omega: np.ndarray, low: float, high: float) -> float:
    """E = dist((α, ω₁, ω₂), {(c, c, c) : c ∈ [low, high]})."""
    z = np.concatenate([[float(alpha)], np.asarray(omega, dtype=np.float64).ravel()])
    c = float(np.clip(z.mean(), low, high))  # the projection onto the diagonal line, clipped to the segment
    return float(np.linalg.norm(z - c))


class SyntheticMOBLO(MOBLOProblem):
    """Problem (A.32) on flat float64 tensors: α [1], ω [2]."""

    def __init__(self, targets: np.ndarray):
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float64))
        self.num_objectives = int(self.targets.numel())
        self.objective_names = tuple(f"F{i + 1}" for i in range(self.num_objectives))
        self.low, self.high = float(self.targets.min()), float(self.targets.max())

    def lower_objective(self, alpha, omega, batch=None):
        return torch.sum((omega - alpha[0]) ** 2)

    def upper_objectives(self, alpha, omega, batch=None):
        return (omega[0] - self.targets) ** 2 + (omega[1] - alpha[0]) ** 2

    def lower_value(self, alpha):
        """f*(α) = min_ω f(α, ω) = 0, written so it stays a (zero) function of α for autograd."""
        return 0.0 * alpha.sum()

    def distance(self, alpha: torch.Tensor, omega: torch.Tensor) -> float:
        return distance_to_solution_set(float(alpha[0]), omega.detach().cpu().numpy(), self.low, self.high)

    def constraint(self, alpha: torch.Tensor, omega: torch.Tensor) -> float:
        """q(z) = f(z) − f*(α) with the exact value function."""
        return float(self.lower_objective(alpha.detach(), omega.detach()))


class Tasks(SyntheticMOBLO):
    """The written problem; "tasks" are its upper-level objectives."""

    io_dims = (1, 2)

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "problem")
        with np.load(path) as arrays:
            super().__init__(arrays["upper_targets"])

    @property
    def feature_dim(self) -> int:
        return self.num_objectives

    def num_tasks(self, split: str = "test") -> int:
        return self.num_objectives

    def task_table(self, split: str = "test") -> dict[str, np.ndarray]:
        return {"objective": np.array(self.objective_names)}

    def batch(self, split, indices=None):
        raise NotImplementedError("the synthetic MOBLO problem is not a meta-learning family; "
                                  "use experiment.runner: moblo_synthetic")
