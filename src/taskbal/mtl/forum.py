"""FORUM: a first-order multi-gradient method for MOBLO (value-function reformulation + a small QP).

Thesis (Ye 2024) §3.5, Algorithm 2 (from Ye, Lin, Cao, Zhang & Tsang, ECAI 2024). With z = (α, ω):

    min_z F(z)  s.t.  q(z) = f(z) − f*(α) <= 0                                    (3.12–3.13)
    ω̃^{t+1} = ω̃^t − η ∇_ω f(α, ω̃^t),  t < T;    q̃(z) = f(z) − f(α, ω̃^T)        (3.15)
    ∇_z q̃ = ∇_z f(z) − (∇_α f(α, ω̃^T), 0)                               (Alg. 2 line 9)
    φ = (ρ/2)‖∇q̃‖²,   π_i = (c·φ − ⟨∇q̃, ∇F_i⟩) / (‖∇q̃‖² + ε)                     (3.25/3.27)
    (λ, γ) = argmin_{λ ∈ Δ, γ >= 0, γ >= πᵀλ}  ½‖Σ_i λ_i ∇F_i + γ ∇q̃‖² − γ φ          (3.29)
    λ̃_k = (1 − β_k) λ̃_{k−1} + β_k λ_k,   β_k = (k + 1)^(−3/4)                        (3.30)
    ν = max(πᵀλ̃_k, 0),   d = −(Σ_i λ̃_i ∇F_i + ν ∇q̃),   z ← z + μ d                (3.26, 3.17)

The QP has m + 1 variables and only needs the (m+1)×(m+1) Gram matrix of (∇F_1..∇F_m, ∇q̃),
computed once in float64. Two solvers, chosen by ``solver``:
  * 'cvxpy': the thesis' choice ("solved with CVXPY"), Clarabel with tight tolerances.
  * 'exact': enumerates the active sets of the m + 2 inequalities and solves each KKT system;
    the first point satisfying all KKT conditions (to 1e-9 relative) is optimal because the QP is
    convex. 2^(m+2) tiny solves, cheap for the thesis' m = 2, 3; if no candidate verifies
    (degenerate round-off) it falls back to cvxpy and counts it in the stats.
  * 'auto' (default): 'exact' for m <= 8, else 'cvxpy'.
The tests check both against each other on random instances and the direction's feasibility.

Deliberate choices:
  * ``barrier='thesis'`` (default): c = 2 in π, as printed in (3.25)/(3.27), in Lemma A.2 and
    in the official code (π_i = ρ − ⟨∇q̃, ∇F_i⟩/(‖∇q̃‖² + ε)). Then every direction satisfies
    ⟨∇q̃, d⟩ = −2φ or less, stronger than the barrier φ of (3.20). ``barrier='dual'`` uses c = 1,
    the exact minimiser of the dual (3.24) over ν; the QP is then exactly the dual of (3.20) and
    d (from the un-averaged λ) is the solution of the direction problem (3.20) itself.
  * φ = (ρ/2)‖∇q̃‖² exactly as (3.20) defines it; ε = 1e-8 (code) only guards the division in π
    (the code also adds ε inside φ, which only matters when ‖∇q̃‖² is comparable to ε).
  * ``beta_power`` 3/4 and ``beta_every``: β_k = (⌊k / beta_every⌋ + 1)^(−beta_power). The thesis
    steps k every UL iteration (beta_every = 1, default); the official MTL code steps it once per
    epoch (set beta_every to the iterations per epoch). λ̃ starts at 1/m (thesis; the code's 0 is
    irrelevant because β_0 = 1).
  * ``normalize_upper``: the official MTL code divides every ∇F_i by its norm (not in the
    thesis); off by default, following the thesis, for the synthetic problem and hyper-cleaning.
  * ``lower_init='warm'``: ω̃^0 = ω_k (Alg. 2 line 4 allows ω_0 or ω_k; the code uses ω_k).
  * ``alpha_lr`` and ``omega_lr``: the step μ per block (synthetic: 0.3 both; hyper-cleaning:
    10 for α, 0.3 for ω); ``optimizer='adam'`` feeds −d to Adam as the MTL tables' code does.
  * The LL batch of an iteration is used for f(z), the T LL steps and f(α, ω̃^T), so q̃ compares
    the same objective (as the official code does); with a fresh batch per LL step (problems that
    return StepBatches) f(z) and f(α, ω̃^T) both use step 0's batch.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .bilevel import MOBLOProblem, _grad_or_zeros, batch_for_step, lower_descent, per_objective_gradients
from .moml import LOWER_INITS, make_optimizer, objective_names, objective_stats

BARRIERS = {"thesis": 2.0, "dual": 1.0}
SOLVERS = ("auto", "exact", "cvxpy")
MAX_EXACT_OBJECTIVES = 8
KKT_TOL = 1e-9


# --------------------------------------------------------------------------- the direction QP (3.29)
def qp_terms(grads_upper: torch.Tensor, grad_q: torch.Tensor, rho: float, barrier: str = "thesis",
             epsilon: float = 1e-8) -> tuple[np.ndarray, np.ndarray, float]:
    """(Gram of (∇F_1..∇F_m, ∇q̃) [(m+1)², float64], π [m], φ) of the QP (3.29)."""
    if barrier not in BARRIERS:
        raise ValueError(f"weighting.barrier: unknown {barrier!r}; known: {list(BARRIERS)}")
    stacked = torch.cat([grads_upper, grad_q[None]], 0).to(torch.float64)
    gram = (stacked @ stacked.T).cpu().numpy()
    m = grads_upper.shape[0]
    q_norm2 = float(gram[m, m])
    phi = 0.5 * rho * q_norm2
    pi = (BARRIERS[barrier] * phi - gram[m, :m]) / (q_norm2 + epsilon)
    return gram, pi, phi


def qp_objective(gram: np.ndarray, x: np.ndarray, phi: float) -> float:
    return float(0.5 * x @ gram @ x - phi * x[-1])


def _constraints(pi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of C x >= 0 (λ_i >= 0, γ >= 0, γ − πᵀλ >= 0) and the equality row Σλ = 1."""
    m = pi.shape[0]
    inequalities = np.zeros((m + 2, m + 1))
    inequalities[:m + 1, :m + 1] = np.eye(m + 1)
    inequalities[m + 1, :m] = -pi
    inequalities[m + 1, m] = 1.0
    equality = np.zeros(m + 1)
    equality[:m] = 1.0
    return inequalities, equality, np.zeros(m + 2)


