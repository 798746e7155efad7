"""MOML (thesis Alg. 1): hypergradients against finite differences, the MGDA combination against
cvxpy's min-norm QP, MoCo's update against its formula, and convergence on the synthetic problem."""
from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from taskbal.data.moblo_synthetic import SyntheticMOBLO
from taskbal.mtl.bilevel import MOBLOProblem, implicit_hypergradients, lower_descent, unrolled_hypergradients
from taskbal.mtl.moco import MoCo, project_to_simplex
from taskbal.mtl.moml import MOML
from taskbal.weighting.base import TaskGradients

F64 = torch.float64


class TinyBilevel(MOBLOProblem):
    """A strongly convex, non-quadratic LL and three non-linear UL objectives (n = 3, p = 4)."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.num_objectives = 3
        self.objective_names = ("a", "b", "c")
        self.coupling = torch.randn(4, 3, generator=g, dtype=F64)
        noise = torch.randn(4, 4, generator=g, dtype=F64)
        self.curvature = torch.eye(4, dtype=F64) + 0.05 * noise @ noise.T
        self.readouts = torch.randn(3, 4, generator=g, dtype=F64)
        self.targets = torch.randn(3, generator=g, dtype=F64)

    def lower_objective(self, alpha, omega, batch=None):
        centred = omega - torch.tanh(self.coupling @ alpha)
        return 0.5 * centred @ self.curvature @ centred + 0.1 * torch.sum(torch.log(torch.cosh(omega)))

    def upper_objectives(self, alpha, omega, batch=None):
        return (self.readouts @ omega - self.targets) ** 2 + 0.3 * torch.sin(alpha) * alpha.sum()


def finite_difference(function, alpha: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """Central differences of a vector function of α: [m, n]."""
    columns = []
    for j in range(alpha.numel()):
        shift = torch.zeros_like(alpha)
        shift[j] = step
        columns.append((function(alpha + shift) - function(alpha - shift)) / (2 * step))
    return torch.stack(columns, 1)


@pytest.fixture
def tiny():
    return TinyBilevel(), torch.tensor([0.3, -0.5, 0.8], dtype=F64), torch.tensor([0.1, 0.2, -0.3, 0.4], dtype=F64)


def test_unrolled_hypergradients_match_finite_differences_of_the_unrolled_map(tiny):
    problem, alpha, omega0 = tiny
    steps, lr = 7, 0.3

    def objectives_after_steps(a):
        return problem.upper_objectives(a, lower_descent(problem, a, omega0, None, steps, lr, differentiable=False))

    values, grads, omega_T = unrolled_hypergradients(problem, alpha, omega0, None, None, steps, lr)
    reference = finite_difference(objectives_after_steps, alpha)
    torch.testing.assert_close(grads, reference, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(values, objectives_after_steps(alpha))


def lower_minimiser(problem, alpha, omega0):
    """ω*(α) by Newton's method on the strongly convex LL (independent of the gradient-descent code)."""
    omega = omega0.clone()
    for _ in range(50):
        hessian = torch.autograd.functional.hessian(lambda w: problem.lower_objective(alpha, w), omega)
        gradient = torch.autograd.functional.jacobian(lambda w: problem.lower_objective(alpha, w), omega)
        omega = omega - torch.linalg.solve(hessian, gradient)
    return omega


def test_implicit_hypergradients_match_finite_differences_of_the_lower_minimiser(tiny):
    problem, alpha, omega0 = tiny
    omega_star = lower_minimiser(problem, alpha, omega0)
    values, grads = implicit_hypergradients(problem, alpha, omega_star, None, None, cg_steps=20)
    reference = finite_difference(lambda a: problem.upper_objectives(a, lower_minimiser(problem, a, omega_star)), alpha)
    torch.testing.assert_close(grads, reference, rtol=1e-6, atol=1e-8)


