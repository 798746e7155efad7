"""FORUM (thesis Alg. 2): the direction QP (3.29) against cvxpy, the direction's feasibility, the
value-function gradient against its closed form, and convergence on the synthetic problem (A.32)."""
from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import torch

from taskbal.data.moblo_synthetic import SyntheticMOBLO
from taskbal.mtl.forum import (
    FORUM,
    combined_gradient,
    nu_of,
    qp_objective,
    qp_terms,
    solve_qp,
    solve_qp_cvxpy,
    solve_qp_exact,
)

F64 = torch.float64


def random_instance(rng, m: int, dim: int, q_scale: float):
    grads = torch.as_tensor(rng.normal(size=(m, dim)))
    grad_q = torch.as_tensor(rng.normal(size=dim)) * q_scale
    return grads, grad_q


def cvxpy_reference(grads: np.ndarray, grad_q: np.ndarray, pi: np.ndarray, phi: float):
    """(3.29) written directly over the gradients (not the Gram matrix), solved by cvxpy."""
    m = grads.shape[0]
    lam, gamma = cp.Variable(m), cp.Variable()
    objective = 0.5 * cp.sum_squares(grads.T @ lam + gamma * grad_q) - gamma * phi
    constraints = [lam >= 0, cp.sum(lam) == 1, gamma >= 0, gamma >= pi @ lam]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return problem.value, lam.value, float(gamma.value)


CASES = [(m, dim, scale) for m in (2, 3, 5) for dim in (3, 40) for scale in (0.05, 1.0, 10.0)]


@pytest.mark.parametrize("m,dim,q_scale", CASES)
def test_exact_qp_solver_matches_cvxpy(m, dim, q_scale):
    rng = np.random.default_rng(100 * m + dim + int(10 * q_scale))
    for _ in range(3):
        grads, grad_q = random_instance(rng, m, dim, q_scale)
        gram, pi, phi = qp_terms(grads, grad_q, rho=float(rng.uniform(0.05, 1.0)))
        exact = solve_qp_exact(gram, pi, phi)
        assert exact is not None
        value, lam, gamma = cvxpy_reference(grads.numpy(), grad_q.numpy(), pi, phi)
        scale = max(1.0, abs(value))
        assert qp_objective(gram, exact, phi) == pytest.approx(value, abs=1e-7 * scale)
        # The optimum is unique in d = −(Σλ∇F + γ∇q̃) (strongly convex primal); compare d.
        d_exact = grads.numpy().T @ exact[:m] + exact[m] * grad_q.numpy()
        d_cvxpy = grads.numpy().T @ lam + gamma * grad_q.numpy()
        np.testing.assert_allclose(d_exact, d_cvxpy, atol=2e-5 * np.sqrt(scale))
        # Feasibility of the exact point.
        assert np.all(exact[:m] >= -1e-9) and exact[:m].sum() == pytest.approx(1.0)
        assert exact[m] >= max(0.0, float(pi @ exact[:m])) - 1e-10


def test_cvxpy_path_of_the_solver_matches_the_exact_path():
    rng = np.random.default_rng(7)
    grads, grad_q = random_instance(rng, 3, 10, 1.0)
    gram, pi, phi = qp_terms(grads, grad_q, rho=0.5)
    exact, used = solve_qp(gram, pi, phi, "auto")
    assert used == "exact"
    np.testing.assert_allclose(solve_qp_cvxpy(gram, pi, phi), exact, atol=1e-5)


@pytest.mark.parametrize("barrier,factor", [("thesis", 2.0), ("dual", 1.0)])
def test_direction_satisfies_the_dynamic_barrier_for_any_weights(barrier, factor):
    """⟨∇q̃, d⟩ <= −φ (3.20) with d = −(Σλ̃∇F + ν(λ̃)∇q̃) for ANY λ̃ on the simplex (so also for the
    momentum average); with the thesis' π (2φ) the decrease is in fact at least 2φ."""
    rng = np.random.default_rng(11)
    for _ in range(50):
        m = int(rng.integers(2, 6))
        grads, grad_q = random_instance(rng, m, 8, float(rng.choice([0.1, 1.0, 5.0])))
        rho = float(rng.uniform(0.05, 1.0))
        gram, pi, phi = qp_terms(grads, grad_q, rho, barrier=barrier, epsilon=0.0)
        lam = rng.dirichlet(np.ones(m))
        d = -combined_gradient(grads, grad_q, lam, nu_of(lam, pi))
        assert float(grad_q @ d) <= -factor * phi + 1e-9 * max(1.0, phi)