def solve_qp_exact(gram: np.ndarray, pi: np.ndarray, phi: float) -> np.ndarray | None:
    """x = (λ, γ) solving (3.29) by active-set enumeration, or None when no candidate verifies."""
    m = pi.shape[0]
    n = m + 1
    inequalities, equality, _ = _constraints(pi)
    linear = np.zeros(n)
    linear[m] = -phi
    scale = max(float(np.max(np.abs(gram))), abs(phi), 1.0)
    # Fewer active constraints first: the generic optimum has few (for m = 2 usually one λ_i = 0 or none).
    subsets = sorted((s for r in range(m + 3) for s in itertools.combinations(range(m + 2), r)), key=len)
    for active in subsets:
        if all(i in active for i in range(m)):
            continue  # every λ_i = 0 contradicts Σλ = 1
        rows = np.vstack([equality[None], inequalities[list(active)]]) if active else equality[None]
        k = rows.shape[0]
        kkt = np.zeros((n + k, n + k))
        kkt[:n, :n] = gram
        kkt[:n, n:] = -rows.T
        kkt[n:, :n] = rows
        rhs = np.concatenate([-linear, [1.0], np.zeros(k - 1)])
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
        x, multipliers = solution[:n], solution[n:]
        residual = kkt @ solution - rhs
        if np.max(np.abs(residual)) > KKT_TOL * scale * 10:
            continue
        if np.min(inequalities @ x) < -KKT_TOL * max(1.0, np.max(np.abs(x))):
            continue
        if len(multipliers) > 1 and np.min(multipliers[1:]) < -KKT_TOL * scale:
            continue
        return x
    return None


