"""ASMG: adaptive stochastic multi-objective gradient for black-box MOO (Ye, thesis Ch. 4, Algorithm 3;
Ye, Lyu, Wang, Zhang & Tsang, ICLR 2024).

The m objectives are smoothed by a Gaussian p_θ = N(μ, Σ), Σ diagonal: J_i(θ) = E_{x~p_θ}[F_i(x)].
Each iteration draws z_j ~ N(0, I), x_j = μ + Σ^½ z_j (j = 1..N), queries F(x_j) and F(μ), and with
δ_ij = F_i(x_j) − F_i(μ) (the baseline that keeps the estimates unbiased) estimates

    p̂_i = (1/N) Σ_j Σ^{-½}(x_j − μ) δ_ij = (1/N) Σ_j z_j δ_ij                     (4.12)
    ĥ_i = (1/2N) Σ_j diag((x_j − μ)(x_j − μ)ᵀ Σ^{-1} − I) δ_ij = (1/2N) Σ_j (z_j² − 1) δ_ij   (4.13)
    ĝ_i = Σ^{-1}(...) = Σ^{-½} p̂_i   ≈ ∇_μ J_i                                   (4.15)
    Ĝ_i = Σ^{-1} ĥ_i               ≈ diag ∇_Σ J_i                                (4.16)

The task weights solve the QP (4.10)

    λ̃ = argmin_{λ ∈ Δ} ‖Σ_i λ_i p̂_i‖² + 2 ‖Σ_i λ_i ĥ_i‖² = argmin_{λ ∈ Δ} λᵀ M λ,
    M = P̂ᵀP̂ + 2 ĤᵀĤ  (m × m, Eq. 4.11),

are averaged with momentum λ_t = (1 − γ_t) λ_{t−1} + γ_t λ̃_t, γ_t = 1/(t + 1) (4.17), and move θ:

    raw (4.14):       μ ← μ − β Σ Σ_i λ_i ĝ_i,      Σ^{-1} ← Σ^{-1} + 2β Σ_i λ_i Ĝ_i
    rescaled (A.2.5): with h_j = (λᵀF(x_j) − mean_j)/std_j (standardised over the N samples),
                      μ ← μ − (β/N) Σ_j (x_j − μ) h_j,   Σ^{-1} ← Σ^{-1} + (β/N) Σ_j Σ^{-1} diag(z_j z_jᵀ) h_j

Choices where the thesis is silent or ambiguous:
  * ``update``: 'rescaled' (default) is the "monotonic transformation" the thesis recommends "in
    practice, to avoid the scaling problem" (§4.4.2, App. A.2.5); the text does not say which rule
    produced Figs. 4.1–4.4. 'raw' is Eq. 4.14 as printed. Both keep the QP and the momentum.
  * The raw Σ^{-1} update can make a coordinate's inverse variance non-positive (the factor
    1 + 2β(Ĥλ)_k ≤ 0 when objective differences are large). Such coordinates keep their previous
    variance (an update that leaves the positive-definite cone is skipped, not clamped); the number
    skipped is reported in the step's stats (``asmg_skipped``).
  * The QP is solved exactly on its m×m matrix M by Wolfe's min-norm-point algorithm
    (weighting/mgda.py's solver: M is the Gram matrix of the stacked vectors (p̂_i; √2 ĥ_i));
    ``qp_solver: cvxpy`` solves the same QP with CVXPY as the thesis does (same optimum, slower).
  * ``momentum_power`` p gives γ_t = (t + 1)^{-p}; p = 1 is the thesis' γ_t = 1/(t + 1), p = 0 switches
    the momentum off. γ_0 = 1, so λ_0 = λ̃_0.
  * β is constant (the thesis' synthetic experiments fix β = 0.1).
"""
from __future__ import annotations

import numpy as np

from ..weighting.mgda import min_norm_weights
from .base import BlackBoxOptimizer, Objectives

UPDATES = ("rescaled", "raw")
QP_SOLVERS = ("wolfe", "cvxpy")


def smoothing_estimates(z: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p̂ [d, m], ĥ [d, m]) of Eqs. 4.12–4.13 from the standard-normal draws z [N, d] and δ [N, m]."""
    n = z.shape[0]
    return z.T @ delta / n, (z**2 - 1.0).T @ delta / (2.0 * n)


def smoothed_gradients(p_hat: np.ndarray, h_hat: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ĝ [d, m], Ĝ [d, m]) of Eqs. 4.15–4.16: estimates of ∇_μ J_i and of the diagonal of ∇_Σ J_i."""
    return p_hat / np.sqrt(variance)[:, None], h_hat / variance[:, None]


def qp_matrix(p_hat: np.ndarray, h_hat: np.ndarray) -> np.ndarray:
    """M = ΛᵀΛ of Eq. 4.11, Λ's columns (p̂_i; √2 ĥ_i): the QP (4.10) is min over the simplex of λᵀMλ."""
    return p_hat.T @ p_hat + 2.0 * h_hat.T @ h_hat


