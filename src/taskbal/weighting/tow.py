"""TOW: task weighting by trajectory optimisation (Nguyen, Do & Carneiro, TMLR 2023).

The weights u_t ∈ R^M of the M tasks of T consecutive meta-batches are the actions of a
finite-horizon control problem whose state x_t is the meta-parameter vector (Eqs. 6–7)::

    x_{t+1} = f(x_t, u_t)            one step of the outer optimiser along J_tᵀ u_t (J_t = task grads)
    c(x_t, u_t) = 1ᵀ ℓ_t(x_t) + β_u/2 ‖u_t − μ_u 1‖²        (no terminal cost, V_{T+1} = 0)

solved by iLQR (Algorithms 1–2, App. E): from the uniform nominal û_t = 1/M, linearise f and
quadraticise c about the nominal trajectory, run the Riccati-like backward pass for the feedback
law δu_t = K_t δx_t + k_t, then roll the *true* dynamics forward with backtracking line search on
ε (u_t = û_t + K_t(x_t − x̂_t) + ε k_t); repeat ``iterations`` times. The training loop then takes the
T outer steps with the planned weights; x_{T+1} starts the next window.

Linearisation (App. G). Both optimisers give F_x = I − diag(s) H_w and F_u = −diag(s) J_tᵀ, where
H_w = Σ_i û_i H_i is the Hessian of the weighted loss, replaced by the Gauss–Newton matrix
(Sec. 3.1), and s is a D-vector: s = α for SGD (Eqs. 91–93); for Adam (Eqs. 94–105, with m_{t−1},
v_{t−1} held constant and g = J_tᵀ û_t, m_t, v_t the moments after this step, b_j = 1 − β_j^step)::

    s = (α / b₁) · [ (1 − β₁) / den − m_t (1 − β₂) g / (den² √(b₂ v_t)) ],  den = √(v_t / b₂) + ε_adam

i.e. the quotient rule of Eq. 102 written for the diagonal of ∇_x (Eq. 105) and for ∇_u.
Cost (App. H): c_x = Σ_i g_i, C_xx = Σ_i G_i (Gauss–Newton), c_u = β_u(û − μ_u), C_uu = β_u I, C_xu = 0.

Approximations, as options:
- ``value``: ``diagonal`` (paper: V_t kept diagonal, "Newton's method separately for each
  coordinate") or ``full`` (App. B's exact D×D V_t).
- ``curvature``: ``diagonal`` (paper: the diagonal of the Gauss–Newton matrices in F_x and C_xx) or
  ``full`` (the D×D Gauss–Newton matrices; App. B says "full Gauss–Newton matrix" without saying
  whether F_x and C_xx were also full). Both ``full`` options cost O(D²) memory.
The Gauss–Newton matrix of task i is J_oᵀ H_o J_o with J_o the Jacobian of the query outputs and H_o
the Hessian of the loss w.r.t. the outputs (MSE: 2/(n·out) I; cross-entropy: (diag p − ppᵀ)/n per
query point). ``gauss_newton: adapted`` (default; the authors' code, which is first-order MAML) takes
J_o w.r.t. the adapted weights (∂φ/∂x = I); ``meta`` takes it through the adaptation (with
second-order MAML: the Gauss–Newton matrix of the meta-loss itself; costs a second adaptation).
The meta-gradients are always the learner's own (second-order unless ``learner.first_order``).

Choices where the paper is ambiguous, the consequential ones as options:
- θ (Eq. 74, Alg. 2 l. 17) prints θ_t = θ_{t+1} − q_uᵀ Q_uu q_u; the first-order decrease of Lemma 12 is
  Σ q_uᵀ k_t = −Σ q_uᵀ Q_uu⁻¹ q_u. ``theta: inverse`` (default) or ``printed``.
- Line search (Eq. 72 / Alg. 1 l. 17): ``line_search: paper`` halves ε from 1 until
  J(u) − J(û) ≤ ½ ε θ₁ and u ≥ 0; below ``min_step`` the nominal (the last accepted trajectory,
  uniform on the first iteration) is kept and the iterations stop (a repeat would be identical).
  A trial is abandoned at its first negative weight. ``none`` takes ε = 1 unconditionally (the authors' code,
  whose line-search loop breaks after the first trial and never checks u ≥ 0).
- ``final_pass``: ``simulated`` (paper) rolls the last forward pass inside the planner and the training
  loop then replays the accepted weights; ``live`` lets the training loop *be* the last forward pass:
  at each of the T steps the weights are û_t + K_t(x_t − x̂_t) + k_t at the loop's actual x_t (ε = 1,
  no line search on the last iteration, negative weights clipped to 0). That saves one rollout of T
  meta-gradient evaluations per window (benchmarks/bench_tow.py); it keeps the gains K_t (T·M·D numbers).
- The dynamics replay the training loop's own torch Adam (lr, betas, eps from its optimiser,
  ε outside the square root as in PyTorch and the authors' code; the paper writes √(v̂ + ε)); the
  bias-correction step is the optimiser's global step count, and its moments carry over between windows.
- T (``horizon``): the paper gives 10 or 5 per dataset and reports M = 10, T = 5; default 5. The
  window is cut short at the end of training.
- Nominal actions û = 1/M, μ_u = 1/M (``prior_mean`` overrides), β_u = 10 (``prior_precision``), 2 iLQR
  iterations (``iterations``): the paper's values. No terminal cost (paper), so the last meta-batch of
  a window keeps uniform weights on the first iteration, and ``horizon: 1`` is uniform weighting.

Where it plugs in: the training loop hands over the learner, the outer optimiser and the batches of the
next T iterations (TaskGradients.learner / optimizer / upcoming); at the first iteration of a window TOW
plans, and every iteration returns the planned weights' combination of the loop's own meta-gradients.
Batch 1 at x_1 reuses the loop's evaluation; the others are evaluated by ``evaluate_learner``, all tasks
of a meta-batch at once. The plan is the weighting's state (resume mid-window is exact).

Work that cannot change the plan is skipped: stage 1's expansion has no F_x, C_xx (x_1 is given, so
δx_1 = 0 and K_1 only ever multiplies 0; K_1 = 0 is returned) and hence no curvature and no re-adaptation
of batch 1; a rollout's last stage runs the backward of its meta-gradients only if the trajectory is
expanded again (a rejected line-search trial never does), and x_{T+1} is not computed. For networks that
map query points independently (no batch statistics, no dropout; ``points_independent``) the curvature
comes from ordinary backward passes per output column, with one weight copy per query point
(``per_point_gauss_newton``; the MLP's diagonal in closed form per linear layer, Σ_p δ_p² h_p²), instead
of a Jacobian vmapped over the n·c output probes; other networks (conv4's BatchNorm) keep the Jacobian.
With ``value: full`` and a diagonal F_x the backward pass scales rows and columns instead of D×D products.

Cost per outer step (benchmarks/bench_tow.py measures it against plain MAML; the last measured
ratios are in benchmarks/README.md; the paper reports 5.6–9.5× plain MAML, Table 2): with the paper's
defaults the time goes mostly to rejected line-search rollouts, ``value: full`` costs more, and
``final_pass: live`` with fewer iterations less. The live 1-iteration variant cannot go below about
1 + (T − 1)/T evaluations per step (the nominal rollout re-evaluates batches 2..T at the uniform
trajectory); the rest is the curvature of T − 1 stages, the backward pass and the bookkeeping of the plan.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .base import Combined, TaskGradients, Weighting

Evaluate = Callable[[int, torch.Tensor], "StageEval"]
MAX_FULL_PARAMS = 30_000  # D×D float32 matrices of this size take 3.6 GB each


class StageEval:
    """Meta-batch t evaluated at x: query losses [M], meta-gradients [M, D] and the Gauss–Newton
    curvature ([M, D] diagonals or [M, D, D] matrices), the latter computed on first use
    (``curvature_fn``): only the trajectories that get linearised need it. The meta-gradients may be
    deferred too (``grads_fn``: the last stage of a rollout, whose meta-gradients only an expansion uses)."""

    def __init__(self, losses: torch.Tensor, grads: torch.Tensor | None, curvature: torch.Tensor | None = None,
                 curvature_fn: Callable[[], torch.Tensor] | None = None,
                 grads_fn: Callable[[], torch.Tensor] | None = None):
        if grads is None and grads_fn is None:
            raise ValueError("a stage evaluation needs its meta-gradients or a way to compute them")
        self.losses, self._grads, self._grads_fn = losses, grads, grads_fn
        self._curvature, self._curvature_fn = curvature, curvature_fn

    @property
    def grads(self) -> torch.Tensor:
        if self._grads is None:
            self._grads, self._grads_fn = self._grads_fn(), None
        return self._grads

    @property
    def curvature(self) -> torch.Tensor:
        if self._curvature is None:
            if self._curvature_fn is None:
                raise ValueError("this stage evaluation has no curvature")
            self._curvature, self._curvature_fn = self._curvature_fn(), None
        return self._curvature


# -- dynamics -----------------------------------------------------------------------------------
class SGDDynamics:
    """x' = x − α g."""

    def __init__(self, lr: float):
        self.lr = lr

    def initial_state(self, x: torch.Tensor):
        return None

    def step(self, x, state, direction):
        return x - self.lr * direction, None

    def scale(self, state, direction) -> torch.Tensor:
        return torch.full_like(direction, self.lr)


