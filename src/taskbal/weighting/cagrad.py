"""Mini-batch CAGrad: the average gradient, bent towards the worst-served task within a ball.

Paper: Liu, Liu, Jin, Stone & Liu (2021), "Conflict-Averse Gradient Descent for Multi-task
Learning" (NeurIPS). CAGrad picks, in the ball ‖d - g0‖ ≤ c‖g0‖ around the average gradient
g0 = (1/k) Σ_i g_i, the direction d that maximises the worst task's rate of decrease
min_i ⟨g_i, d⟩. Its dual is a k-dimensional problem on the Gram matrix G = [⟨g_i, g_j⟩]:

    φ   = c² ‖g0‖²
    w*  = argmin_{w ∈ Δ_k}  wᵀ G 1/k + √φ · √(wᵀ G w)         (= ⟨g_w, g0⟩ + √φ ‖g_w‖)
    g_w = Σ_i w*_i g_i
    d   = g0 + √φ / ‖g_w‖ · g_w
    direction = d / (1 + c²)   (rescale=1)

Hyper-parameters (SIMOL Table 1 uses "the same hyper-parameters as in" Liu et al.):
    c=0.4       the paper's value for the multi-task (NYUv2) experiments.
    rescale=1   divide by 1 + c² as the official NYUv2 code does; 0 = no rescale;
                2 = divide by 1 + c (the official code's third option).

Deliberate choices:
  * With ``solver: slsqp`` (and as the fallback of the default, below) the weight problem is
    solved with scipy's SLSQP (bounds [0, 1], Σw = 1, start at uniform), as in the official
    implementation, but (i) with the analytic gradient instead of finite
    differences, (ii) on G divided by its mean diagonal (the objective is positively
    homogeneous of degree 1 in G, so the minimiser is unchanged, but SLSQP's absolute
    tolerance no longer depends on the size of the meta-gradients), and (iii) with
    ftol=1e-12 instead of scipy's default 1e-6: with the default, one gradient 100× larger
    than the others left the objective 1e-3 to 1e-1 (relative) above cvxpy's optimum;
    with 1e-12 the worst case we measured was 2e-7.
  * Speed (``solver``): the default ``active_set`` solves the same problem exactly and
    faster (see benchmarks/README.md). On a support S the stationarity conditions
    b_S + √φ·G_S w/‖g_w‖ = μ1, 1ᵀw = 1 (b = G1/k) have a closed form: with u = G_S⁻¹1,
    v = G_S⁻¹b_S, A = 1ᵀu, B = 1ᵀv, C = b_Sᵀv and D = B² − A(C − φ),
    μ = (B + √D)/A and w_S = (μu − v)/√D. Supports are grown by the Frank–Wolfe vertex and shrunk
    as in Wolfe's min-norm-point algorithm (mgda.py); the answer is returned only with a
    Frank–Wolfe duality-gap certificate (gap ≤ 1e-10, on the normalised scale), otherwise
    (a face without an interior minimiser, a singular G_S: 3 of 180 (batch, c) instances from
    sinusoid training) the SLSQP solution is used. Its weights agree with SLSQP's to SLSQP's own tolerance and its
    objective is never above SLSQP's (tests); ``solver: slsqp`` always uses SLSQP.
  * If ‖g_w‖ = 0 exactly (e.g. all gradients zero, or g0 = 0 so that φ = 0), the correction
    √φ g_w/‖g_w‖ is undefined and is dropped: d = g0. (The official code's +1e-8 in the
    denominator gives the same limit.) This is only a guard: when 0 lies in the hull of the
    gradients and c is large, d = g0 is not the max-min direction, but with d = 1153
    meta-parameters and k <= 32 tasks that needs an exact linear dependency.
  * Reported weights are the effective coefficients of each task in ``direction``,
    (1/k + √φ/‖g_w‖ · w*_i)/(1 + c²), so ``direction == weights @ grads``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..options import OptionError
from .base import Combined, TaskGradients, Weighting
from .mgda import gram_matrix

RESCALE_DIVISORS = {0: lambda c: 1.0, 1: lambda c: 1.0 + c**2, 2: lambda c: 1.0 + c}

# SLSQP stopping tolerance on the normalised objective (see the module docstring) and iteration cap
# (the hardest instances we measured needed 75 iterations).
SLSQP_FTOL = 1e-12
SLSQP_MAXITER = 500

# Keeps √(wᵀGw) differentiable where g_w = 0 (on the normalised scale, where G's mean diagonal is 1).
SQRT_SMOOTHING = 1e-12


def cagrad_objective(weights: np.ndarray, gram: np.ndarray, c: float) -> float:
    """wᵀ G 1/k + c‖g0‖ · √(wᵀ G w): the dual objective CAGrad minimises over the simplex."""
    sqrt_phi = c * np.sqrt(max(gram.mean(), 0.0))
    return float(weights @ gram.mean(axis=1) + sqrt_phi * np.sqrt(max(weights @ gram @ weights, 0.0)))


SOLVERS = ("active_set", "slsqp")
# Certificate of the active-set solver: Frank–Wolfe gap wᵀ∇f − min_j ∇f_j on the normalised scale.
ACTIVE_SET_GAP = 1e-10


def _face_minimiser(gram: np.ndarray, towards_mean: np.ndarray, phi: float, support: np.ndarray):
    """Minimiser of bᵀw + √φ·√(wᵀGw) over {w : Σw = 1, w_i = 0 off ``support``}, or None if the
    face has no interior stationary point (or G_S is singular)."""
    try:
        solved = np.linalg.solve(gram[np.ix_(support, support)],
                                 np.stack([np.ones(support.size), towards_mean[support]], axis=1))
    except np.linalg.LinAlgError:
        return None
    u, v = solved[:, 0], solved[:, 1]
    a, b, c = u.sum(), v.sum(), towards_mean[support] @ v
    discriminant = b * b - a * (c - phi)
    if not (a > 0 and discriminant > 0 and np.all(np.isfinite(solved))):
        return None
    root = np.sqrt(discriminant)
    return ((b + root) / a * u - v) / root


def _active_set_weights(gram: np.ndarray, towards_mean: np.ndarray, sqrt_phi: float,
                        max_iter: int = 200) -> np.ndarray | None:
    """Exact minimiser of the dual on the (normalised) Gram matrix, or None without a certificate."""
    k = gram.shape[0]
    phi = sqrt_phi**2
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    start = int(np.argmin(towards_mean + sqrt_phi * norms))  # the best vertex
    support, weights = np.array([start]), np.zeros(k)
    weights[start] = 1.0
    for _ in range(max_iter):
        gram_w = gram @ weights
        norm = np.sqrt(max(weights @ gram_w, 0.0))
        if norm == 0.0:
            return None
        gradient = towards_mean + sqrt_phi * gram_w / norm
        level = float(weights @ gradient)
        j = int(np.argmin(gradient))
        if level - gradient[j] <= ACTIVE_SET_GAP * max(1.0, abs(level)):
            return weights
        if j in support:
            return None
        support = np.append(support, j)
        while True:  # Wolfe's minor cycle: towards the face's minimiser, dropping vertices that leave
            target = _face_minimiser(gram, towards_mean, phi, support)
            if target is None:
                return None
            if np.all(target > 0):
                weights = np.zeros(k)
                weights[support] = target
                break
            current = weights[support]
            leaving = target <= 0
            gap = current[leaving] - target[leaving]
            ratios = np.divide(current[leaving], gap, out=np.zeros_like(gap), where=gap > 0)
            current = current + float(ratios.min()) * (target - current)
            current[np.flatnonzero(leaving)[np.argmin(ratios)]] = 0.0
            keep = current > 0
            support, current = support[keep], current[keep]
            if support.size == 0:
                return None
            weights = np.zeros(k)
            weights[support] = current / current.sum()
    return None


def cagrad_weights(gram: np.ndarray, c: float = 0.4, solver: str = "active_set") -> np.ndarray:
    """The simplex weights w* of CAGrad's dual problem for a k×k Gram matrix."""
    if solver not in SOLVERS:
        raise ValueError(f"cagrad_weights: unknown solver {solver!r}; known: {list(SOLVERS)}")
    gram = np.asarray(gram, dtype=np.float64)
    k = gram.shape[0]
    uniform = np.full(k, 1.0 / k)
    scale = float(np.mean(np.diag(gram)))
    if k == 1 or scale <= 0:  # one task, or all gradients are zero: nothing to choose
        return uniform
    gram = gram / scale
    towards_mean = gram.mean(axis=1)  # G 1/k
    sqrt_phi = c * np.sqrt(max(gram.mean(), 0.0))
    if solver == "active_set":
        exact = _active_set_weights(gram, towards_mean, sqrt_phi)
        if exact is not None:
            return exact

    def objective(w):
        return w @ towards_mean + sqrt_phi * np.sqrt(w @ gram @ w + SQRT_SMOOTHING)

    def gradient(w):
        gram_w = gram @ w
        return towards_mean + sqrt_phi * gram_w / np.sqrt(w @ gram_w + SQRT_SMOOTHING)

    from scipy.optimize import minimize  # only here: every training job imports the registry

    result = minimize(
        objective,
        uniform,
        jac=gradient,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": SLSQP_FTOL, "maxiter": SLSQP_MAXITER},
    )
    # SLSQP may end a hair outside the simplex; project back so the weights stay interpretable.
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum() if weights.sum() > 0 else uniform