def qp_objective(weights: np.ndarray, p_hat: np.ndarray, h_hat: np.ndarray) -> float:
    """‖Σ λ_i p̂_i‖² + 2‖Σ λ_i ĥ_i‖², the objective of Eq. 4.10."""
    return float(np.sum((p_hat @ weights) ** 2) + 2.0 * np.sum((h_hat @ weights) ** 2))


def solve_qp_cvxpy(p_hat: np.ndarray, h_hat: np.ndarray) -> np.ndarray:
    """Eq. 4.10 with CVXPY, written on the d-dimensional vectors as the thesis states it."""
    import cvxpy as cp

    m = p_hat.shape[1]
    weights = cp.Variable(m)
    objective = cp.sum_squares(p_hat @ weights) + 2 * cp.sum_squares(h_hat @ weights)
    cp.Problem(cp.Minimize(objective), [weights >= 0, cp.sum(weights) == 1]).solve()
    solution = np.clip(np.asarray(weights.value, dtype=np.float64), 0.0, None)
    return solution / solution.sum()


def standardise(values: np.ndarray) -> np.ndarray:
    """(v − mean)/std over the samples; all zeros when the values do not vary (no information to move on)."""
    spread = values.std()
    return np.zeros_like(values) if spread <= 0 else (values - values.mean()) / spread


class ASMG(BlackBoxOptimizer):
    name = "asmg"
    STATE = ("variance", "weights")

    def __init__(self, dim: int, num_objectives: int, population: int, mean: np.ndarray, rng: np.random.Generator,
                 init_sigma: float = 1.0, step_size: float = 0.1, update: str = "rescaled",
                 momentum_power: float = 1.0, qp_solver: str = "wolfe"):
        super().__init__(dim, num_objectives, population, mean, rng, init_sigma)
        if step_size <= 0:
            raise ValueError(f"weighting.step_size: must be > 0, got {step_size}")
        if update not in UPDATES:
            raise ValueError(f"weighting.update: expected one of {list(UPDATES)}, got {update!r}")
        if momentum_power < 0:
            raise ValueError(f"weighting.momentum_power: must be >= 0, got {momentum_power}")
        if qp_solver not in QP_SOLVERS:
            raise ValueError(f"weighting.qp_solver: expected one of {list(QP_SOLVERS)}, got {qp_solver!r}")
        self.step_size, self.update, self.momentum_power, self.qp_solver = \
            float(step_size), update, float(momentum_power), qp_solver
        self.variance = np.full(self.dim, self.init_sigma**2)  # diag Σ; Σ₀ = init_sigma² I
        self.weights = np.full(self.num_objectives, 1.0 / self.num_objectives)

    def target_weights(self, p_hat: np.ndarray, h_hat: np.ndarray) -> np.ndarray:
        """λ̃_t: the exact solution of the QP (4.10)."""
        if self.qp_solver == "cvxpy":
            return solve_qp_cvxpy(p_hat, h_hat)
        return min_norm_weights(qp_matrix(p_hat, h_hat))

    def momentum(self) -> float:
        return float((self.iteration + 1.0) ** -self.momentum_power)

    def step(self, objectives: Objectives) -> dict[str, float]:
        scale = np.sqrt(self.variance)
        z = self.rng.standard_normal((self.population, self.dim))
        values = self.query(objectives, self.mean + scale * z)  # [N, m]
        base = self.query(objectives, self.mean[None])[0]  # F(μ_t), the baseline of Eqs. 4.12–4.13
        p_hat, h_hat = smoothing_estimates(z, values - base)
        gamma = self.momentum()
        self.weights = (1.0 - gamma) * self.weights + gamma * self.target_weights(p_hat, h_hat)
        if self.update == "raw":
            mean_direction = scale * (p_hat @ self.weights)  # Σ Σ_i λ_i ĝ_i, with Σ ĝ_i = Σ^½ p̂_i
            precision_factor = 1.0 + 2.0 * self.step_size * (h_hat @ self.weights)  # (Σ^{-1} + 2β Σ_i λ_i Ĝ_i)/Σ^{-1}
        else:
            shaped = standardise(values @ self.weights)
            mean_direction = scale * (z.T @ shaped) / self.population
            precision_factor = 1.0 + self.step_size * ((z**2).T @ shaped) / self.population
        self.mean = self.mean - self.step_size * mean_direction
        invalid = precision_factor <= 0.0
        self.variance = self.variance / np.where(invalid, 1.0, precision_factor)
        self.iteration += 1
        stats = {"sigma_mean": float(np.sqrt(self.variance).mean()), "asmg_skipped": float(invalid.sum())}
        stats.update({f"weight_{i + 1}": float(w) for i, w in enumerate(self.weights)})
        return stats


class ASMGEW(ASMG):
    """ASMG-EW, the thesis' ablation: ASMG with the weights fixed at λ = 1/m (no QP, no momentum)."""

    name = "asmg_ew"

    def target_weights(self, p_hat: np.ndarray, h_hat: np.ndarray) -> np.ndarray:
        return np.full(self.num_objectives, 1.0 / self.num_objectives)
