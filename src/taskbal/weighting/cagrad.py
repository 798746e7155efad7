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
  * The weight problem is solved with scipy's SLSQP (bounds [0, 1], Σw = 1, start at uniform),
    as in the official implementation, but (i) with the analytic gradient instead of finite
    differences, (ii) on G divided by its mean diagonal (the objective is positively
    homogeneous of degree 1 in G, so the minimiser is unchanged, but SLSQP's absolute
    tolerance no longer depends on the size of the meta-gradients), and (iii) with
    ftol=1e-12 instead of scipy's default 1e-6: with the default, one gradient 100× larger
    than the others left the objective 1e-3 to 1e-1 (relative) above cvxpy's optimum;
    with 1e-12 the worst case we measured was 2e-7, at ~1 ms for k = 16.
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
from scipy.optimize import minimize

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


def cagrad_weights(gram: np.ndarray, c: float = 0.4) -> np.ndarray:
    """The simplex weights w* of CAGrad's dual problem for a k×k Gram matrix."""
    gram = np.asarray(gram, dtype=np.float64)
    k = gram.shape[0]
    uniform = np.full(k, 1.0 / k)
    scale = float(np.mean(np.diag(gram)))
    if k == 1 or scale <= 0:  # one task, or all gradients are zero: nothing to choose
        return uniform
    gram = gram / scale
    towards_mean = gram.mean(axis=1)  # G 1/k
    sqrt_phi = c * np.sqrt(max(gram.mean(), 0.0))

    def objective(w):
        return w @ towards_mean + sqrt_phi * np.sqrt(w @ gram @ w + SQRT_SMOOTHING)

    def gradient(w):
        gram_w = gram @ w
        return towards_mean + sqrt_phi * gram_w / np.sqrt(w @ gram_w + SQRT_SMOOTHING)

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
    name = "cagrad"

    def __init__(self, num_params: int, feature_dim: int, seed: int, c: float = 0.4, rescale: int = 1):
        super().__init__(num_params, feature_dim, seed)
        if rescale not in RESCALE_DIVISORS:
            raise ValueError(f"cagrad.rescale: must be one of {sorted(RESCALE_DIVISORS)}, got {rescale!r}")
        if c < 0:
            raise ValueError(f"cagrad.c: must be >= 0, got {c!r}")
        self.c = float(c)
        self.rescale = int(rescale)

    def effective_weights(self, gram: np.ndarray) -> tuple[np.ndarray, float]:
        """Coefficient of each task in the direction, and λ = √φ/‖g_w‖ (0 when g_w vanishes)."""
        k = gram.shape[0]
        w = cagrad_weights(gram, self.c)
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
