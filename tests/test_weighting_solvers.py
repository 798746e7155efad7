"""MGDA, CAGrad and PCGrad checked against independent references.

MGDA's and CAGrad's small convex problems are re-solved exactly with cvxpy (Clarabel, tight
tolerances); CAGrad's direction is checked against cvxpy solving its primal max-min problem
directly; PCGrad is checked against closed forms and a literal per-task loop of Algorithm 1.
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from taskbal.weighting.base import TaskGradients
from taskbal.weighting.cagrad import CAGrad, cagrad_objective, cagrad_weights
from taskbal.weighting.mgda import MGDA, best_pair_start, min_norm_weights
from taskbal.weighting.pcgrad import PCGrad

DIM = 50


def make_tasks(grads: torch.Tensor, seed: int = 0) -> TaskGradients:
    k, d = grads.shape
    return TaskGradients(
        losses=torch.zeros(k, dtype=grads.dtype),
        grads=grads,
        features=torch.zeros(k, 1),
        params=torch.zeros(d),
        iteration=0,
        generator=torch.Generator().manual_seed(seed),
    )


def random_grads(kind: str, k: int, seed: int) -> np.ndarray:
    """[k, DIM] gradients of a given geometry."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((k, DIM))
    if kind == "random":
        return noise
    if kind == "shared":  # a common component plus task noise, like real meta-batches
        return 2.0 * rng.standard_normal(DIM) + noise
    if kind == "conflict":  # the last gradient cancels the others' sum: 0 is in the hull, min norm 0
        noise[-1] = -noise[:-1].sum(axis=0)
        return noise
    if kind == "dominant":  # one gradient 100 times larger than the rest: it must get (almost) no weight
        noise[0] *= 100.0
        return noise
    if kind == "vertex":  # one tiny gradient along the shared direction: the optimum is that vertex alone
        shared = 3.0 * rng.standard_normal(DIM)
        grads = shared + 0.3 * noise
        grads[0] = 0.01 * shared
        return grads
    raise ValueError(kind)


def exact_min_norm(grads: np.ndarray) -> float:
    weights = cp.Variable(grads.shape[0], nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(grads.T @ weights)), [cp.sum(weights) == 1])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return problem.value


def assert_on_simplex(weights: np.ndarray) -> None:
    assert np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ MGDA

MGDA_CASES = [(kind, k, seed) for kind in ("random", "shared", "conflict", "dominant", "vertex")
              for k in (2, 5, 16) for seed in (0, 1)]


@pytest.mark.parametrize("kind,k,seed", MGDA_CASES)
def test_min_norm_weights_reach_the_exact_optimum(kind, k, seed):
    grads = random_grads(kind, k, seed)
    gram = grads @ grads.T
    weights = min_norm_weights(gram)
    assert_on_simplex(weights)
    optimum = exact_min_norm(grads)
    assert weights @ gram @ weights == pytest.approx(optimum, rel=1e-4, abs=1e-8)


def test_min_norm_special_cases_are_recognised():
    # Conflict: the optimum is exactly 0.
    grads = random_grads("conflict", 16, 3)
    weights = min_norm_weights(grads @ grads.T)
    assert weights @ (grads @ grads.T) @ weights < 1e-8
    # Vertex: all weight on the tiny gradient.
    grads = random_grads("vertex", 16, 3)
    assert min_norm_weights(grads @ grads.T)[0] == pytest.approx(1.0, abs=1e-6)
    # Dominant: the huge gradient gets no weight.
    grads = random_grads("dominant", 16, 3)
    assert min_norm_weights(grads @ grads.T)[0] < 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_min_norm_two_tasks_closed_form(seed):
    rng = np.random.default_rng(seed)
    g1, g2 = rng.standard_normal((2, DIM))
    if seed == 3:
        g2 = g1 * 3.0 + 0.1 * rng.standard_normal(DIM)  # g1 alone is optimal: the clip at 1 is active
    gamma1 = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0)
    weights = min_norm_weights(np.array([[g1 @ g1, g1 @ g2], [g2 @ g1, g2 @ g2]]))
    assert weights == pytest.approx([gamma1, 1.0 - gamma1], abs=1e-10)


def test_best_pair_start_is_the_best_two_gradient_min_norm_point():
    grads = random_grads("random", 6, 5)
    gram = grads @ grads.T
    best = np.inf
    for i in range(6):  # brute force over pairs with the k = 2 closed form
        for j in range(i + 1, 6):
            gamma = np.clip((grads[j] - grads[i]) @ grads[j] / ((grads[i] - grads[j]) @ (grads[i] - grads[j])), 0, 1)
            best = min(best, np.sum((gamma * grads[i] + (1 - gamma) * grads[j]) ** 2))
    start = best_pair_start(gram)
    assert_on_simplex(start)
    assert np.count_nonzero(start) <= 2
    assert start @ gram @ start == pytest.approx(best, rel=1e-12)


