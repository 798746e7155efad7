"""ASMG and its black-box baselines against closed forms, CVXPY and brute force (thesis Ch. 4)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from taskbal.blackbox import OPTIMIZERS, build_optimizer
from taskbal.blackbox.asmg import ASMG, qp_matrix, qp_objective, smoothed_gradients, smoothing_estimates, solve_qp_cvxpy
from taskbal.blackbox.bes import rademacher
from taskbal.blackbox.es import centred_ranks
from taskbal.data import blackbox_moo
from taskbal.runners import blackbox_moo as runner
from taskbal.weighting.mgda import min_norm_weights


def quadratic(rng, d):
    """F(x) = ½ xᵀAx + bᵀx: E_{N(μ,Σ)}[F] = F(μ) + ½ tr(AΣ), so ∇_μ J = Aμ + b and ∂J/∂Σ_kk = ½ A_kk."""
    root = rng.standard_normal((d, d))
    a = root @ root.T / d + np.eye(d)
    b = rng.standard_normal(d)
    return a, b, (lambda x: 0.5 * np.einsum("nd,de,ne->n", x, a, x) + x @ b)


def test_gaussian_smoothing_gradients_match_the_smoothed_quadratic_within_monte_carlo_error():
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    quadratics = [quadratic(rng, d) for _ in range(2)]
    mu = rng.standard_normal(d)
    variance = rng.uniform(0.2, 2.0, d)
    z = rng.standard_normal((n, d))
    x = mu + np.sqrt(variance) * z
    delta = np.stack([f(x) - f(mu[None])[0] for _, _, f in quadratics], axis=1)  # [n, m]
    p_hat, h_hat = smoothing_estimates(z, delta)
    g_hat, big_g_hat = smoothed_gradients(p_hat, h_hat, variance)
    for i, (a, b, _) in enumerate(quadratics):
        # Monte Carlo standard errors of the per-sample terms of Eqs. 4.15 and 4.16.
        g_terms = z / np.sqrt(variance) * delta[:, i:i + 1]
        big_g_terms = (z**2 - 1) / (2 * variance) * delta[:, i:i + 1]
        for estimate, terms, truth in ((g_hat[:, i], g_terms, a @ mu + b),
                                       (big_g_hat[:, i], big_g_terms, 0.5 * np.diag(a))):
            np.testing.assert_allclose(estimate, terms.mean(0))
            standard_error = terms.std(0) / np.sqrt(n)
            assert np.all(np.abs(estimate - truth) < 5 * standard_error), (estimate, truth, standard_error)


def test_isotropic_smoothing_of_a_quadratic_is_unbiased_for_the_plain_gradient():
    """The brief's identity E[f(x + σu)u]/σ = ∇f(x) for quadratic f, u ~ N(0, I), checked through ASMG's p̂."""
    rng = np.random.default_rng(1)
    d, n, sigma = 3, 400_000, 0.7
    a, b, f = quadratic(rng, d)
    x0 = rng.standard_normal(d)
    u = rng.standard_normal((n, d))
    p_hat, _ = smoothing_estimates(u, (f(x0 + sigma * u) - f(x0[None])[0])[:, None])
    terms = u * (f(x0 + sigma * u) - f(x0[None])[0])[:, None] / sigma
    assert np.all(np.abs(p_hat[:, 0] / sigma - (a @ x0 + b)) < 5 * terms.std(0) / np.sqrt(n))


def test_bernoulli_forward_differences_are_unbiased_for_quadratics():
    rng = np.random.default_rng(2)
    d, n, c = 3, 400_000, 0.5
    a, b, f = quadratic(rng, d)
    x0 = rng.standard_normal(d)
    u = rademacher(rng, n, d)
    terms = u * (f(x0 + c * u) - f(x0[None])[0])[:, None] / c
    assert np.all(np.abs(terms.mean(0) - (a @ x0 + b)) < 5 * terms.std(0) / np.sqrt(n))


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_qp_matches_cvxpy(m, seed):
    rng = np.random.default_rng(seed)
    p_hat = rng.standard_normal((30, m)) + rng.standard_normal((30, 1))  # a shared component: interior optima too
    h_hat = 0.3 * rng.standard_normal((30, m))
    ours = min_norm_weights(qp_matrix(p_hat, h_hat))
    reference = solve_qp_cvxpy(p_hat, h_hat)
    assert ours.min() >= 0 and ours.sum() == pytest.approx(1.0)
    best = qp_objective(reference, p_hat, h_hat)
    assert qp_objective(ours, p_hat, h_hat) <= best * (1 + 1e-6) + 1e-10
    np.testing.assert_allclose(ours, reference, atol=1e-4)  # M is positive definite here: a unique optimum


def test_qp_for_two_objectives_matches_the_closed_form():
    rng = np.random.default_rng(3)
    p_hat, h_hat = rng.standard_normal((10, 2)), rng.standard_normal((10, 2))
    m = qp_matrix(p_hat, h_hat)
    # min over λ ∈ [0, 1] of (λ, 1 − λ) M (λ, 1 − λ)ᵀ
    closed = np.clip((m[1, 1] - m[0, 1]) / (m[0, 0] + m[1, 1] - 2 * m[0, 1]), 0.0, 1.0)
    assert min_norm_weights(m)[0] == pytest.approx(closed, abs=1e-9)


class Recorder:
    """A two-objective linear problem that remembers what was queried."""

    def __init__(self, d):
        self.c = np.random.default_rng(9).standard_normal((d, 2))

    def __call__(self, points):
        return np.asarray(points) @ self.c + 0.1 * np.asarray(points) ** 2 @ np.ones((points.shape[1], 2))


@pytest.mark.parametrize("update", ["raw", "rescaled"])
def test_asmg_step_matches_algorithm_3_written_with_full_matrices(update):
    """Algorithm 3 / App. A.2.5 with explicit d×d matrices against the vectorised implementation."""
    d, n = 4, 6
    problem = Recorder(d)
    rng = np.random.default_rng(4)
    mu0 = rng.standard_normal(d)
    variance0 = rng.uniform(0.5, 1.5, d)
    asmg = ASMG(d, 2, n, mu0, np.random.default_rng(5), step_size=0.05, update=update)
    asmg.variance = variance0.copy()
    z = np.random.default_rng(5).standard_normal((n, d))  # the draws the optimiser will make
    asmg.step(problem)

    sigma = np.diag(variance0)
    sigma_inv, sigma_half = np.linalg.inv(sigma), np.diag(np.sqrt(variance0))
    x = mu0 + z @ sigma_half.T
    values, base = problem(x), problem(mu0[None])[0]
    delta = values - base
    outer = [np.outer(x[j] - mu0, x[j] - mu0) @ sigma_inv for j in range(n)]  # (x_j − μ)(x_j − μ)ᵀ Σ^{-1}
    p = [sum(np.linalg.inv(sigma_half) @ (x[j] - mu0) * delta[j, i] for j in range(n)) / n for i in range(2)]
    h = [sum(np.diag(outer[j] - np.eye(d)) * delta[j, i] for j in range(n)) / (2 * n) for i in range(2)]
    gram = np.array([[p[i] @ p[k] + 2 * h[i] @ h[k] for k in range(2)] for i in range(2)])
    lam = min_norm_weights(gram)  # γ_0 = 1: λ_0 = λ̃_0
    if update == "raw":
        g = [sum(sigma_inv @ (x[j] - mu0) * delta[j, i] for j in range(n)) / n for i in range(2)]
        big_g = [np.diag(sigma_inv @ np.diag(sum(np.diag(outer[j] - np.eye(d)) * delta[j, i] for j in range(n))))
                 / (2 * n) for i in range(2)]
        mu1 = mu0 - 0.05 * sum(lam[i] * sigma @ g[i] for i in range(2))
        precision1 = np.diag(sigma_inv) + 2 * 0.05 * sum(lam[i] * big_g[i] for i in range(2))
    else:
        aggregate = values @ lam
        shaped = (aggregate - aggregate.mean()) / aggregate.std()
        mu1 = mu0 - 0.05 / n * sum((x[j] - mu0) * shaped[j] for j in range(n))
        precision1 = np.diag(sigma_inv) + 0.05 / n * sum(
            np.diag(sigma_inv @ np.diag(np.diag(outer[j]))) * shaped[j] for j in range(n))
    np.testing.assert_allclose(asmg.weights, lam, atol=1e-12)
    np.testing.assert_allclose(asmg.mean, mu1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(1 / asmg.variance, precision1, rtol=1e-10)
    assert asmg.evaluations == n + 1


def test_momentum_with_gamma_one_over_t_plus_one_averages_the_qp_weights():
    d = 3
    targets = []

    class Logged(ASMG):
        def target_weights(self, p_hat, h_hat):
            targets.append(super().target_weights(p_hat, h_hat))
            return targets[-1]

    asmg = Logged(d, 2, 5, np.ones(d), np.random.default_rng(0))
    problem = Recorder(d)
    for _ in range(6):
        asmg.step(problem)
        np.testing.assert_allclose(asmg.weights, np.mean(targets, axis=0), atol=1e-12)
    assert len({tuple(np.round(t, 6)) for t in targets}) > 1  # the targets vary: the average is not trivial


def test_asmg_ew_keeps_equal_weights():
    asmg_ew = build_optimizer("asmg_ew", 3, 2, 5, np.ones(3), np.random.default_rng(0))
    for _ in range(3):
        asmg_ew.step(Recorder(3))
    np.testing.assert_allclose(asmg_ew.weights, [0.5, 0.5])


def literal_objectives(problem, x):
    """Eqs. 4.21–4.23 term by term, i = 1..d."""
    d = len(x)
    f1 = f2 = 0.0
    for i in range(1, d + 1):
        e2, e1 = 10 ** (2 * (i - 1) / (d - 1)), 10 ** ((i - 1) / (d - 1))
        xi = x[i - 1]
        if problem == "shift_l1_ellipsoid":
            f1 += e2 * abs(xi - 0.01)
            f2 += e2 * abs(xi + 0.01)
        elif problem == "shift_l_half_ellipsoid":
            f1 += abs(xi - 0.1) ** 0.5
            f2 += abs(xi + 0.1) ** 0.5
        else:
            f1 += e2 * abs(xi) ** 0.5
            f2 += (e1 * xi) ** 2 - 10 * np.cos(2 * np.pi * e1 * xi)
    if problem == "mixed_ellipsoid_rastrigin":
        f2 += 10 * d
    return np.array([f1, f2])


@pytest.mark.parametrize("problem", blackbox_moo.PROBLEMS)
def test_problems_match_the_thesis_formulas(problem):
    rng = np.random.default_rng(6)
    consts = blackbox_moo.constants(problem, 7)
    points = rng.uniform(-1, 1, (5, 7))
    np.testing.assert_allclose(blackbox_moo.evaluate(problem, consts, points),
                               np.stack([literal_objectives(problem, x) for x in points]), rtol=1e-12)


@pytest.mark.parametrize("problem", blackbox_moo.PROBLEMS)
def test_distance_to_the_pareto_set_matches_brute_force(problem):
    d = 6
    consts = blackbox_moo.constants(problem, d)
    rng = np.random.default_rng(7)
    for x in rng.uniform(-0.3, 0.3, (4, d)):
        if problem == "shift_l1_ellipsoid":  # projection onto the box [−0.01, 0.01]^d
            reference = np.linalg.norm(x - np.clip(x, -0.01, 0.01))
        elif problem == "shift_l_half_ellipsoid":  # nearest of the 2^d vertices {−0.1, 0.1}^d
            vertices = np.array(list(itertools.product([-0.1, 0.1], repeat=d)))
            reference = np.min(np.linalg.norm(vertices - x, axis=1))
        else:
            reference = np.linalg.norm(x)
        assert blackbox_moo.distance_to_pareto_set(problem, consts, x) == pytest.approx(reference, rel=1e-12)


def test_pareto_sets_are_pareto_optimal_for_the_l1_problem():
    """No point dominates a point of P₁ = [−0.01, 0.01]^d: F₁ + F₂ is constant (minimal) on the box."""
    consts = blackbox_moo.constants("shift_l1_ellipsoid", 5)
    rng = np.random.default_rng(8)
    inside = rng.uniform(-0.01, 0.01, (50, 5))
    outside = rng.uniform(-0.5, 0.5, (2000, 5))
    total_inside = blackbox_moo.evaluate("shift_l1_ellipsoid", consts, inside).sum(1)
    total_outside = blackbox_moo.evaluate("shift_l1_ellipsoid", consts, outside).sum(1)
    assert np.ptp(total_inside) < 1e-12 and total_outside.min() >= total_inside.min() - 1e-12


def test_centred_ranks():
    np.testing.assert_allclose(centred_ranks(np.array([3.0, -1.0, 10.0])), [0.0, -0.5, 0.5])


@pytest.mark.parametrize("name", ["cmaes", "mmes"])
def test_evolution_strategies_converge_on_a_sphere(name):
    d = 8

    def sphere(points):
        return np.stack([np.sum(points**2, 1), np.zeros(len(points))], axis=1)

    optimizer = build_optimizer(name, d, 2, 10, np.full(d, 3.0), np.random.default_rng(0))
    for _ in range(400):
        optimizer.step(sphere)
    assert np.linalg.norm(optimizer.mean) < 1e-6


def test_asmg_reaches_the_pareto_set_of_a_small_l1_problem():
    consts = blackbox_moo.constants("shift_l1_ellipsoid", 10)
    asmg = ASMG(10, 2, 10, np.random.default_rng(0).uniform(0, 1, 10), np.random.default_rng(1))
    for _ in range(600):
        asmg.step(lambda x: blackbox_moo.evaluate("shift_l1_ellipsoid", consts, x))
    assert blackbox_moo.distance_to_pareto_set("shift_l1_ellipsoid", consts, asmg.mean) < 1e-3


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_resumes_exactly(name):
    consts = blackbox_moo.constants("mixed_ellipsoid_rastrigin", 6)

    def problem(x):
        return blackbox_moo.evaluate("mixed_ellipsoid_rastrigin", consts, x)

    def fresh():
        return build_optimizer(name, 6, 2, 6, np.full(6, 0.5), np.random.default_rng(3))

    straight = fresh()
    for _ in range(8):
        straight.step(problem)
    first = fresh()
    for _ in range(4):
        first.step(problem)
    resumed = fresh()
    resumed.load_state_dict(first.state_dict())
    for _ in range(4):
        resumed.step(problem)
    np.testing.assert_array_equal(resumed.mean, straight.mean)


def experiment(weighting=None, problem="shift_l_half_ellipsoid", iterations=30):
    return {"runner": "blackbox_moo", "data": {"family": "blackbox_moo", "problem": problem, "dim": 5},
            "weighting": weighting or {"name": "asmg", "step_size": 0.1},
            "problem": {"population": 6, "iterations": iterations, "curve_every": 5}}


@pytest.fixture
def split(tmp_path):
    path = tmp_path / "problem.npz"
    blackbox_moo.write_splits(path, experiment()["data"])
    return path


def test_runner_is_deterministic_per_seed_and_resumes_exactly(split, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runner.train(experiment(), seed, split, tmp_path / name, progress=False)
        runs[name] = pd.read_csv(tmp_path / name / "curve.csv")
    pd.testing.assert_frame_equal(runs["a"], runs["b"])
    assert not runs["a"]["distance"].equals(runs["c"]["distance"])
    assert list(runs["a"]["iteration"]) == list(range(0, 31, 5))
    assert runs["a"]["evaluations"].iloc[-1] == 30 * 7  # N + 1 queries per ASMG iteration

    assert runner.train(experiment(), 0, split, tmp_path / "resumed", stop_after=12) == {"stopped_at": 12}
    runner.train(experiment(), 0, split, tmp_path / "resumed", progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed" / "curve.csv"), runs["a"])

    summary = runner.evaluate(tmp_path / "a" / "final.pt", split, tmp_path / "a")
    assert summary["distance"] == pytest.approx(runs["a"]["distance"].iloc[-1])
    assert json.loads((tmp_path / "a" / "eval.json").read_text())["distance"] == summary["distance"]
    frame = pd.read_csv(tmp_path / "a" / "eval.csv")
    assert list(frame["objective"]) == ["F1", "F2"]
    assert frame["value"].iloc[0] == pytest.approx(summary["F1"])


def test_runner_starts_every_method_of_a_seed_at_the_same_point(split, tmp_path):
    starts = []
    for name in ("asmg", "cmaes", "bes"):
        runner.train(experiment({"name": name}, iterations=5), 2, split, tmp_path / name, progress=False)
        starts.append(pd.read_csv(tmp_path / name / "curve.csv")["distance"].iloc[0])
    assert starts[0] == starts[1] == starts[2]


def test_a_diverging_run_stops_at_its_last_finite_point(tmp_path):
    data = {"family": "blackbox_moo", "problem": "mixed_ellipsoid_rastrigin", "dim": 5}
    path = tmp_path / "p.npz"
    blackbox_moo.write_splits(path, data)
    exp = {**experiment({"name": "bes", "step_size": 1e200}), "data": data}
    summary = runner.train(exp, 0, path, tmp_path / "run", progress=False)
    assert summary["diverged_at"] >= 0
    assert np.isfinite(pd.read_csv(tmp_path / "run" / "curve.csv")["distance"]).all()


@pytest.mark.parametrize("weighting, field", [({"name": "asmg", "beta": 0.1}, "weighting.beta"),
                                              ({"name": "asmg", "update": "other"}, "weighting.update"),
                                              ({"name": "nope"}, "weighting.name"),
                                              ({"name": "asmg", "step_size": -1}, "weighting.step_size")])
def test_bad_options_name_the_config_field(weighting, field, split, tmp_path):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        runner.train(experiment(weighting), 0, split, tmp_path / "bad", progress=False)


def test_bad_problem_settings_name_the_config_field():
    with pytest.raises(ValueError, match=r"problem\.population"):
        runner.check_experiment({**experiment(), "problem": {"population": 1, "iterations": 3}})
    with pytest.raises(ValueError, match=r"data\.problem"):
        runner.check_experiment({**experiment(), "data": {"family": "blackbox_moo", "problem": "x", "dim": 3}})


def test_pycma_cmaes_is_pycma_driven_directly_and_resumes_exactly():
    """The thesis' CMA-ES: the wrapper's means are those of pycma's own ask/tell loop with the same normal
    draws (pycma is the reference), and a state saved mid-run continues to the same means."""
    import pickle

    import cma

    from taskbal.blackbox.cmaes_pycma import StandardNormal

    def sphere(x):
        return (x**2).sum(1, keepdims=True) + np.abs(x).sum(1, keepdims=True)

    start = np.linspace(-1.0, 1.0, 8)
    wrapper = build_optimizer("cmaes_pycma", 8, 2, 6, start, np.random.default_rng(5))
    options = {"popsize": 6, "randn": StandardNormal(np.random.default_rng(5)), "verbose": -9, "verb_log": 0,
               "verb_disp": 0}
    direct = cma.CMAEvolutionStrategy(start.copy(), 1.0, options)
    two = lambda x: np.concatenate([sphere(x), sphere(x - 0.5)], axis=1)  # noqa: E731
    saved = None
    for step in range(12):
        wrapper.step(two)
        points = direct.ask()
        direct.tell(points, [float(two(np.asarray(p)[None]).sum()) for p in points])
        np.testing.assert_array_equal(wrapper.mean, direct.mean)
        if step == 5:
            saved, later = pickle.dumps(wrapper.state_dict()), []
        elif saved is not None:
            later.append(wrapper.mean.copy())
    assert wrapper.evaluations == 12 * 6
    resumed = build_optimizer("cmaes_pycma", 8, 2, 6, start, np.random.default_rng(99))
    resumed.load_state_dict(pickle.loads(saved))
    for mean in later:
        resumed.step(two)
        np.testing.assert_array_equal(resumed.mean, mean)