class AdamDynamics:
    """torch.optim.Adam's update (no weight decay, no amsgrad); state = (m, v, step)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, tuple(betas), eps

    def initial_state(self, x: torch.Tensor):
        return torch.zeros_like(x), torch.zeros_like(x), 0

    def moments(self, state, direction):
        m, v, step = state
        beta1, beta2 = self.betas
        return m + (1 - beta1) * (direction - m), beta2 * v + (1 - beta2) * direction * direction, step + 1

    def step(self, x, state, direction):
        m, v, step = self.moments(state, direction)
        beta1, beta2 = self.betas
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        den = v.sqrt() / bias2 ** 0.5 + self.eps
        return x - (self.lr / bias1) * m / den, (m, v, step)

    def scale(self, state, direction) -> torch.Tensor:
        """s with F_x = I − diag(s) H, F_u = −diag(s) Jᵀ (m_{t−1}, v_{t−1} held constant, App. G)."""
        m, v, step = self.moments(state, direction)
        beta1, beta2 = self.betas
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        den = v.sqrt() / bias2 ** 0.5 + self.eps
        root = (bias2 * v).sqrt()
        # d den / d g = (1 − β₂) g / √(b₂ v); where v = 0 the gradient is 0 and so is this term
        safe_root = root.clamp_min(torch.finfo(root.dtype).tiny)
        quotient = torch.where(root > 0, m * (1 - beta2) * direction / (den * den * safe_root), torch.zeros_like(m))
        return (self.lr / bias1) * ((1 - beta1) / den - quotient)


# -- the generic iLQR solver --------------------------------------------------------------------
@dataclass
class Linearisation:
    """One stage's expansion: f ≈ F_x δx + F_u δu, c ≈ c_x δx + c_u δu + ½δxᵀC_xx δx + ½δuᵀC_uu δu.
    F_x and C_xx are [D] (diagonal) or [D, D]; both None on a first stage whose state is given (δx_1 = 0:
    they would only enter the gain K_1, which multiplies δx_1, and V_1, which nothing uses)."""

    F_x: torch.Tensor | None
    F_u: torch.Tensor  # [D, M]
    c_x: torch.Tensor  # [D]
    c_u: torch.Tensor  # [M]
    C_xx: torch.Tensor | None
    C_uu: torch.Tensor  # [M, M]


def _full(a: torch.Tensor) -> torch.Tensor:
    return torch.diag(a) if a.dim() == 1 else a


def ilqr_backward(stages: list[Linearisation], value: str = "diagonal", theta: str = "inverse"):
    """Algorithm 2: feedback gains K_t [M, D], feed-forward k_t [M] for t = 1..T, and θ₁ (the predicted
    first-order change of the total cost along ε). ``value``: ``diagonal`` keeps V_t's diagonal only.
    A first stage without F_x (a given initial state) gets K_1 = 0."""
    gains, offsets = [None] * len(stages), [None] * len(stages)
    first = stages[0]
    D = first.F_u.shape[0]
    v = torch.zeros(D, dtype=first.F_u.dtype, device=first.F_u.device)
    V = torch.zeros_like(v) if value == "diagonal" else torch.zeros(D, D, dtype=v.dtype, device=v.device)
    theta_1 = torch.zeros((), dtype=torch.float64, device=v.device)  # summed in double, synced once
    for t in range(len(stages) - 1, -1, -1):
        s = stages[t]
        if s.F_x is None:
            if t != 0:
                raise ValueError("ilqr_backward: only the first stage may leave F_x out (its state is given)")
            Q_uu = s.C_uu + s.F_u.T @ (V[:, None] * s.F_u if value == "diagonal" else V @ s.F_u)
            Q_uu = 0.5 * (Q_uu + Q_uu.T)
            q_u = s.c_u + s.F_u.T @ v
            k = -torch.linalg.solve(Q_uu, q_u)
            gains[t], offsets[t] = torch.zeros_like(s.F_u.T), k
            theta_1 = theta_1 + (q_u @ k if theta == "inverse" else -(q_u @ Q_uu @ q_u)).double()
            break
        if value == "diagonal" and s.F_x.dim() == 1 and s.C_xx.dim() == 1:
            VFu = V[:, None] * s.F_u  # diag(V) F_u
            Q_xu = s.F_x[:, None] * VFu
            Q_uu = s.C_uu + s.F_u.T @ VFu
            q_x = s.c_x + s.F_x * v
            Q_xx_diag = s.C_xx + s.F_x * s.F_x * V
        elif value == "diagonal":  # diagonal V with a full F_x or C_xx: only diag(Q_xx) is needed
            F_x, C_xx = _full(s.F_x), _full(s.C_xx)
            VFu = V[:, None] * s.F_u
            Q_xu = F_x.T @ VFu
            Q_uu = s.C_uu + s.F_u.T @ VFu
            q_x = s.c_x + F_x.T @ v
            Q_xx_diag = torch.diagonal(C_xx) + (F_x * F_x * V[:, None]).sum(0)
        elif s.F_x.dim() == 1:  # full V, diagonal F_x: the products with F_x are row/column scalings, O(D²)
            VFu = V @ s.F_u
            Q_xu = s.F_x[:, None] * VFu
            Q_uu = s.C_uu + s.F_u.T @ VFu
            q_x = s.c_x + s.F_x * v
            Q_xx = s.F_x[:, None] * V * s.F_x
            if s.C_xx.dim() == 1:
                Q_xx.diagonal().add_(s.C_xx)
            else:
                Q_xx = s.C_xx + Q_xx
        else:
            F_x, C_xx = _full(s.F_x), _full(s.C_xx)
            VFu = V @ s.F_u
            Q_xu = F_x.T @ VFu
            Q_uu = s.C_uu + s.F_u.T @ VFu
            q_x = s.c_x + F_x.T @ v
            Q_xx = C_xx + F_x.T @ V @ F_x
        Q_uu = 0.5 * (Q_uu + Q_uu.T)
        q_u = s.c_u + s.F_u.T @ v
        # the right-hand sides [Q_ux | q_u] built column-major, as LAPACK takes them (no transposing copy)
        solved = torch.linalg.solve(Q_uu, torch.cat([Q_xu, q_u[None]], dim=0).T)
        K, k = -solved[:, :-1], -solved[:, -1]
        gains[t], offsets[t] = K, k
        theta_1 = theta_1 + (q_u @ k if theta == "inverse" else -(q_u @ Q_uu @ q_u)).double()
        if t == 0:  # V_1, v_1 are not needed
            break
        if value == "diagonal":
            V = Q_xx_diag + (Q_xu * K.T).sum(1)
        else:
            V = Q_xx + Q_xu @ K
            V = 0.5 * (V + V.T)
        v = q_x + Q_xu @ k
    return gains, offsets, float(theta_1)


@dataclass
class Trajectory:
    xs: list[torch.Tensor]  # x_1..x_T (x_{T+1} is not needed: there is no terminal cost)
    states: list  # optimiser state before each step (T entries)
    us: list[torch.Tensor]  # u_1..u_T
    evals: list[StageEval]  # stage t evaluated at x_t
    cost: float


class Problem:
    """What iLQR needs from a control problem: the stage evaluations, the step, the cost, the expansion."""

    horizon: int

    def stage(self, t: int, x: torch.Tensor):
        raise NotImplementedError

    def final_stage(self, t: int, x: torch.Tensor):
        """The last stage of a rollout: no step follows it, so its meta-gradients are only needed if the
        trajectory is expanded again; a problem may defer them."""
        return self.stage(t, x)

    def step(self, x, state, ev: StageEval, u):
        raise NotImplementedError

    def cost(self, ev: StageEval, u: torch.Tensor) -> float:
        raise NotImplementedError

    def linearise(self, x, state, ev: StageEval, u) -> Linearisation:
        raise NotImplementedError

    def linearise_start(self, x, state, ev: StageEval, u) -> Linearisation:
        """Stage 1's expansion; its state x_1 is given, so a problem may leave F_x and C_xx out."""
        return self.linearise(x, state, ev, u)


