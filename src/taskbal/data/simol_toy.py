"""The two-objective toy problem of SIMOL's Figure 1 (Yu et al., ICLR 2023, Appendix A; from CAGrad's toy).

For x = (x₁, x₂) ∈ R²:

    f₁(x) = c₁(x) l₁(x) + c₂(x) g₁(x),        f₂(x) = c₁(x) l₂(x) + c₂(x) g₂(x)
    l₁ = log(max(|0.5(−x₁ − 7) − tanh(−x₂)|, 5e−6)) + 6
    l₂ = log(max(|0.5(−x₁ + 3) ∓ tanh(−x₂) + 2|, 5e−6)) + 6
    g₁ = ((−x₁ + 7)² + 0.1(−x₂ − 8)²)/10 − 20,   g₂ = ((−x₁ − 7)² + 0.1(−x₂ − 8)²)/10 − 20
    c₁ = max(tanh(0.5 x₂), 0),                   c₂ = max(tanh(−0.5 x₂), 0)

The sign in l₂ differs between sources: SIMOL prints "− tanh(−x₂)"
(``f2_tanh_sign: paper``, default), CAGrad's code has "+ tanh(−x₂)" (``f2_tanh_sign: cagrad``).
It only changes the landscape for x₂ > 0; the Pareto front is the same.

The analytic Pareto front. For x₂ < 0, c₁ = 0 and s = c₂ = tanh(−x₂/2) ∈ (0, 1), so
λf₁ + (1 − λ)f₂ = s(x₂)·(q_λ(x₁) + 0.01(x₂ + 8)² − 20) with q_λ = [λ(7 − x₁)² + (1 − λ)(7 + x₁)²]/10.
Its minimiser over x₁ is x₁*(λ) = 7(2λ − 1) for every x₂ (s > 0), where q_λ = 19.6 λ(1 − λ); the
minimiser over x₂ solves a 1-D problem in x₂ ∈ (−∞, 0) (near −8.3). Every point with x₂ ≥ 0 has
f ≥ −6.2 (c₂ = 0, l ≥ log 5e−6 + 6) and is dominated. Sweeping λ ∈ [0, 1] traces the front from
≈ (−0.40, −19.99) to ≈ (−19.99, −0.40); the tests check it against a brute-force non-dominated scan
(the front is convex, so the weighted sums reach all of it).

The split rule writes that front (``front_points`` values of λ, evenly spaced) with its Pareto set
and a SHA-256 sidecar; the runner measures the distance of (f₁, f₂)(x_t) to it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import verified_sidecar, write_arrays
from .checks import data_settings

EPS = 5e-6
SIGNS = {"paper": -1.0, "cagrad": 1.0}
DEFAULTS = {"f2_tanh_sign": "paper", "front_points": 2001}


def _log_term(u: np.ndarray, du_dx1: np.ndarray, du_dx2: np.ndarray):
    """log(max(|u|, EPS)) + 6 and its gradient (zero where the clamp is active, as torch.clamp)."""
    active = np.abs(u) > EPS
    value = np.log(np.maximum(np.abs(u), EPS)) + 6.0
    inverse = np.where(active, 1.0 / np.where(active, u, 1.0), 0.0)
    return value, np.stack([inverse * du_dx1, inverse * du_dx2], axis=-1)


def objectives_and_gradients(points: np.ndarray, f2_tanh_sign: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """(values [n, 2], gradients [n, 2 objectives, 2 coordinates]) at the points [n, 2] (float64)."""
    if f2_tanh_sign not in SIGNS:
        raise ValueError(f"data.f2_tanh_sign: expected one of {list(SIGNS)}, got {f2_tanh_sign!r}")
    x = np.atleast_2d(np.asarray(points, dtype=np.float64))
    x1, x2 = x[:, 0], x[:, 1]
    sign = SIGNS[f2_tanh_sign]
    tanh_neg = np.tanh(-x2)
    dtanh_neg = -(1.0 - tanh_neg**2)  # d/dx₂ tanh(−x₂)
    half = np.full_like(x1, -0.5)
    l1, dl1 = _log_term(0.5 * (-x1 - 7.0) - tanh_neg, half, -dtanh_neg)
    l2, dl2 = _log_term(0.5 * (-x1 + 3.0) + sign * tanh_neg + 2.0, half, sign * dtanh_neg)
    common = 0.1 * (-x2 - 8.0) ** 2
    g1 = ((-x1 + 7.0) ** 2 + common) / 10.0 - 20.0
    g2 = ((-x1 - 7.0) ** 2 + common) / 10.0 - 20.0
    dcommon = 0.02 * (x2 + 8.0)
    dg1 = np.stack([-0.2 * (-x1 + 7.0), dcommon], axis=-1)
    dg2 = np.stack([0.2 * (x1 + 7.0), dcommon], axis=-1)
    t = np.tanh(0.5 * x2)
    c1, c2 = np.maximum(t, 0.0), np.maximum(-t, 0.0)
    dt = 0.5 * (1.0 - t**2)
    zeros = np.zeros_like(x1)
    dc1 = np.stack([zeros, np.where(t > 0, dt, 0.0)], axis=-1)
    dc2 = np.stack([zeros, np.where(t < 0, -dt, 0.0)], axis=-1)
    f1 = c1 * l1 + c2 * g1
    f2 = c1 * l2 + c2 * g2
    df1 = c1[:, None] * dl1 + l1[:, None] * dc1 + c2[:, None] * dg1 + g1[:, None] * dc2
    df2 = c1[:, None] * dl2 + l2[:, None] * dc1 + c2[:, None] * dg2 + g2[:, None] * dc2
    return np.stack([f1, f2], axis=-1), np.stack([df1, df2], axis=1)


def objectives(points: np.ndarray, f2_tanh_sign: str = "paper") -> np.ndarray:
    return objectives_and_gradients(points, f2_tanh_sign)[0]


def pareto_front(num_points: int = 2001) -> dict[str, np.ndarray]:
    """The front by weighted sums λf₁ + (1 − λ)f₂, λ evenly spaced in [0, 1] (see the module docstring)."""
    from scipy.optimize import minimize_scalar  # here: importing taskbal.data should stay light
    weights = np.linspace(0.0, 1.0, num_points)
    x1 = 7.0 * (2.0 * weights - 1.0)
    x2 = np.empty(num_points)
    for k, lam in enumerate(weights):
        offset = 19.6 * lam * (1.0 - lam) - 20.0
        result = minimize_scalar(lambda v, a=offset: np.tanh(-0.5 * v) * (a + 0.01 * (v + 8.0) ** 2),
                                 bounds=(-12.0, -1e-9), method="bounded", options={"xatol": 1e-10})
        x2[k] = result.x
    values = objectives(np.stack([x1, x2], axis=1))
    return {"weight": weights, "x1": x1, "x2": x2, "f1": values[:, 0], "f2": values[:, 1]}


def distance_to_polyline(point: np.ndarray, vertices: np.ndarray) -> float:
    """Euclidean distance of a 2-D point to the piecewise-linear curve through ``vertices`` [k, 2]."""
    start, end = vertices[:-1], vertices[1:]
    segment = end - start
    length2 = np.maximum(np.sum(segment**2, axis=1), 1e-300)
    along = np.clip(np.sum((point - start) * segment, axis=1) / length2, 0.0, 1.0)
    nearest = start + along[:, None] * segment
    return float(np.min(np.linalg.norm(point - nearest, axis=1)))


def check_data(data: dict) -> dict:
    conf = data_settings(data, "simol_toy", defaults=DEFAULTS, integers={"front_points": 2})
    if conf["f2_tanh_sign"] not in SIGNS:
        raise ValueError(f"data.f2_tanh_sign: expected one of {list(SIGNS)}, got {conf['f2_tanh_sign']!r}")
    return conf


def write_splits(path: Path | str, data: dict) -> dict:
    """Write the analytic Pareto front and set; returns the sidecar metadata."""
    conf = check_data(data)
    path = Path(path)
    front = pareto_front(conf["front_points"])
    meta = {"family": "simol_toy", "f2_tanh_sign": conf["f2_tanh_sign"], "front_points": conf["front_points"],
            "definition": "SIMOL (ICLR 2023) Appendix A; front by weighted sums"}
    return write_arrays(path, front, meta)


class ToyProblem:
    """The written toy: objective values and gradients, and distances to its Pareto front."""

    num_objectives = 2
    io_dims = (2, 2)
    feature_dim = 2  # one-hot of the objective, for weightings that look at task features

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "toy")
        with np.load(path) as arrays:
            self.front = {key: arrays[key] for key in arrays.files}
        self.sign = self.meta["f2_tanh_sign"]
        self.front_vertices = np.stack([self.front["f1"], self.front["f2"]], axis=1)
        self.set_vertices = np.stack([self.front["x1"], self.front["x2"]], axis=1)

    def values_and_gradients(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([2], [2 objectives, 2]) at one point."""
        values, grads = objectives_and_gradients(np.asarray(x)[None], self.sign)
        return values[0], grads[0]

    def distance_to_front(self, values: np.ndarray) -> float:
        return distance_to_polyline(np.asarray(values, dtype=np.float64), self.front_vertices)

    def distance_to_pareto_set(self, x: np.ndarray) -> float:
        return distance_to_polyline(np.asarray(x, dtype=np.float64), self.set_vertices)

    # The task-family contract, read with "task" = objective.
    def num_tasks(self, split: str = "test") -> int:
        return self.num_objectives

    def task_table(self, split: str = "test") -> dict[str, np.ndarray]:
        return {"objective": np.array(["f1", "f2"])}

    def batch(self, split, indices=None):
        raise NotImplementedError("the SIMOL toy is not a meta-learning family; use experiment.runner: simol_toy")


Tasks = ToyProblem  # the name every family module exports