def test_dual_barrier_direction_solves_the_direction_problem():
    """With barrier 'dual' the QP is the exact dual of (3.20): d equals cvxpy's primal solution of
    min_d max_i ⟨∇F_i, d⟩ + ½‖d‖²  s.t.  ⟨∇q̃, d⟩ <= −φ."""
    rng = np.random.default_rng(13)
    for m in (2, 3, 4):
        grads, grad_q = random_instance(rng, m, 6, 1.0)
        rho = 0.4
        gram, pi, phi = qp_terms(grads, grad_q, rho, barrier="dual", epsilon=0.0)
        x, _ = solve_qp(gram, pi, phi, "exact")
        d = -combined_gradient(grads, grad_q, x[:m], nu_of(x[:m], pi)).numpy()
        direction, level = cp.Variable(6), cp.Variable()
        problem = cp.Problem(cp.Minimize(level + 0.5 * cp.sum_squares(direction)),
                             [grads.numpy() @ direction <= level, grad_q.numpy() @ direction <= -phi])
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        np.testing.assert_allclose(d, direction.value, atol=1e-6)


def synthetic_forum(alpha0=0.0, omega0=(0.0, 3.0), **options):
    problem = SyntheticMOBLO(np.array([1.0, 2.0]))
    settings = dict(lower_steps=50, lower_lr=0.05, alpha_lr=0.3, omega_lr=0.3, rho=0.3)
    settings.update(options)
    return problem, FORUM(problem, torch.tensor([alpha0], dtype=F64), torch.tensor(omega0, dtype=F64), 0, **settings)


@pytest.mark.parametrize("steps", [5, 20, 80])
def test_value_function_gradient_approaches_the_exact_one(steps):
    """∇q̃ (Alg. 2 line 9) → ∇q with q = ‖ω − (α, α)‖² as the LL steps T grow (Lemma: ‖∇q̃ − ∇q‖ <= L‖ω̃^T − ω*‖)."""
    _, forum = synthetic_forum(alpha0=0.7, omega0=(-1.0, 2.5), lower_steps=steps)
    _, _, q_tilde, grad_q, _ = forum.gradients(0)
    alpha, omega = 0.7, np.array([-1.0, 2.5])
    exact = np.concatenate([[-2.0 * np.sum(omega - alpha)], 2.0 * (omega - alpha)])
    error = np.linalg.norm(grad_q.numpy() - exact)
    # ω̃^T = α + 0.9^T (ω − α), so the only error is ∇_α f(α, ω̃^T) = −2·0.9^T Σ_j (ω_j − α)
    assert error == pytest.approx(2.0 * 0.9**steps * abs(np.sum(omega - alpha)), rel=1e-8)
    assert q_tilde == pytest.approx(np.sum((omega - alpha) ** 2) * (1 - 0.9 ** (2 * steps)), rel=1e-12)


@pytest.mark.parametrize("alpha0,omega0", [(0.0, (0.0, 3.0)), (2.0, (0.0, 3.0)), (2.0, (3.0, 3.0))])
def test_forum_reaches_the_solution_set_of_the_synthetic_problem(alpha0, omega0):
    """Fig. A.1: E → 0, q(z) → 0 and K(z) → 0 from every initialisation of the thesis."""
    problem, forum = synthetic_forum(alpha0, omega0)
    for k in range(250):
        stats = forum.step(k)
    alpha, omega = forum.point()
    assert problem.distance(alpha, omega) < 2e-5
    assert stats["constraint"] < 1e-9 and stats["stationarity"] < 1e-10
    assert stats["barrier_slack"] < 1e-9
    assert forum.cvxpy_fallbacks == 0