def rollout(problem: Problem, x1, state1, nominal: Trajectory | None, gains=None, offsets=None, eps=1.0,
            first_eval=None) -> Trajectory | None:
    """Run the true dynamics under u_t = û_t + K_t(x_t − x̂_t) + ε k_t (``nominal`` None: the nominal
    actions). Returns None as soon as a weight is negative when ``problem.nonnegative`` (the paper's
    acceptance test would reject the trial anyway: the remaining stages are not evaluated)."""
    xs, states, us, evals, cost = [], [], [], [], 0.0
    x, state = x1, state1
    last = problem.horizon - 1
    for t in range(problem.horizon):
        if t:
            x, state = problem.step(x, state, evals[-1], us[-1])
        u = problem.nominal_action(t) if nominal is None else nominal.us[t]
        if gains is not None:
            u = u + gains[t] @ (x - nominal.xs[t]) + eps * offsets[t]
            if getattr(problem, "nonnegative", False) and bool((u < 0).any()):
                return None
        if t == 0 and first_eval is not None:
            ev = first_eval
        else:
            ev = problem.final_stage(t, x) if t == last else problem.stage(t, x)
        cost += problem.cost(ev, u)
        xs.append(x), states.append(state), us.append(u), evals.append(ev)
    return Trajectory(xs, states, us, evals, cost)