def test_sener_koltun_frank_wolfe_is_feasible_and_exact_on_small_problems():
    for k in (2, 5):
        grads = random_grads("random", k, 7)
        gram = grads @ grads.T
        weights = min_norm_weights(gram, solver="frank_wolfe")
        assert_on_simplex(weights)
        assert weights @ gram @ weights == pytest.approx(exact_min_norm(grads), rel=1e-4, abs=1e-8)


def test_mgda_combine_direction_and_l2_normalisation():
    grads = torch.as_tensor(random_grads("random", 5, 11))
    gram = (grads @ grads.T).numpy()
    out = MGDA(num_params=DIM, feature_dim=1, seed=0).combine(make_tasks(grads))
    gamma = min_norm_weights(gram)
    assert torch.allclose(out.weights, torch.as_tensor(gamma))
    assert torch.allclose(out.direction, torch.as_tensor(gamma) @ grads)
    assert out.stats["mgda_norm"] == pytest.approx(float(out.direction.norm()))

    # 'l2': the min-norm point of the unit gradients, mapped back onto the raw gradients.
    norms = grads.norm(dim=1, keepdim=True)
    unit = (grads / norms).numpy()
    out_l2 = MGDA(num_params=DIM, feature_dim=1, seed=0, normalization="l2").combine(make_tasks(grads))
    gamma_l2 = out_l2.weights.numpy() * norms.squeeze(1).numpy()
    assert_on_simplex(gamma_l2)
    assert gamma_l2 @ (unit @ unit.T) @ gamma_l2 == pytest.approx(exact_min_norm(unit), rel=1e-4, abs=1e-8)
    assert torch.allclose(out_l2.direction, torch.as_tensor(gamma_l2 @ unit))


# ---------------------------------------------------------------------------------------- CAGrad

def exact_cagrad_dual(grads: np.ndarray, c: float) -> float:
    k = grads.shape[0]
    g0 = grads.mean(axis=0)
    weights = cp.Variable(k, nonneg=True)
    objective = (grads @ g0) @ weights + c * np.linalg.norm(g0) * cp.norm(grads.T @ weights)
    problem = cp.Problem(cp.Minimize(objective), [cp.sum(weights) == 1])
    problem.solve(solver=cp.CLARABEL)
    return problem.value


def exact_cagrad_primal(grads: np.ndarray, c: float) -> float:
    """max_d min_i ⟨g_i, d⟩ subject to ‖d - g0‖ ≤ c‖g0‖, solved directly in d."""
    g0 = grads.mean(axis=0)
    direction, worst = cp.Variable(grads.shape[1]), cp.Variable()
    constraints = [grads @ direction >= worst, cp.norm(direction - g0) <= c * np.linalg.norm(g0)]
    problem = cp.Problem(cp.Maximize(worst), constraints)
    problem.solve(solver=cp.CLARABEL)
    return problem.value


CAGRAD_CASES = [  # (geometry, k, seed, c)
    ("shared", 5, 0, 0.4), ("shared", 16, 1, 0.4), ("random", 5, 2, 0.4), ("random", 16, 3, 0.4),
    ("shared", 16, 4, 0.9), ("dominant", 8, 5, 0.4), ("dominant", 16, 6, 0.4), ("random", 2, 7, 0.5)]