def test_momentum_starts_at_the_first_qp_solution_and_follows_the_schedule():
    _, forum = synthetic_forum()
    assert forum.beta(0) == 1.0 and forum.beta(15) == pytest.approx(16 ** -0.75)
    values, grads, _, grad_q, _ = forum.gradients(0)
    gram, pi, phi = qp_terms(grads, grad_q, 0.3)
    lam0 = solve_qp(gram, pi, phi)[0][:2]
    forum.step(0)
    np.testing.assert_allclose(forum.lam_avg, lam0, atol=1e-12)
    _, every = synthetic_forum(beta_every=10)
    assert every.beta(9) == 1.0 and every.beta(10) == pytest.approx(2 ** -0.75)


def test_forum_step_moves_z_along_the_direction_with_the_block_step_sizes():
    _, forum = synthetic_forum(alpha_lr=0.2, omega_lr=0.05)
    values, grads, _, grad_q, _ = forum.gradients(0)
    gram, pi, phi = qp_terms(grads, grad_q, 0.3)
    lam = solve_qp(gram, pi, phi)[0][:2]
    d = -combined_gradient(grads, grad_q, lam, nu_of(lam, pi))
    before = torch.cat([forum.alpha.detach(), forum.omega.detach()])
    forum.step(0)
    after = torch.cat([forum.alpha.detach(), forum.omega.detach()])
    torch.testing.assert_close(after - before, torch.cat([0.2 * d[:1], 0.05 * d[1:]]))


def test_forum_resumes_exactly_from_its_state():
    _, whole = synthetic_forum()
    for k in range(8):
        whole.step(k)
    _, first = synthetic_forum()
    for k in range(3):
        first.step(k)
    _, resumed = synthetic_forum()
    resumed.load_state_dict(first.state_dict())
    for k in range(3, 8):
        resumed.step(k)
    assert torch.equal(whole.alpha, resumed.alpha) and torch.equal(whole.omega, resumed.omega)
    np.testing.assert_array_equal(whole.lam_avg, resumed.lam_avg)


def test_forum_rejects_bad_options():
    with pytest.raises(ValueError, match="weighting.rho"):
        synthetic_forum(rho=0.0)
    with pytest.raises(ValueError, match="weighting.solver"):
        synthetic_forum(solver="quadprog")
    with pytest.raises(ValueError, match="weighting.barrier"):
        synthetic_forum(barrier="half")


def test_synthetic_runner_records_the_figure_quantities_and_evaluates_the_final_point(tmp_path, repo):
    """The moblo_synthetic runner (Fig. A.1): curve rows hold E, q, K; eval.csv holds F_i at z_K."""
    from taskbal.config import load_table, resolve_experiment
    from taskbal.data.moblo_synthetic import write_splits
    from taskbal.mtl.plots import plot_moblo_synthetic
    from taskbal.runners import moblo_synthetic as runner

    spec = load_table(repo / "config/tables/thesis_figure_a1.yaml")
    split = tmp_path / "problem.npz"
    write_splits(split, {"family": "moblo_synthetic"})
    curves = {}
    for row in spec["rows"]:
        exp = resolve_experiment(spec, "tiny", row.get("set"), spec["columns"][0]["set"])
        exp["problem"]["iterations"] = 12
        out = tmp_path / row["label"].replace(" ", "_")
        runner.train(exp, 0, split, out, progress=False)
        summary = runner.evaluate(out / "final.pt", split, out)
        curve = pd.read_csv(out / "curve.csv")
        assert list(curve.iteration) == list(range(13))
        assert {"distance", "constraint", "stationarity", "F1", "F2"} <= set(curve.columns)
        alpha, omega = summary["alpha"], np.array([summary["omega1"], summary["omega2"]])
        frame = pd.read_csv(out / "eval.csv")
        np.testing.assert_allclose(frame.value, [(omega[0] - a) ** 2 + (omega[1] - alpha) ** 2 for a in (1.0, 2.0)])
        z = np.array([alpha, *omega])
        c = np.clip(z.mean(), 1.0, 2.0)
        assert summary["distance"] == pytest.approx(np.linalg.norm(z - c))
        assert summary["constraint"] == pytest.approx(np.sum((omega - alpha) ** 2))
        assert curve.distance.iloc[-1] == pytest.approx(summary["distance"])
        curves[(row["label"], spec["columns"][0]["key"])] = {0: curve}
    png = plot_moblo_synthetic(spec, curves, tmp_path / "figure.png", "tiny")
    assert png.exists() and png.stat().st_size > 10_000