class CAGrad(Weighting):
    reads = frozenset({"grads"})
    name = "cagrad"

    def __init__(self, num_params: int, feature_dim: int, seed: int, c: float = 0.4, rescale: int = 1,
                 solver: str = "active_set"):
        super().__init__(num_params, feature_dim, seed)
        if solver not in SOLVERS:
            raise OptionError("solver", f"unknown {solver!r}; known: {list(SOLVERS)}")
        self.solver = solver
        if rescale not in RESCALE_DIVISORS:
            raise OptionError("rescale", f"must be one of {sorted(RESCALE_DIVISORS)}, got {rescale!r}")
        if c < 0:
            raise OptionError("c", f"must be >= 0, got {c!r}")
        self.c = float(c)
        self.rescale = int(rescale)

    def effective_weights(self, gram: np.ndarray) -> tuple[np.ndarray, float]:
        """Coefficient of each task in the direction, and λ = √φ/‖g_w‖ (0 when g_w vanishes)."""
        k = gram.shape[0]
        w = cagrad_weights(gram, self.c, self.solver)
        sqrt_phi = self.c * np.sqrt(max(gram.mean(), 0.0))
        gw_norm = np.sqrt(max(w @ gram @ w, 0.0))
        # ‖g_w‖ below float64 round-off of the gradients' own scale counts as zero.
        gradient_scale = np.sqrt(max(np.mean(np.diag(gram)), 0.0))
        lam = sqrt_phi / gw_norm if gw_norm > 1e-12 * gradient_scale else 0.0
        coefficients = (1.0 / k + lam * w) / RESCALE_DIVISORS[self.rescale](self.c)
        return coefficients, float(lam)

    def combine(self, tasks: TaskGradients) -> Combined:
        grads = tasks.grads
        gram = gram_matrix(grads).cpu().numpy()
        coefficients, lam = self.effective_weights(gram)
        weights = torch.as_tensor(coefficients, dtype=grads.dtype, device=grads.device)
        direction = weights @ grads
        return Combined(direction=direction, weights=weights, stats={"cagrad_lambda": lam})
