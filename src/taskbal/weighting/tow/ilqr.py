"""iLQR on a finite-horizon control problem (TOW's Algorithms 1–2, App. E): the Riccati-like backward
pass for the feedback law δu_t = K_t δx_t + k_t, forward rollouts of the true dynamics, and the
backtracking line search on ε. It knows nothing of learners or weightings: a problem is anything
that has what ``Problem`` declares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
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
            VFu = (s.F_u.T @ V).T  # V is symmetric; this order streams V's rows (2x faster for M << D)
            Q_xu = s.F_x[:, None] * VFu
            Q_uu = s.C_uu + s.F_u.T @ VFu
            q_x = s.c_x + s.F_x * v
            # F_xᵀ V F_x in V's own storage: V_{t+1} is not read again, and one D×D matrix is all the pass holds
            # (3.2 GB at Omniglot's D; a new one per stage would also be paged in afresh)
            Q_xx = V.mul_(s.F_x[:, None]).mul_(s.F_x)
            if s.C_xx.dim() == 1:
                Q_xx.diagonal().add_(s.C_xx)
            else:
                Q_xx.add_(s.C_xx)
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
        else:  # Q_xx + Q_xu K in place (Q_xu K = −Q_xu Q_uu⁻¹ Q_ux is symmetric)
            V, Q_xx = Q_xx.addmm_(Q_xu, K), None
        v = q_x + Q_xu @ k
    return gains, offsets, float(theta_1)


@dataclass
class Trajectory:
    xs: list[torch.Tensor]  # x_1..x_T (x_{T+1} is not needed: there is no terminal cost)
    states: list  # optimiser state before each step (T entries)
    us: list[torch.Tensor]  # u_1..u_T
    evals: list  # stage t evaluated at x_t (the problem's stage evaluations)
    cost: float


class Problem(Protocol):
    """What iLQR needs from a finite-horizon control problem. A stage evaluation ``ev`` is whatever the
    problem's ``stage`` returns (the solver only hands it back to the problem); a state x is a tensor,
    ``state`` any auxiliary state of the dynamics (an optimiser's moments), u a tensor of actions.

    ``final_stage`` and ``linearise_start`` have defaults; a problem that subclasses this protocol
    inherits them."""

    horizon: int

    def nominal_action(self, t: int) -> torch.Tensor:
        """û_t, the actions of the first rollout."""
        ...

    def stage(self, t: int, x: torch.Tensor):
        """Stage t evaluated at x (what ``cost``, ``step`` and ``linearise`` read)."""
        ...

    def final_stage(self, t: int, x: torch.Tensor):
        """The last stage of a rollout: no step follows it, so its meta-gradients are only needed if the
        trajectory is expanded again; a problem may defer them."""
        return self.stage(t, x)

    def step(self, x, state, ev, u):
        """(x_{t+1}, state_{t+1}) = f(x_t, u_t)."""
        ...

    def cost(self, ev, u: torch.Tensor) -> float:
        ...

    def linearise(self, x, state, ev, u) -> Linearisation:
        ...

    def linearise_start(self, x, state, ev, u) -> Linearisation:
        """Stage 1's expansion; its state x_1 is given, so a problem may leave F_x and C_xx out."""
        return self.linearise(x, state, ev, u)


def rollout(problem: Problem, x1, state1, nominal: Trajectory | None, gains=None, offsets=None, eps=1.0,
            first_eval=None, nonnegative: bool = False) -> Trajectory | None:
    """Run the true dynamics under u_t = û_t + K_t(x_t − x̂_t) + ε k_t (``nominal`` None: the nominal
    actions). Returns None as soon as an action is negative when ``nonnegative`` (the paper's
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
            if nonnegative and bool((u < 0).any()):
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
        while eps >= min_step:
            trial = rollout(problem, x1, state1, nominal, gains, offsets, eps, first_eval=first,
                            nonnegative=line_search == "paper")
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
