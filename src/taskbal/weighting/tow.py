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
  whether F_x and C_xx were also full, notes §7.21). Both ``full`` options cost O(D²) memory.
The Gauss–Newton matrix of task i is J_oᵀ H_o J_o with J_o the Jacobian of the query outputs and H_o
the Hessian of the loss w.r.t. the outputs (MSE: 2/(n·out) I; cross-entropy: (diag p − ppᵀ)/n per
query point). ``gauss_newton: adapted`` (default; the authors' code, which is first-order MAML) takes
J_o w.r.t. the adapted weights (∂φ/∂x = I); ``meta`` takes it through the adaptation (with
second-order MAML: the Gauss–Newton matrix of the meta-loss itself; costs a second adaptation).
The meta-gradients are always the learner's own (second-order unless ``learner.first_order``).

Choices where the paper is ambiguous (notes/004_tow.md §7), the consequential ones as options:
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

Cost per outer step (benchmarks/bench_tow.py; sinusoid MAML, meta-batch 16, T = 5, one CPU thread):
the paper's defaults take about 6× plain MAML (the paper: 5.6–9.5×, Table 2), mostly rejected
line-search rollouts; ``final_pass: live`` with ``iterations: 1`` about 2.1× (second-order MAML) and
2.6× (first-order). Any variant needs at least two meta-gradient evaluations per step (the nominal
rollout and the step itself) plus the Gauss–Newton curvature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .base import Combined, TaskGradients, Weighting

Evaluate = Callable[[int, torch.Tensor], "StageEval"]
MAX_FULL_PARAMS = 30_000  # D×D float32 matrices of this size take 3.6 GB each


class StageEval:
    """Meta-batch t evaluated at x: query losses [M], meta-gradients [M, D] and the Gauss–Newton
    curvature ([M, D] diagonals or [M, D, D] matrices), the latter computed on first use
    (``curvature_fn``): only the trajectories that get linearised need it."""

    def __init__(self, losses: torch.Tensor, grads: torch.Tensor, curvature: torch.Tensor | None = None,
                 curvature_fn: Callable[[], torch.Tensor] | None = None):
        self.losses, self.grads = losses, grads
        self._curvature, self._curvature_fn = curvature, curvature_fn

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
    F_x and C_xx are [D] (diagonal) or [D, D]."""

    F_x: torch.Tensor
    F_u: torch.Tensor  # [D, M]
    c_x: torch.Tensor  # [D]
    c_u: torch.Tensor  # [M]
    C_xx: torch.Tensor
    C_uu: torch.Tensor  # [M, M]


def _full(a: torch.Tensor) -> torch.Tensor:
    return torch.diag(a) if a.dim() == 1 else a


def ilqr_backward(stages: list[Linearisation], value: str = "diagonal", theta: str = "inverse"):
    """Algorithm 2: feedback gains K_t [M, D], feed-forward k_t [M] for t = 1..T, and θ₁ (the predicted
    first-order change of the total cost along ε). ``value``: ``diagonal`` keeps V_t's diagonal only."""
    gains, offsets = [None] * len(stages), [None] * len(stages)
    first = stages[0]
    D = first.F_u.shape[0]
    v = torch.zeros(D, dtype=first.F_u.dtype, device=first.F_u.device)
    V = torch.zeros_like(v) if value == "diagonal" else torch.zeros(D, D, dtype=v.dtype, device=v.device)
    theta_1 = 0.0
    for t in range(len(stages) - 1, -1, -1):
        s = stages[t]
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
        else:
            F_x, C_xx = _full(s.F_x), _full(s.C_xx)
            VFu = V @ s.F_u
            Q_xu = F_x.T @ VFu
            Q_uu = s.C_uu + s.F_u.T @ VFu
            q_x = s.c_x + F_x.T @ v
            Q_xx = C_xx + F_x.T @ V @ F_x
        Q_uu = 0.5 * (Q_uu + Q_uu.T)
        q_u = s.c_u + s.F_u.T @ v
        solved = torch.linalg.solve(Q_uu, torch.cat([Q_xu.T, q_u[:, None]], dim=1))
        K, k = -solved[:, :-1], -solved[:, -1]
        gains[t], offsets[t] = K, k
        if value == "diagonal":
            V = Q_xx_diag + (Q_xu * K.T).sum(1)
        else:
            V = Q_xx + Q_xu @ K
            V = 0.5 * (V + V.T)
        v = q_x + Q_xu @ k
        theta_1 += float(q_u @ k) if theta == "inverse" else -float(q_u @ Q_uu @ q_u)
    return gains, offsets, theta_1


@dataclass
class Trajectory:
    xs: list[torch.Tensor]  # x_1..x_{T+1}
    states: list  # optimiser state before each step (T+1 entries)
    us: list[torch.Tensor]  # u_1..u_T
    evals: list[StageEval]  # stage t evaluated at x_t
    cost: float


class Problem:
    """What iLQR needs from a control problem: the stage evaluations, the step, the cost, the expansion."""

    horizon: int

    def stage(self, t: int, x: torch.Tensor):
        raise NotImplementedError

    def step(self, x, state, ev: StageEval, u):
        raise NotImplementedError

    def cost(self, ev: StageEval, u: torch.Tensor) -> float:
        raise NotImplementedError

    def linearise(self, x, state, ev: StageEval, u) -> Linearisation:
        raise NotImplementedError


def rollout(problem: Problem, x1, state1, nominal: Trajectory | None, gains=None, offsets=None, eps=1.0,
            first_eval=None) -> Trajectory | None:
    """Run the true dynamics under u_t = û_t + K_t(x_t − x̂_t) + ε k_t (``nominal`` None: the nominal
    actions). Returns None as soon as a weight is negative when ``problem.nonnegative`` (the paper's
    acceptance test would reject the trial anyway: the remaining stages are not evaluated)."""
    xs, states, us, evals, cost = [x1], [state1], [], [], 0.0
    x, state = x1, state1
    for t in range(problem.horizon):
        u = problem.nominal_action(t) if nominal is None else nominal.us[t]
        if gains is not None:
            u = u + gains[t] @ (x - nominal.xs[t]) + eps * offsets[t]
            if getattr(problem, "nonnegative", False) and bool((u < 0).any()):
                return None
        ev = first_eval if (t == 0 and first_eval is not None) else problem.stage(t, x)
        cost += problem.cost(ev, u)
        x, state = problem.step(x, state, ev, u)
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
        stages = [problem.linearise(nominal.xs[t], nominal.states[t], nominal.evals[t], nominal.us[t])
                  for t in range(problem.horizon)]
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
            eps *= 0.5
        if accepted is None:  # keep the nominal trajectory (uniform weights on the first iteration);
            log["line_search_failures"] += 1  # a further iteration would repeat this one exactly
            break
        nominal = accepted
    log["cost"] = nominal.cost
    return nominal, log, last


# -- TOW on meta-batches ------------------------------------------------------------------------
class MetaProblem(Problem):
    """The control problem of Eqs. 6–7 on T meta-batches given by ``evaluate(t, x) -> StageEval``."""

    nonnegative = False  # set by ``ilqr``: the paper's line search rejects negative weights

    def __init__(self, evaluate: Evaluate, horizon: int, num_tasks: int, dynamics, prior_precision: float,
                 prior_mean: float | None):
        self.evaluate, self.horizon, self.M = evaluate, horizon, num_tasks
        self.dynamics, self.beta = dynamics, prior_precision
        self.mu = 1.0 / num_tasks if prior_mean is None else prior_mean

    def nominal_action(self, t: int) -> torch.Tensor:
        return torch.full((self.M,), 1.0 / self.M, dtype=self._dtype, device=self._device)

    def bind(self, x: torch.Tensor) -> None:
        self._dtype, self._device = x.dtype, x.device

    def stage(self, t, x):
        return self.evaluate(t, x)

    def step(self, x, state, ev, u):
        return self.dynamics.step(x, state, u @ ev.grads)

    def cost(self, ev, u):
        return float(ev.losses.sum() + 0.5 * self.beta * (u - self.mu).pow(2).sum())

    def linearise(self, x, state, ev, u):
        g = u @ ev.grads
        s = self.dynamics.scale(state, g)
        curv = ev.curvature
        if curv.dim() == 2:  # diagonals [M, D]
            H_w, C_xx = u @ curv, curv.sum(0)
            F_x = 1 - s * H_w
        else:  # matrices [M, D, D]
            H_w, C_xx = torch.einsum("m,mde->de", u, curv), curv.sum(0)
            F_x = torch.eye(x.shape[0], dtype=x.dtype, device=x.device) - s[:, None] * H_w
        return Linearisation(F_x=F_x, F_u=-s[:, None] * ev.grads.T, c_x=ev.grads.sum(0),
                             c_u=self.beta * (u - self.mu), C_xx=C_xx,
                             C_uu=self.beta * torch.eye(self.M, dtype=x.dtype, device=x.device))


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


def evaluate_learner(learner, batch, flat: torch.Tensor, curvature: str = "diagonal",
                     through: str = "adapted", known: tuple[torch.Tensor, torch.Tensor] | None = None) -> StageEval:
    """Query losses and per-task meta-gradients (as the learner's ``meta_gradients`` computes them, but
    at the meta-parameters ``flat``); the Gauss–Newton curvature (``curvature``: diagonal | full) is
    computed on first use. ``through``: ``adapted`` differentiates the query outputs w.r.t. the adapted
    weights (∂φ/∂x = I, as with first-order MAML in the authors' code; one extra forward of the query
    sets, no new adaptation); ``meta`` differentiates them through the adaptation (the Gauss–Newton
    matrix of the meta-loss itself; re-runs the adaptation when the curvature is needed).
    ``known``: the (losses, grads) at ``flat`` are already known (the training loop's own evaluation):
    only the adapted weights are recomputed, without a meta-graph."""
    from ..learners.maml import MAML

    k = batch.num_tasks
    plain = type(learner).query_outputs is MAML.query_outputs
    if known is not None and not (through == "adapted" and plain):
        losses, grads = known
    else:
        with torch.enable_grad():
            copies = learner.per_task_copies(learner.unflatten(flat), k)
            create_graph = not learner.first_order and known is None
            if plain:
                adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=create_graph)
            if known is not None:
                losses, grads = known
            else:
                outputs = (learner.predict(adapted, batch.query_x) if plain
                           else learner.query_outputs(copies, batch, create_graph=create_graph))
                losses = learner.loss_per_task(outputs, batch.query_y)
                grads = torch.autograd.grad(losses.sum(), list(copies.values()), allow_unused=True,
                                            materialize_grads=True)
                grads = torch.cat([g.reshape(k, -1) for g in grads], dim=1)

    if through == "adapted" and plain:
        fast = {name: p.detach() for name, p in adapted.items()}

        def curvature_fn():
            with torch.enable_grad():
                leaves = {name: p.clone().requires_grad_() for name, p in fast.items()}
                out = learner.predict(leaves, batch.query_x)
                jac_fast = _output_jacobian(out, list(leaves.values()), retain=False)
            if list(fast) == learner.names:  # MAML: the adapted weights are the meta-parameters
                jac = jac_fast
            else:  # their columns at their meta-parameters' positions, 0 for the others
                jac = torch.zeros(*jac_fast.shape[:3], flat.shape[0], dtype=flat.dtype, device=flat.device)
                starts, begin = {}, 0
                for name, p in fast.items():
                    starts[name], begin = begin, begin + p[0].numel()
                offset = 0
                for name, shape in zip(learner.names, learner.shapes):
                    size = shape.numel()
                    if name in starts:
                        jac[..., offset:offset + size] = jac_fast[..., starts[name]:starts[name] + size]
                    offset += size
            return gauss_newton(learner.loss, out.detach(), jac, curvature)
    else:
        def curvature_fn():
            with torch.enable_grad():
                copies = learner.per_task_copies(learner.unflatten(flat), k)
                out = learner.query_outputs(copies, batch, create_graph=not learner.first_order)
                jac = _output_jacobian(out, list(copies.values()), retain=False)
            return gauss_newton(learner.loss, out.detach(), jac, curvature)
    return StageEval(losses.detach(), grads.detach(), curvature_fn=curvature_fn)


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
                              len(batches), tasks.num_tasks, dynamics, self.prior_precision, self.prior_mean)
        problem.bind(x1)
        # the loop has evaluated batch 1 at x_1 already: reuse its losses and meta-gradients
        first = evaluate_learner(learner, batches[0], x1, curvature, self.gauss_newton,
                                 known=(tasks.losses, tasks.grads))
        trajectory, log, last = ilqr(problem, x1, state1, self.iterations, self.value, self.theta,
                                     self.line_search, self.min_step,
                                     last_backward_only=self.final_pass == "live", first_eval=first)
        self.plan = {"start": tasks.iteration, "length": len(batches), "us": torch.stack(trajectory.us),
                     "xs": torch.stack(trajectory.xs[:-1]), "log": log}
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