def test_unrolled_hypergradients_approach_the_implicit_ones_as_T_grows(tiny):
    """Thm 3.3: the ITD error decays exponentially in T."""
    problem, alpha, omega0 = tiny
    omega_star = lower_minimiser(problem, alpha, omega0)
    _, exact = implicit_hypergradients(problem, alpha, omega_star, None, None, cg_steps=20)
    errors = [float((unrolled_hypergradients(problem, alpha, omega0, None, None, t, 0.3)[1] - exact).norm())
              for t in (5, 20, 80)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8 * max(1.0, float(exact.norm()))


def test_moml_step_descends_along_the_min_norm_point_of_the_hypergradients(tiny):
    """The direction MOML steps along is the min-norm QP solution (cvxpy) over the FD hypergradients."""
    problem, alpha, omega0 = tiny
    steps, lr, alpha_lr = 6, 0.3, 0.05
    moml = MOML(problem, alpha, omega0, 0, lower_steps=steps, lower_lr=lr, alpha_lr=alpha_lr, combiner="mgda")
    stats = moml.step(0)
    hyper = finite_difference(
        lambda a: problem.upper_objectives(a, lower_descent(problem, a, omega0, None, steps, lr, differentiable=False)),
        alpha).numpy()
    gamma = cp.Variable(3)
    cp.Problem(cp.Minimize(cp.sum_squares(hyper.T @ gamma)), [gamma >= 0, cp.sum(gamma) == 1]).solve(solver=cp.CLARABEL)
    direction = hyper.T @ gamma.value
    np.testing.assert_allclose((alpha - moml.alpha.detach()).numpy() / alpha_lr, direction, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([stats["weight_a"], stats["weight_b"], stats["weight_c"]], gamma.value, atol=1e-5)


def test_moml_equal_weighting_combiner_descends_along_the_mean_hypergradient(tiny):
    problem, alpha, omega0 = tiny
    moml = MOML(problem, alpha, omega0, 0, lower_steps=4, lower_lr=0.3, alpha_lr=0.1, combiner="mean")
    _, grads, _ = unrolled_hypergradients(problem, alpha, omega0, None, None, 4, 0.3)
    moml.step(0)
    torch.testing.assert_close(moml.alpha.detach(), alpha - 0.1 * grads.mean(0))


@pytest.mark.parametrize("lower_init", ["warm", "fixed"])
def test_moml_reaches_the_solution_set_of_the_synthetic_problem(lower_init):
    """MOML stops with α in [1, 2]. Gradient descent on ‖ω − (α, α)‖² with η = 0.05 contracts by
    0.9 per step, so ω_T = α + 0.9^T (ω_start − α): with warm starts ω_T → (α, α) and E → 0; restarting
    from ω0 every iteration leaves 0.9^50 (ω0 − α) in ω (E near 1e-2, the flat MOML curves of Fig. A.1)."""
    problem = SyntheticMOBLO(np.array([1.0, 2.0]))
    omega0 = torch.tensor([0.0, 3.0], dtype=F64)
    moml = MOML(problem, torch.tensor([0.0], dtype=F64), omega0, 0, lower_steps=50, lower_lr=0.05,
                alpha_lr=0.3, lower_init=lower_init)
    for k in range(60):
        moml.step(k)
    alpha, omega = moml.point()
    assert 1.0 - 1e-6 <= float(alpha[0]) <= 2.0 + 1e-6
    if lower_init == "warm":
        torch.testing.assert_close(omega, alpha.repeat(2), rtol=0, atol=1e-12)
        assert problem.distance(alpha, omega) < 1e-10
    else:
        torch.testing.assert_close(omega, alpha + 0.9**50 * (omega0 - alpha), rtol=0, atol=1e-12)
        assert problem.distance(alpha, omega) > 1e-3


def test_moml_resumes_exactly_from_its_state():
    problem = SyntheticMOBLO(np.array([1.0, 2.0]))
    start = (torch.tensor([0.0], dtype=F64), torch.tensor([0.0, 3.0], dtype=F64))
    whole = MOML(problem, *start, 0, lower_steps=5, lower_lr=0.05, alpha_lr=0.3, combiner="moco")
    for k in range(8):
        whole.step(k)
    first = MOML(problem, *start, 0, lower_steps=5, lower_lr=0.05, alpha_lr=0.3, combiner="moco")
    for k in range(3):
        first.step(k)
    resumed = MOML(problem, *start, 0, lower_steps=5, lower_lr=0.05, alpha_lr=0.3, combiner="moco")
    resumed.load_state_dict(first.state_dict())
    for k in range(3, 8):
        resumed.step(k)
    assert torch.equal(whole.alpha, resumed.alpha) and torch.equal(whole.omega, resumed.omega)


def test_moml_rejects_bad_options(tiny):
    problem, alpha, omega0 = tiny
    with pytest.raises(ValueError, match="weighting.lower_lr"):
        MOML(problem, alpha, omega0, 0, lower_lr=-1.0)
    with pytest.raises(ValueError, match="weighting.combiner"):
        MOML(problem, alpha, omega0, 0, combiner="nope")
    with pytest.raises(ValueError, match="weighting.combiner_options.c"):
        MOML(problem, alpha, omega0, 0, combiner="mgda", combiner_options={"c": 1})


def moco_reference(grads_seq, losses_seq, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0, softmax=True):
    """MoCo's update written out in numpy from the formula (Fernando et al. 2023 / LibMTL)."""
    k, d = grads_seq[0].shape
    y, lam, direction = np.zeros((k, d)), np.full(k, 1.0 / k), None
    for step, (g, loss) in enumerate(zip(grads_seq, losses_seq), start=1):
        g = g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-8) * loss[:, None]
        y = y - beta / step**beta_sigma * (y - g)
        moved = lam - gamma / step**gamma_sigma * (y @ y.T + rho * np.eye(k)) @ lam
        if softmax:
            lam = np.exp(moved - moved.max()) / np.exp(moved - moved.max()).sum()
        else:
            v = cp.Variable(k)
            cp.Problem(cp.Minimize(cp.sum_squares(v - moved)), [v >= 0, cp.sum(v) == 1]).solve(solver=cp.CLARABEL)
            lam = v.value
        direction = lam @ y
    return direction, lam


@pytest.mark.parametrize("update", ["softmax", "projection"])
def test_moco_matches_its_formula(update):
    rng = np.random.default_rng(3)
    grads_seq = [rng.normal(size=(3, 5)) for _ in range(4)]
    losses_seq = [rng.uniform(0.5, 2.0, size=3) for _ in range(4)]
    moco = MoCo(5, 3, 0, gamma=0.7, rho=0.1, lambda_update=update)
    for i, (g, loss) in enumerate(zip(grads_seq, losses_seq)):
        combined = moco.combine(TaskGradients(losses=torch.as_tensor(loss), grads=torch.as_tensor(g),
                                              features=torch.eye(3), params=torch.zeros(5), iteration=i,
                                              generator=torch.Generator()))
    direction, lam = moco_reference(grads_seq, losses_seq, gamma=0.7, rho=0.1, softmax=update == "softmax")
    np.testing.assert_allclose(combined.direction.numpy(), direction, atol=1e-6)
    np.testing.assert_allclose(combined.weights.numpy(), lam, atol=1e-6)


def test_simplex_projection_matches_cvxpy():
    rng = np.random.default_rng(5)
    for _ in range(5):
        v = rng.normal(size=6) * 2
        x = cp.Variable(6)
        cp.Problem(cp.Minimize(cp.sum_squares(x - v)), [x >= 0, cp.sum(x) == 1]).solve(solver=cp.CLARABEL)
        np.testing.assert_allclose(project_to_simplex(torch.as_tensor(v)).numpy(), x.value, atol=1e-7)