def solve_qp_cvxpy(gram: np.ndarray, pi: np.ndarray, phi: float) -> np.ndarray:
    """x = (λ, γ) solving (3.29) with cvxpy (Clarabel), the quadratic through a PSD square root."""
    import cvxpy as cp

    m = pi.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (gram + gram.T))
    root = np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None] * eigenvectors.T  # rootᵀ root = gram
    x = cp.Variable(m + 1)
    constraints = [x >= 0, cp.sum(x[:m]) == 1, x[m] >= pi @ x[:m]]
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(root @ x) - phi * x[m]), constraints)
    try:
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    except cp.error.SolverError:
        problem.solve()
    if x.value is None:
        raise RuntimeError(f"forum: cvxpy could not solve the direction QP (status {problem.status})")
    value = np.asarray(x.value, dtype=np.float64)
    lam = np.clip(value[:m], 0.0, None)
    value[:m] = lam / lam.sum()
    return value


def solve_qp(gram: np.ndarray, pi: np.ndarray, phi: float, solver: str = "auto") -> tuple[np.ndarray, str]:
    """(x, which solver produced it)."""
    if solver not in SOLVERS:
        raise ValueError(f"weighting.solver: unknown {solver!r}; known: {list(SOLVERS)}")
    m = pi.shape[0]
    if solver == "exact" or (solver == "auto" and m <= MAX_EXACT_OBJECTIVES):
        x = solve_qp_exact(gram, pi, phi)
        if x is not None:
            return x, "exact"
    return solve_qp_cvxpy(gram, pi, phi), "cvxpy"


def nu_of(lam: np.ndarray, pi: np.ndarray) -> float:
    """ν(λ) = max(Σ_i λ_i π_i, 0)  (3.27)."""
    return max(float(lam @ pi), 0.0)


def combined_gradient(grads_upper: torch.Tensor, grad_q: torch.Tensor, lam: np.ndarray, nu: float) -> torch.Tensor:
    """Σ_i λ_i ∇F_i + ν ∇q̃ = −d  (3.26)."""
    weights = torch.as_tensor(lam, dtype=grads_upper.dtype, device=grads_upper.device)
    return weights @ grads_upper + nu * grad_q