def ilqr(problem: Problem, x1, state1, iterations: int = 2, value: str = "diagonal", theta: str = "inverse",
         line_search: str = "paper", min_step: float = 2.0 ** -10, last_backward_only: bool = False,
         first_eval=None):
    """Algorithm 1 on one window from x_1 (optimiser state ``state1``), nominal actions û_t = 1/M.

    Returns the accepted trajectory, diagnostics and, when ``last_backward_only``, the gains of a last
    backward pass that is *not* rolled out (``final_pass: live``: the training loop rolls it out).
    x_1 is the same in every rollout, so stage 1 is evaluated once (``first_eval`` if given)."""
    first = problem.stage(0, x1) if first_eval is None else first_eval
    nominal = rollout(problem, x1, state1, None, first_eval=first)
    log = {"cost_uniform": nominal.cost, "line_search_trials": 0, "line_search_failures": 0}
    last = None
    for it in range(iterations):
        stages = [(problem.linearise_start if t == 0 else problem.linearise)(
            nominal.xs[t], nominal.states[t], nominal.evals[t], nominal.us[t]) for t in range(problem.horizon)]
        gains, offsets, theta_1 = ilqr_backward(stages, value, theta)
        if last_backward_only and it == iterations - 1:
            last = (gains, offsets)
            break
        eps, accepted = 1.0, None
        problem.nonnegative = line_search == "paper"
        while eps >= min_step:
            trial = rollout(problem, x1, state1, nominal, gains, offsets, eps, first_eval=first)
            log["line_search_trials"] += 1
            if line_search == "none":
                accepted = trial
                break
            if trial is not None and trial.cost - nominal.cost <= 0.5 * eps * theta_1:
                accepted = trial
                break
            eps, trial = 0.5 * eps, None  # (frees the rejected trial's deferred meta-graph first)
        if accepted is None:  # keep the nominal trajectory (uniform weights on the first iteration);
            log["line_search_failures"] += 1  # a further iteration would repeat this one exactly
            break
        nominal = accepted
    log["cost"] = nominal.cost
    return nominal, log, last


# -- TOW on meta-batches ------------------------------------------------------------------------
class MetaProblem(Problem):
    """The control problem of Eqs. 6–7 on T meta-batches given by ``evaluate(t, x) -> StageEval``
    (``evaluate_final``, if given, for the last stage of a rollout: may defer the meta-gradients)."""

    nonnegative = False  # set by ``ilqr``: the paper's line search rejects negative weights

    def __init__(self, evaluate: Evaluate, horizon: int, num_tasks: int, dynamics, prior_precision: float,
                 prior_mean: float | None, evaluate_final: Evaluate | None = None):
        self.evaluate, self.horizon, self.M = evaluate, horizon, num_tasks
        self.evaluate_final = evaluate_final or evaluate
        self.dynamics, self.beta = dynamics, prior_precision
        self.mu = 1.0 / num_tasks if prior_mean is None else prior_mean
        self._C_uu: torch.Tensor | None = None  # β_u I, the same at every stage

    def nominal_action(self, t: int) -> torch.Tensor:
        return torch.full((self.M,), 1.0 / self.M, dtype=self._dtype, device=self._device)

    def bind(self, x: torch.Tensor) -> None:
        self._dtype, self._device = x.dtype, x.device

    def stage(self, t, x):
        return self.evaluate(t, x)

    def final_stage(self, t, x):
        return self.evaluate_final(t, x)

    def step(self, x, state, ev, u):
        return self.dynamics.step(x, state, u @ ev.grads)

    def cost(self, ev, u):
        return float(ev.losses.sum() + 0.5 * self.beta * (u - self.mu).pow(2).sum())

    def linearise(self, x, state, ev, u):
        return self.expand(x, state, ev, u, with_state=True)

    def linearise_start(self, x, state, ev, u):
        """x_1 is given: no F_x, C_xx, so stage 1's curvature is never computed."""
        return self.expand(x, state, ev, u, with_state=False)

    def expand(self, x, state, ev, u, with_state: bool) -> Linearisation:
        g = u @ ev.grads
        s = self.dynamics.scale(state, g)
        F_x = C_xx = None
        if with_state:
            curv = ev.curvature
            if curv.dim() == 2:  # diagonals [M, D]
                H_w, C_xx = u @ curv, curv.sum(0)
                F_x = 1 - s * H_w
            else:  # matrices [M, D, D]
                H_w, C_xx = torch.einsum("m,mde->de", u, curv), curv.sum(0)
                F_x = torch.eye(x.shape[0], dtype=x.dtype, device=x.device) - s[:, None] * H_w
        if self._C_uu is None or self._C_uu.dtype != x.dtype or self._C_uu.device != x.device:
            self._C_uu = self.beta * torch.eye(self.M, dtype=x.dtype, device=x.device)
        return Linearisation(F_x=F_x, F_u=-s[:, None] * ev.grads.T, c_x=ev.grads.sum(0),
                             c_u=self.beta * (u - self.mu), C_xx=C_xx, C_uu=self._C_uu)