@pytest.mark.parametrize("kind,k,seed,c", CAGRAD_CASES)
def test_cagrad_weights_solve_the_dual(kind, k, seed, c):
    grads = random_grads(kind, k, seed)
    gram = grads @ grads.T
    weights = cagrad_weights(gram, c)
    assert_on_simplex(weights)
    optimum = exact_cagrad_dual(grads, c)
    assert cagrad_objective(weights, gram, c) == pytest.approx(optimum, rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("kind,k,seed,c", CAGRAD_CASES)
def test_cagrad_direction_maximises_the_worst_task_in_the_ball(kind, k, seed, c):
    grads = random_grads(kind, k, seed)
    g0 = grads.mean(axis=0)
    out = CAGrad(num_params=DIM, feature_dim=1, seed=0, c=c, rescale=0).combine(make_tasks(torch.as_tensor(grads)))
    direction = out.direction.numpy()
    assert np.linalg.norm(direction - g0) == pytest.approx(c * np.linalg.norm(g0), rel=1e-8)
    worst = (grads @ direction).min()
    optimum = exact_cagrad_primal(grads, c)
    # The scale of ⟨g_i, d⟩ sets the absolute floor, for optima that happen to be near 0.
    assert worst == pytest.approx(optimum, rel=1e-4,
                                  abs=1e-6 * np.linalg.norm(grads, axis=1).max() * np.linalg.norm(g0))
    assert torch.allclose(out.weights @ out.direction.new_tensor(grads), out.direction)


def test_cagrad_rescale_and_scale_invariance():
    grads = torch.as_tensor(random_grads("shared", 16, 8))
    plain = CAGrad(num_params=DIM, feature_dim=1, seed=0, rescale=0).combine(make_tasks(grads))
    rescaled = CAGrad(num_params=DIM, feature_dim=1, seed=0).combine(make_tasks(grads))
    assert torch.allclose(rescaled.direction, plain.direction / (1 + 0.4**2))
    # Tiny meta-gradients must get the same weights (the solver works on the normalised Gram).
    tiny = CAGrad(num_params=DIM, feature_dim=1, seed=0).combine(make_tasks(grads * 1e-4))
    assert torch.allclose(tiny.weights, rescaled.weights, rtol=1e-4, atol=1e-7)
    # c = 0 is plain averaging.
    mean = CAGrad(num_params=DIM, feature_dim=1, seed=0, c=0.0).combine(make_tasks(grads))
    assert torch.allclose(mean.direction, grads.mean(dim=0))


@pytest.mark.parametrize("name", ["mgda", "cagrad", "pcgrad"])
def test_degenerate_gradients_give_a_finite_direction(name):
    from taskbal.weighting import build_weighting

    g = torch.as_tensor(np.random.default_rng(0).standard_normal(DIM))
    for grads in (torch.zeros(4, DIM, dtype=torch.float64), torch.stack([g, -g])):  # no signal; g0 = 0
        out = build_weighting(name, num_params=DIM, feature_dim=1, seed=0).combine(make_tasks(grads))
        assert torch.isfinite(out.direction).all() and torch.isfinite(out.weights).all()
        assert torch.allclose(out.direction, torch.zeros(DIM, dtype=torch.float64), atol=1e-12)


# ---------------------------------------------------------------------------------------- PCGrad

def reference_pcgrad(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Algorithm 1 of Yu et al. written out literally, one task and one other task at a time."""
    k = grads.shape[0]
    projected = []
    for i in range(k):
        others = [j for j in range(k) if j != i]
        order = [others[p] for p in torch.randperm(k - 1, generator=generator).tolist()]
        g = grads[i].clone()
        for j in order:
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g = g - dot / torch.dot(grads[j], grads[j]) * grads[j]
        projected.append(g)
    return torch.stack(projected).mean(dim=0)


def test_pcgrad_two_conflicting_tasks_closed_form():
    g1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64)
    out = PCGrad(num_params=3, feature_dim=1, seed=0).combine(make_tasks(torch.stack([g1, g2])))
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # = (0.5, 0.5, 0)
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1  # = (0, 1, 0)
    assert torch.allclose(p1, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-12) and float(p2 @ g1) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(out.direction, (p1 + p2) / 2)
    assert out.stats["pcgrad_conflicts"] == 2
    assert torch.allclose(out.weights, torch.full((2,), 0.5, dtype=torch.float64))


def test_pcgrad_leaves_agreeing_gradients_alone():
    grads = torch.as_tensor(np.abs(random_grads("random", 6, 1)))  # all entries >= 0: no negative dots
    out = PCGrad(num_params=DIM, feature_dim=1, seed=0).combine(make_tasks(grads))
    assert torch.allclose(out.direction, grads.mean(dim=0))
    assert out.stats["pcgrad_conflicts"] == 0


@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_matches_the_literal_loop(seed):
    grads = torch.as_tensor(random_grads("random", 6, seed))
    out = PCGrad(num_params=DIM, feature_dim=1, seed=0).combine(make_tasks(grads, seed=seed))
    expected = reference_pcgrad(grads, torch.Generator().manual_seed(seed))
    assert out.stats["pcgrad_conflicts"] > 0  # the case exercises projections
    assert torch.allclose(out.direction, expected, rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------------------------------- Registry

@pytest.mark.parametrize("name", ["mgda", "cagrad", "pcgrad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_registry_builds_every_method(name, dtype):
    from taskbal.weighting import build_weighting

    k, d = 16, 1153
    grads = torch.randn(k, d, generator=torch.Generator().manual_seed(0)).to(dtype)
    method = build_weighting(name, num_params=d, feature_dim=1, seed=0)
    out = method.combine(make_tasks(grads))
    assert out.direction.shape == (d,) and out.direction.dtype == dtype
    assert out.weights.shape == (k,) and out.weights.dtype == dtype
    assert torch.isfinite(out.direction).all() and torch.isfinite(out.weights).all()


@pytest.mark.parametrize("kind,k,seed,c", CAGRAD_CASES + [("random", 32, 8, 0.4), ("shared", 32, 9, 0.1)])
def test_cagrad_active_set_is_certified_and_never_worse_than_slsqp(kind, k, seed, c):
    from taskbal.weighting.cagrad import _active_set_weights

    grads = random_grads(kind, k, seed)
    gram = grads @ grads.T
    normalised = gram / np.mean(np.diag(gram))
    exact = _active_set_weights(normalised, normalised.mean(axis=1), c * np.sqrt(normalised.mean()))
    assert exact is not None  # the closed-form path itself answered (no SLSQP fallback)
    assert_on_simplex(exact)
    slsqp = cagrad_weights(gram, c, solver="slsqp")
    ours, theirs = cagrad_objective(exact, gram, c), cagrad_objective(slsqp, gram, c)
    assert ours <= theirs + 1e-12 * abs(theirs)
    assert ours == pytest.approx(theirs, rel=1e-6)
    np.testing.assert_allclose(exact, slsqp, atol=2e-3)