# --------------------------------------------------------------------------- Algorithm 2
class FORUM:
    """Algorithm 2 on any MOBLOProblem; the iterate z = (alpha, omega) is updated as one UL variable."""

    name = "forum"
    updates_omega_directly = True

    def __init__(self, problem: MOBLOProblem, alpha: torch.Tensor, omega: torch.Tensor, seed: int, *,
                 lower_steps: int = 50, lower_lr: float = 0.05, alpha_lr: float = 0.3, omega_lr: float = 0.3,
                 optimizer: str = "sgd", rho: float = 0.3, beta_power: float = 0.75, beta_every: int = 1,
                 barrier: str = "thesis", solver: str = "auto", normalize_upper: bool = False,
                 lower_init: str = "warm", epsilon: float = 1e-8):
        if not isinstance(lower_steps, int) or lower_steps < 0:
            raise ValueError(f"weighting.lower_steps: must be an integer >= 0, got {lower_steps!r}")
        for field, value in (("lower_lr", lower_lr), ("alpha_lr", alpha_lr), ("omega_lr", omega_lr), ("rho", rho)):
            if not value > 0:
                raise ValueError(f"weighting.{field}: must be > 0, got {value}")
        if not 0 < beta_power:
            raise ValueError(f"weighting.beta_power: must be > 0, got {beta_power}")
        if not isinstance(beta_every, int) or beta_every < 1:
            raise ValueError(f"weighting.beta_every: must be an integer >= 1, got {beta_every!r}")
        if barrier not in BARRIERS:
            raise ValueError(f"weighting.barrier: unknown {barrier!r}; known: {list(BARRIERS)}")
        if solver not in SOLVERS:
            raise ValueError(f"weighting.solver: unknown {solver!r}; known: {list(SOLVERS)}")
        if lower_init not in LOWER_INITS:
            raise ValueError(f"weighting.lower_init: unknown {lower_init!r}; known: {list(LOWER_INITS)}")
        if epsilon < 0:
            raise ValueError(f"weighting.epsilon: must be >= 0, got {epsilon}")
        self.problem, self.seed = problem, seed
        self.lower_steps, self.lower_lr = lower_steps, float(lower_lr)
        self.rho, self.beta_power, self.beta_every = float(rho), float(beta_power), beta_every
        self.barrier, self.solver, self.normalize_upper = barrier, solver, bool(normalize_upper)
        self.lower_init, self.epsilon = lower_init, float(epsilon)
        self.alpha = alpha.detach().clone().requires_grad_(True)
        self.omega = omega.detach().clone().requires_grad_(True)
        self.omega_init = omega.detach().clone()
        self.alpha_optimizer = make_optimizer(optimizer, self.alpha, alpha_lr, "weighting.optimizer")
        self.omega_optimizer = make_optimizer(optimizer, self.omega, omega_lr, "weighting.optimizer")
        m = problem.num_objectives
        self.lam_avg = np.full(m, 1.0 / m)  # λ̃^{-1} = 1/m (Alg. 2 line 2)
        self.names = objective_names(problem)
        self.cvxpy_fallbacks = 0

    def beta(self, iteration: int) -> float:
        return float((iteration // self.beta_every + 1) ** (-self.beta_power))

    def gradients(self, iteration: int):
        """(F [m], ∇_z F_i [m, n+p], q̃, ∇_z q̃ [n+p], f(z)) at the current z."""
        problem = self.problem
        lower_batch, upper_batch = problem.lower_batch(iteration), problem.upper_batch(iteration)
        start = self.omega if self.lower_init == "warm" else self.omega_init
        omega_T = lower_descent(problem, self.alpha, start, lower_batch, self.lower_steps, self.lower_lr,
                                differentiable=False)
        alpha = self.alpha.detach().requires_grad_(True)
        omega = self.omega.detach().requires_grad_(True)
        f_z = problem.lower_objective(alpha, omega, batch_for_step(lower_batch))
        grad_alpha_f, grad_omega_f = _grad_or_zeros(f_z, (alpha, omega))
        alpha_T = self.alpha.detach().requires_grad_(True)
        f_T = problem.lower_objective(alpha_T, omega_T, batch_for_step(lower_batch))
        (grad_alpha_f_T,) = _grad_or_zeros(f_T, (alpha_T,))
        grad_q = torch.cat([grad_alpha_f - grad_alpha_f_T, grad_omega_f]).detach()
        values = problem.upper_objectives(alpha, omega, upper_batch)
        grads_alpha, grads_omega = per_objective_gradients(values, (alpha, omega))
        grads_upper = torch.cat([grads_alpha, grads_omega], 1).detach()
        return values.detach(), grads_upper, float((f_z - f_T).detach()), grad_q, float(f_z.detach())

    def step(self, iteration: int) -> dict[str, float]:
        """One UL iteration; the returned stats describe z_k before the step."""
        values, grads_upper, q_tilde, grad_q, lower_value = self.gradients(iteration)
        if self.normalize_upper:
            grads_upper = grads_upper / (grads_upper.norm(dim=1, keepdim=True) + 1e-8)
        gram, pi, phi = qp_terms(grads_upper, grad_q, self.rho, self.barrier, self.epsilon)
        x, used = solve_qp(gram, pi, phi, self.solver)
        if used == "cvxpy" and self.solver != "cvxpy":
            self.cvxpy_fallbacks += 1
        m = self.problem.num_objectives
        lam = x[:m]
        beta = self.beta(iteration)
        self.lam_avg = (1.0 - beta) * self.lam_avg + beta * lam
        nu = nu_of(self.lam_avg, pi)
        descent = combined_gradient(grads_upper, grad_q, self.lam_avg, nu)  # −d
        stats = {**objective_stats("upper", self.names, values),
                 **objective_stats("weight", self.names, torch.as_tensor(self.lam_avg)),
                 "nu": nu, "value_gap": q_tilde, "lower_objective": lower_value,
                 "grad_q_norm": float(grad_q.norm()), "direction_norm": float(descent.norm()),
                 # K(z_k) of Thm 3.7 with ∇q̃ in place of ∇q
                 "stationarity_approx": float(descent.norm() ** 2),
                 "barrier_slack": float(grad_q @ (-descent)) + phi,  # <= 0 when ⟨∇q̃, d⟩ <= −φ
                 "cvxpy_fallbacks": float(self.cvxpy_fallbacks)}
        exact = self.exact_constraint(values, grads_upper, nu)
        stats.update(exact)
        self.apply(descent)
        return stats

    def exact_constraint(self, values, grads_upper, nu) -> dict[str, float]:
        """q(z) and K(z) = ‖Σλ̃∇F + ν∇q‖² with the TRUE value function, when the problem knows f*(α)."""
        if not hasattr(self.problem, "lower_value"):
            return {}
        alpha = self.alpha.detach().requires_grad_(True)
        omega = self.omega.detach().requires_grad_(True)
        q = self.problem.lower_objective(alpha, omega) - self.problem.lower_value(alpha)
        grad_alpha, grad_omega = _grad_or_zeros(q, (alpha, omega))
        grad_q = torch.cat([grad_alpha, grad_omega]).detach().to(grads_upper.dtype)
        stationarity = combined_gradient(grads_upper, grad_q, self.lam_avg, nu).norm() ** 2
        return {"constraint": float(q.detach()), "stationarity": float(stationarity)}

    def apply(self, descent: torch.Tensor) -> None:
        n = self.alpha.numel()
        self.alpha_optimizer.zero_grad()
        self.omega_optimizer.zero_grad()
        self.alpha.grad = descent[:n].detach().to(self.alpha.dtype).clone()
        self.omega.grad = descent[n:].detach().to(self.omega.dtype).clone()
        self.alpha_optimizer.step()
        self.omega_optimizer.step()
        self.alpha.grad = self.omega.grad = None
        if not (torch.all(torch.isfinite(self.alpha)) and torch.all(torch.isfinite(self.omega))):
            raise FloatingPointError("forum: the iterate became non-finite; lower weighting.alpha_lr / omega_lr")

    def point(self, iteration: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.alpha.detach().clone(), self.omega.detach().clone()

    def model_parameters(self) -> torch.Tensor:
        return self.omega.detach().clone()

    def state_dict(self) -> dict:
        return {"alpha": self.alpha.detach().clone(), "omega": self.omega.detach().clone(),
                "alpha_optimizer": self.alpha_optimizer.state_dict(),
                "omega_optimizer": self.omega_optimizer.state_dict(),
                "lam_avg": self.lam_avg.copy(), "cvxpy_fallbacks": self.cvxpy_fallbacks}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
            self.omega.copy_(state["omega"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.omega_optimizer.load_state_dict(state["omega_optimizer"])
        self.lam_avg = np.asarray(state["lam_avg"], dtype=np.float64).copy()
        self.cvxpy_fallbacks = int(state["cvxpy_fallbacks"])