def output_hessian(loss: str, outputs: torch.Tensor) -> torch.Tensor:
    """Hessian of the per-task loss w.r.t. the query outputs: [k, n, c, c] (block per query point)."""
    k, n, c = outputs.shape
    if loss == "mse":
        eye = torch.eye(c, dtype=outputs.dtype, device=outputs.device)
        return (2.0 / (n * c)) * eye.expand(k, n, c, c)
    p = outputs.softmax(-1)
    return (torch.diag_embed(p) - p[..., :, None] * p[..., None, :]) / n


def _output_jacobian(outputs: torch.Tensor, leaves: list[torch.Tensor], retain: bool) -> torch.Tensor:
    """J_o of every task: [k, n, c, Σ leaf sizes], task i's outputs depending on row i of each leaf only."""
    k, n, c = outputs.shape
    probes = torch.eye(n * c, dtype=outputs.dtype, device=outputs.device).view(n * c, 1, n, c).expand(n * c, k, n, c)
    try:
        rows = torch.autograd.grad(outputs, leaves, grad_outputs=probes, is_grads_batched=True,
                                   retain_graph=retain, allow_unused=True, materialize_grads=True)
    except RuntimeError:  # an op without a batched backward: one probe at a time
        per = [torch.autograd.grad(outputs, leaves, grad_outputs=probes[j], retain_graph=True,
                                   allow_unused=True, materialize_grads=True) for j in range(n * c)]
        rows = [torch.stack(col) for col in zip(*per)]
    jac = torch.cat([r.reshape(n * c, k, -1) for r in rows], dim=2)
    return jac.permute(1, 0, 2).reshape(k, n, c, -1)


def gauss_newton(loss: str, outputs: torch.Tensor, jac: torch.Tensor, form: str) -> torch.Tensor:
    """Σ_n J_nᵀ H_n J_n per task: diagonals [k, D] (``form`` diagonal) or matrices [k, D, D]."""
    HJ = torch.einsum("kncm,knmd->kncd", output_hessian(loss, outputs), jac)
    if form == "diagonal":
        return (jac * HJ).sum((1, 2))
    return torch.einsum("kncd,knce->kde", jac, HJ)


def output_hessian_factor(loss: str, outputs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A and s with s·A Aᵀ = ``output_hessian`` at every query point: A [k, n, c, c]. MSE: A = I,
    s = 2/(n·c); cross-entropy: A = diag(√p) − p √pᵀ (column j is √p_j (e_j − p); A Aᵀ = diag p − ppᵀ
    because Σ_j p_j = 1), s = 1/n."""
    k, n, c = outputs.shape
    if loss == "mse":
        return torch.eye(c, dtype=outputs.dtype, device=outputs.device).expand(k, n, c, c), 2.0 / (n * c)
    p = outputs.softmax(-1)
    root = p.sqrt()
    return torch.diag_embed(root) - p[..., :, None] * root[..., None, :], 1.0 / n


def points_independent(model: torch.nn.Module) -> bool:
    """Whether the network maps each input row without looking at the other rows of its batch: no
    batch-statistics normalisation, no random masks. Then a task's outputs on n query points are the
    outputs of n copies of its weights on one point each."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (
                module.training or not module.track_running_stats):
            return False
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            return False
    return True


def _output_probes(loss: str, out: torch.Tensor, k: int, n: int) -> tuple[list[torch.Tensor], float]:
    """The columns of the output-Hessian factor as backward probes shaped like ``out``, and s."""
    c = out.shape[-1]
    if loss == "mse" and c == 1:
        return [torch.ones_like(out)], 2.0 / n
    factor, scale = output_hessian_factor(loss, out.detach().view(k, n, c))
    return [factor[..., j].reshape(out.shape) for j in range(c)], scale


def _replicated_rows(learner, fast, query_x, wanted, form):
    """Per-point rows (A_pᵀ J_p)_j by one backward per column j through k·n weight copies: their squares
    summed over the points (``diagonal``, by parameter name) or all rows [k, n·c, Σ wanted sizes]."""
    k, n = query_x.shape[:2]
    with torch.enable_grad():
        copies = {name: p.detach().unsqueeze(1).expand(k, n, *p.shape[1:]).reshape(k * n, *p.shape[1:])
                  for name, p in fast.items()}
        leaves = [copies[name].requires_grad_() for name in wanted]
        out = learner.predict(copies, query_x.reshape(k * n, 1, *query_x.shape[2:]))
        probes, scale = _output_probes(learner.loss, out, k, n)
        blocks: dict[str, torch.Tensor] = {}
        rows = []
        for j, probe in enumerate(probes):
            grads = torch.autograd.grad(out, leaves, grad_outputs=probe, retain_graph=j < len(probes) - 1,
                                        allow_unused=True, materialize_grads=True)
            if form == "diagonal":
                for name, g in zip(wanted, grads):
                    square = (g * g).unflatten(0, (k, n)).sum(1).reshape(k, -1)
                    blocks[name] = square if j == 0 else blocks[name] + square
            else:
                rows.append(torch.cat([g.reshape(k, n, -1) for g in grads], dim=2))
    return (blocks if form == "diagonal" else torch.cat(rows, dim=1)), scale


def _mlp_diagonal_blocks(learner, fast, query_x):
    """The diagonal for the MLP of models/mlp.py in closed form, or None for any other network or learner
    forward. Layer l computes z = W h + b at every point, so point p's row of W is δ_p h_pᵀ with
    δ_p = ∂(A_pᵀ f_p)_j/∂z_p, and Σ_p (δ_p h_pᵀ)² = (δ²)ᵀ h²: one [k, out, n] × [k, n, in] product
    per layer instead of k·n per-point gradients. The δ_p of all points come from one backward per
    column j of A (the points are independent)."""
    from ..learners.cavia import CAVIA, CONTEXT
    from ..learners.maml import MAML
    from ..models.mlp import MLP

    model, predict = learner.model, type(learner).predict
    if type(model) is not MLP or predict not in (MAML.predict, CAVIA.predict):
        return None
    context = fast[CONTEXT].detach() if predict is CAVIA.predict else None
    k, n = query_x.shape[:2]
    linear = [i for i, layer in enumerate(model) if isinstance(layer, torch.nn.Linear)]
    with torch.enable_grad():  # MLP.batched_forward, keeping every layer's input h and output z
        h = model._with_context(query_x.flatten(2), context)
        inputs, outputs = [], []
        for position, index in enumerate(linear):
            weight, bias = fast[f"{index}.weight"].detach(), fast[f"{index}.bias"].detach()
            inputs.append(h.detach())
            z = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            outputs.append(z if position else z.requires_grad_())
            h = model.activation(z) if position < len(linear) - 1 else z
        probes, scale = _output_probes(learner.loss, h, k, n)
        squares = [x * x for x in inputs]
        blocks: dict[str, torch.Tensor] = {}
        for j, probe in enumerate(probes):
            deltas = torch.autograd.grad(h, outputs, grad_outputs=probe, retain_graph=j < len(probes) - 1)
            for index, delta, square in zip(linear, deltas, squares):
                d2 = delta * delta
                for name, block in ((f"{index}.weight", (d2.transpose(1, 2) @ square).reshape(k, -1)),
                                    (f"{index}.bias", d2.sum(1))):
                    blocks[name] = block if j == 0 else blocks[name] + block
    return blocks, scale


def at_meta_positions(columns: torch.Tensor, layout: list[tuple[str, int]], learner,
                      num_params: int) -> torch.Tensor:
    """``columns`` [..., Σ sizes] holds one block per (name, size) of ``layout``, in that order (columns of
    adapted weights); returns [..., num_params] with each block at its meta-parameter's position and 0 for
    meta-parameters not in ``layout`` (Meta-SGD's rates). Blocks of weights that are not meta-parameters
    (CAVIA's context) are dropped. When the layout is the meta-parameters themselves (MAML): ``columns``."""
    if [name for name, _ in layout] == learner.names:
        return columns
    starts, begin = {}, 0
    for name, size in layout:
        starts[name], begin = begin, begin + size
    placed = columns.new_zeros(*columns.shape[:-1], num_params)
    offset = 0
    for name, shape in zip(learner.names, learner.shapes):
        size = shape.numel()
        if name in starts:
            placed[..., offset:offset + size] = columns[..., starts[name]:starts[name] + size]
        offset += size
    return placed


def per_point_gauss_newton(learner, fast: dict[str, torch.Tensor], query_x: torch.Tensor, num_params: int,
                           form: str) -> torch.Tensor:
    """The Gauss–Newton curvature at the adapted weights ``fast`` without a Jacobian. With H_p = s A_p A_pᵀ
    (``output_hessian_factor``), Σ_p J_pᵀ H_p J_p = s Σ_p Σ_j (A_pᵀ J_p)_jᵀ (A_pᵀ J_p)_j, and the rows
    (A_pᵀ J_p)_j of all tasks and points come from one ordinary backward per output column j: every task's
    weights are copied once per query point (k·n copies, copy (i, p) sees point p of task i only, through
    the learner's own batched ``predict``). c backward passes instead of one vmapped over n·c probes.
    The diagonal of the MLP of models/mlp.py is summed in closed form (no per-point copies). Needs
    ``points_independent``. Columns of meta-parameters outside ``fast`` (Meta-SGD's rates) are 0; fast
    weights that are not meta-parameters (CAVIA's context) get none."""
    k = query_x.shape[0]
    names, shapes = learner.names, learner.shapes
    wanted = [name for name in names if name in fast]
    if form == "diagonal":
        closed_form = _mlp_diagonal_blocks(learner, fast, query_x)
        blocks, scale = closed_form if closed_form is not None else _replicated_rows(
            learner, fast, query_x, wanted, form)
        parts = [blocks[name] if name in blocks else query_x.new_zeros(k, shape.numel())
                 for name, shape in zip(names, shapes)]
        return scale * torch.cat(parts, dim=1)
    rows, scale = _replicated_rows(learner, fast, query_x, wanted, form)  # [k, n·c, Σ wanted sizes]
    layout = [(name, shape.numel()) for name, shape in zip(names, shapes) if name in fast]
    rows = at_meta_positions(rows, layout, learner, num_params)
    return scale * rows.transpose(1, 2) @ rows


def evaluate_learner(learner, batch, flat: torch.Tensor, curvature: str = "diagonal",
                     through: str = "adapted", known: tuple[torch.Tensor, torch.Tensor] | None = None,
                     defer_grads: bool = False) -> StageEval:
    """Query losses and per-task meta-gradients (as the learner's ``meta_gradients`` computes them, but
    at the meta-parameters ``flat``); the Gauss–Newton curvature (``curvature``: diagonal | full) is
    computed on first use. ``through``: ``adapted`` differentiates the query outputs w.r.t. the adapted
    weights (∂φ/∂x = I, as with first-order MAML in the authors' code; one extra forward of the query
    sets, no new adaptation); ``meta`` differentiates them through the adaptation (the Gauss–Newton
    matrix of the meta-loss itself; re-runs the adaptation when the curvature is needed).
    ``known``: the (losses, grads) at ``flat`` are already known (the training loop's own evaluation):
    nothing is evaluated until the curvature is asked for, which then re-runs the adaptation without a
    meta-graph (``ilqr`` never asks for stage 1's). ``defer_grads``: keep the meta-graph and run its
    backward only when the meta-gradients are asked for (the last stage of a rollout)."""
    from ..learners.maml import MAML

    k = batch.num_tasks
    plain = type(learner).query_outputs is MAML.query_outputs
    fast = None  # the adapted weights (plain learners), detached
    grads_fn = None
    if known is not None:
        losses, grads = known[0], known[1].detach()
    else:
        with torch.enable_grad():
            copies = learner.per_task_copies(learner.unflatten(flat), k)
            create_graph = not learner.first_order
            if plain:
                adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=create_graph)
                outputs = learner.predict(adapted, batch.query_x)
                fast = {name: p.detach() for name, p in adapted.items()}
            else:
                outputs = learner.query_outputs(copies, batch, create_graph=create_graph)
            losses = learner.loss_per_task(outputs, batch.query_y)
            total, leaves = losses.sum(), list(copies.values())

        def grads_fn():
            grads = torch.autograd.grad(total, leaves, allow_unused=True, materialize_grads=True)
            return torch.cat([g.reshape(k, -1) for g in grads], dim=1).detach()
        grads = None if defer_grads else grads_fn()
        if not defer_grads:
            grads_fn = None  # (frees the meta-graph)

    def adapted_weights():
        if fast is not None:
            return fast
        with torch.enable_grad():
            copies = learner.per_task_copies(learner.unflatten(flat), k)
            adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=False)
        return {name: p.detach() for name, p in adapted.items()}

    if through == "adapted" and plain and points_independent(learner.model):
        def curvature_fn():
            return per_point_gauss_newton(learner, adapted_weights(), batch.query_x, flat.shape[0], curvature)
    elif through == "adapted" and plain:
        def curvature_fn():
            weights = adapted_weights()
            with torch.enable_grad():
                leaves = {name: p.clone().requires_grad_() for name, p in weights.items()}
                out = learner.predict(leaves, batch.query_x)
                jac_fast = _output_jacobian(out, list(leaves.values()), retain=False)
            layout = [(name, p[0].numel()) for name, p in weights.items()]
            jac = at_meta_positions(jac_fast, layout, learner, flat.shape[0])
            return gauss_newton(learner.loss, out.detach(), jac, curvature)
    else:
        def curvature_fn():
            with torch.enable_grad():
                copies = learner.per_task_copies(learner.unflatten(flat), k)
                out = learner.query_outputs(copies, batch, create_graph=not learner.first_order)
                jac = _output_jacobian(out, list(copies.values()), retain=False)
            return gauss_newton(learner.loss, out.detach(), jac, curvature)
    return StageEval(losses.detach(), grads, curvature_fn=curvature_fn, grads_fn=grads_fn)


class TOW(Weighting):
    name = "tow"

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, horizon: int = 5, iterations: int = 2,
                 prior_precision: float = 10.0, prior_mean: float | None = None, value: str = "diagonal",
                 curvature: str = "diagonal", dynamics: str = "adam", theta: str = "inverse",
                 line_search: str = "paper", min_step: float = 2.0 ** -10, final_pass: str = "simulated",
                 gauss_newton: str = "adapted"):
        super().__init__(num_params, feature_dim, seed)
        for field, val, allowed in (("value", value, ("diagonal", "full")),
                                    ("curvature", curvature, ("diagonal", "full")),
                                    ("dynamics", dynamics, ("adam", "sgd")),
                                    ("theta", theta, ("inverse", "printed")),
                                    ("line_search", line_search, ("paper", "none")),
                                    ("final_pass", final_pass, ("simulated", "live")),
                                    ("gauss_newton", gauss_newton, ("adapted", "meta"))):
            if val not in allowed:
                raise ValueError(f"weighting.{field}: expected one of {list(allowed)}, got {val!r}")
        for field, val in (("horizon", horizon), ("iterations", iterations)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"weighting.{field}: expected an integer >= 1, got {val!r}")
        if prior_mean is not None and (isinstance(prior_mean, bool) or not isinstance(prior_mean, (int, float))):
            raise ValueError(f"weighting.prior_mean: expected a number or null (1/M), got {prior_mean!r}")
        if not prior_precision > 0:
            raise ValueError(f"weighting.prior_precision: must be > 0, got {prior_precision!r}")
        if not 0 < min_step <= 1:
            raise ValueError(f"weighting.min_step: must be in (0, 1], got {min_step!r}")
        if (value == "full" or curvature == "full") and num_params > MAX_FULL_PARAMS:
            field = "value" if value == "full" else "curvature"
            raise ValueError(f"weighting.{field}: 'full' keeps D×D matrices per stage; D = {num_params} exceeds "
                             f"{MAX_FULL_PARAMS} (use 'diagonal')")
        self.horizon, self.iterations = horizon, iterations
        self.prior_precision, self.prior_mean = prior_precision, prior_mean
        self.value, self.curvature, self.dynamics = value, curvature, dynamics
        self.theta, self.line_search, self.min_step, self.final_pass = theta, line_search, min_step, final_pass
        self.gauss_newton = gauss_newton
        self.plan: dict | None = None  # the current window: start iteration, weights or gains

    # -- planning ----------------------------------------------------------------------------------
    def outer_dynamics(self, optimizer, x: torch.Tensor):
        if optimizer is None:
            raise ValueError("weighting tow: the training loop must pass the outer optimiser (TaskGradients.optimizer)")
        group = optimizer.param_groups[0]
        if self.dynamics == "sgd":
            if not isinstance(optimizer, torch.optim.SGD) or group.get("momentum", 0):
                raise ValueError("weighting.dynamics: 'sgd' plans plain SGD steps but the outer optimiser is "
                                 f"{type(optimizer).__name__}; use dynamics: adam")
            return SGDDynamics(group["lr"]), None
        if not isinstance(optimizer, torch.optim.Adam) or group.get("weight_decay", 0) or group.get("amsgrad"):
            raise ValueError(f"weighting.dynamics: 'adam' needs a plain torch Adam outer optimiser, got {optimizer!r}")
        dyn = AdamDynamics(group["lr"], group["betas"], group["eps"])
        params = [p for g in optimizer.param_groups for p in g["params"]]
        states = [optimizer.state.get(p, {}) for p in params]
        if not states[0]:
            return dyn, dyn.initial_state(x)
        m = torch.cat([s["exp_avg"].reshape(-1) for s in states]).to(x.dtype)
        v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states]).to(x.dtype)
        return dyn, (m, v, int(states[0]["step"]))

    def make_plan(self, tasks: TaskGradients) -> None:
        if tasks.upcoming is None or tasks.learner is None:
            raise ValueError("weighting tow needs the upcoming meta-batches and the learner "
                             "(TaskGradients.upcoming / .learner); run it through taskbal.train")
        from ..learners.maml import MAML

        learner = tasks.learner
        if not isinstance(learner, MAML) or type(learner).meta_gradients_of_chunk is not MAML.meta_gradients_of_chunk:
            raise ValueError(f"weighting tow: learner {type(learner).__name__} does not descend the gradient of its "
                             "query losses (TOW's dynamics); use maml, metasgd, cavia or protonet")
        if learner.couples_tasks or learner.task_chunk:
            raise ValueError("weighting tow: learners with a coupling penalty or task_chunk are not supported")
        batches = tasks.upcoming(self.horizon)
        curvature = self.curvature
        x1 = tasks.params
        dynamics, state1 = self.outer_dynamics(tasks.optimizer, x1)
        problem = MetaProblem(lambda t, x: evaluate_learner(learner, batches[t], x, curvature, self.gauss_newton),
                              len(batches), tasks.num_tasks, dynamics, self.prior_precision, self.prior_mean,
                              evaluate_final=lambda t, x: evaluate_learner(learner, batches[t], x, curvature,
                                                                           self.gauss_newton, defer_grads=True))
        problem.bind(x1)
        # the loop has evaluated batch 1 at x_1 already: reuse its losses and meta-gradients
        first = evaluate_learner(learner, batches[0], x1, curvature, self.gauss_newton,
                                 known=(tasks.losses, tasks.grads))
        trajectory, log, last = ilqr(problem, x1, state1, self.iterations, self.value, self.theta,
                                     self.line_search, self.min_step,
                                     last_backward_only=self.final_pass == "live", first_eval=first)
        self.plan = {"start": tasks.iteration, "length": len(batches), "us": torch.stack(trajectory.us),
                     "xs": torch.stack(trajectory.xs), "log": log}
        if last is not None:
            self.plan["gains"], self.plan["offsets"] = torch.stack(last[0]), torch.stack(last[1])

    def combine(self, tasks: TaskGradients) -> Combined:
        plan = self.plan
        if plan is None or not plan["start"] <= tasks.iteration < plan["start"] + plan["length"]:
            self.make_plan(tasks)
            plan = self.plan
        j = tasks.iteration - plan["start"]
        u = plan["us"][j].to(tasks.grads.dtype)
        if "gains" in plan:  # live final pass: the loop's x_t is the forward pass's state
            u = (u + plan["gains"][j] @ (tasks.params - plan["xs"][j]) + plan["offsets"][j]).clamp_min(0)
        stats = {"tow_weight_sum": u.sum().item(), "tow_weight_min": u.min().item(),
                 "tow_weight_max": u.max().item()}
        stats.update({f"tow_{key}": float(val) for key, val in plan["log"].items()})  # the window's planning
        return Combined(direction=u @ tasks.grads, weights=u, stats=stats)

    def state_dict(self) -> dict:
        return {"plan": self.plan}

    def load_state_dict(self, state: dict) -> None:
        self.plan = state.get("plan")
