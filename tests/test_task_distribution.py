"""Distribution-over-tasks weightings: TR-MAML, DA-MAML, TOW's exploration/exploitation baselines.

References: the simplex projection against cvxpy; one TR-MAML/DA-MAML step against a step worked
out by hand; exploration/exploitation MAP weights against cvxpy, scipy's SLSQP (the paper's
solver) and Monte-Carlo draws of the Dirichlet prior; resume exactness through the training loop.
"""
from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize

from conftest import small_experiment
from taskbal.train import FINAL_FILE, train
from taskbal.weighting import build_weighting
from taskbal.weighting.base import TaskGradients
from taskbal.weighting.damaml import DAMAML
from taskbal.weighting.explore_exploit import ExploreExploit, dirichlet_map_weights
from taskbal.weighting.simplex import project_to_simplex
from taskbal.weighting.tr_maml import TRMAML


def cvxpy_projection(q: np.ndarray) -> np.ndarray:
    p = cp.Variable(q.shape[0])
    cp.Problem(cp.Minimize(cp.sum_squares(p - q)), [p >= 0, cp.sum(p) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return p.value


def projection_cases():
    rng = np.random.default_rng(0)
    cases = [rng.normal(size=m) * scale for m in (2, 3, 7, 40, 100) for scale in (0.01, 1.0, 30.0)]
    cases += [
        np.array([0.3]),                          # m = 1: always [1]
        np.array([0.2, 0.3, 0.5]),                # already on the simplex: unchanged
        np.full(6, 0.7),                          # ties: uniform
        np.full(5, -40.0),                        # all far below: uniform
        np.array([1e3, 0.0, -1.0, 3.0]),          # one huge entry: a vertex
        np.array([0.5, 0.5, 0.5, -0.2]),          # ties at the top, one clipped
        np.array([0.7, 0.6, 0.3, 0.2, 0.2]),      # the boundary case of the hand-computed step below
        rng.dirichlet(np.ones(9)) + 1e-13,        # within rounding of the simplex
    ]
    return cases


@pytest.mark.parametrize("q", projection_cases(), ids=lambda q: f"m{q.shape[0]}")
def test_simplex_projection_matches_cvxpy(q):
    got = project_to_simplex(torch.tensor(q, dtype=torch.float64)).numpy()
    assert got.min() >= 0 and abs(got.sum() - 1) < 1e-12
    reference = np.clip(cvxpy_projection(q), 0, None)
    np.testing.assert_allclose(got, reference, atol=1e-6)  # interior-point accuracy on degenerate cases
    assert np.sum((got - q) ** 2) <= np.sum((reference / reference.sum() - q) ** 2) + 1e-12


def test_simplex_projection_rows_and_idempotence():
    q = torch.randn(6, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    rows = project_to_simplex(q)
    for i in range(q.shape[0]):
        assert torch.equal(rows[i], project_to_simplex(q[i]))
    torch.testing.assert_close(project_to_simplex(rows), rows, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="NaN"):
        project_to_simplex(torch.tensor([0.1, float("nan")]))


def batch(losses, ids, pool, grads=None):
    losses = torch.tensor(losses, dtype=torch.float64)
    k = losses.shape[0]
    grads = grads if grads is not None else torch.randn(k, 7, dtype=torch.float64,
                                                         generator=torch.Generator().manual_seed(k))
    return TaskGradients(losses=losses, grads=grads, features=torch.zeros(k, 1), params=torch.zeros(7),
                         iteration=0, generator=torch.Generator().manual_seed(0),
                         task_ids=torch.tensor(ids), num_pool_tasks=pool)


# Pool of 5, batch ids [0, 2, 2, 4], losses [1, 2, 3, 4], ascent step 0.1 on ĝ_p = [1, 0, 5, 0, 4]:
# q = 0.2 + 0.1 ĝ_p = [0.3, 0.2, 0.7, 0.2, 0.6]; sorted [0.7, 0.6, 0.3, 0.2, 0.2], ρ = 3,
# λ = (1 − 1.6)/3 = −0.2, so p = [0.1, 0, 0.5, 0, 0.4]. The next batch's weights are (5/4)·p[ids].
HAND_LOSSES, HAND_IDS, HAND_P = [1.0, 2.0, 3.0, 4.0], [0, 2, 2, 4], [0.1, 0.0, 0.5, 0.0, 0.4]


@pytest.mark.parametrize("method", ["tr_maml", "damaml"])
def test_one_step_matches_the_hand_computed_projected_ascent(method):
    # DA-MAML's ascent carries the factor m/C = 5/4, so step 0.08 is the same step as TR-MAML's 0.1.
    weighting = TRMAML(7, 1, 0, step_size=0.1) if method == "tr_maml" else DAMAML(7, 1, 0, step_size=0.08)
    first = batch(HAND_LOSSES, HAND_IDS, 5)
    combined = weighting.combine(first)
    torch.testing.assert_close(combined.weights, torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(combined.direction, first.grads.mean(0))
    torch.testing.assert_close(weighting.p, torch.tensor(HAND_P, dtype=torch.float64), rtol=0, atol=1e-15)
    second = batch([1.0, 1.0, 1.0, 1.0], [0, 2, 4, 4], 5)
    combined = weighting.combine(second)
    expected = torch.tensor([0.125, 0.625, 0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(combined.weights, expected)
    torch.testing.assert_close(combined.direction, expected @ second.grads)


def test_duplicates_once_and_printed_algorithm_two():
    once = TRMAML(7, 1, 0, step_size=0.1, duplicates="once")
    once.combine(batch(HAND_LOSSES, HAND_IDS, 5))
    # ĝ_p = [1, 0, 2.5, 0, 4]: q = [0.3, 0.2, 0.45, 0.2, 0.6] sums to 1.75, nothing is clipped
    # (ρ = 5), λ = −0.15.
    expected = torch.tensor([0.15, 0.05, 0.3, 0.05, 0.45], dtype=torch.float64)
    torch.testing.assert_close(once.p, expected, rtol=0, atol=1e-15)
    printed = DAMAML(7, 1, 0, step_size=0.08, p_in_direction=False)
    printed.combine(batch(HAND_LOSSES, HAND_IDS, 5))
    combined = printed.combine(batch([1.0] * 4, [0, 2, 4, 4], 5))
    torch.testing.assert_close(combined.weights, torch.full((4,), 1.25, dtype=torch.float64))
    # p still moves as in Eq. 9 although w ignores it: q = [0.2, 0, 0.6, 0, 0.6], ρ = 3, λ = −0.4/3.
    expected = torch.tensor([0.2, 0.0, 0.6, 0.0, 0.6], dtype=torch.float64) - 0.4 / 3
    torch.testing.assert_close(printed.p, expected.clamp(min=0), rtol=0, atol=1e-15)


def test_batch_max_variant_and_bad_inputs():
    weighting = TRMAML(7, 1, 0, variant="batch_max")
    tasks = batch([0.5, 3.0, 1.0], [0, 1, 2], 3)
    combined = weighting.combine(tasks)
    assert combined.weights.tolist() == [0.0, 1.0, 0.0] and torch.equal(combined.direction, tasks.grads[1])
    with pytest.raises(ValueError, match="task_ids"):
        TRMAML(7, 1, 0).combine(batch([1.0, 2.0], [0, 5], 5))
    no_pool = batch([1.0, 2.0], [0, 1], 2)
    no_pool.task_ids, no_pool.num_pool_tasks = None, 0
    with pytest.raises(ValueError, match="weighting.name"):
        DAMAML(7, 1, 0).combine(no_pool)
    with pytest.raises(ValueError, match="weighting.variant"):
        build_weighting("tr_maml", 7, 1, 0, variant="max")
    with pytest.raises(ValueError, match="weighting.duplicates"):
        build_weighting("damaml", 7, 1, 0, duplicates="twice")
    with pytest.raises(ValueError, match="weighting.mode"):
        build_weighting("explore_exploit", 7, 1, 0, mode="explore")
    with pytest.raises(ValueError, match="not all finite"):
        ExploreExploit(7, 1, 0).combine(batch([1.0, float("nan")], [0, 1], 2))


@pytest.mark.parametrize("method", ["tr_maml", "damaml"])
def test_state_round_trip_continues_exactly(method):
    rng = torch.Generator().manual_seed(3)
    batches = [batch((torch.rand(6, generator=rng) * 3).tolist(),
                     torch.randint(0, 10, (6,), generator=rng).tolist(), 10) for _ in range(8)]
    whole = build_weighting(method, 7, 1, 0, step_size=0.05)
    directions = [whole.combine(b).direction for b in batches]
    first = build_weighting(method, 7, 1, 0, step_size=0.05)
    for b in batches[:4]:
        first.combine(b)
    resumed = build_weighting(method, 7, 1, 0, step_size=0.05)
    resumed.load_state_dict(first.state_dict())
    for b, direction in zip(batches[4:], directions[4:]):
        assert torch.equal(resumed.combine(b).direction, direction)
    assert torch.equal(resumed.p, whole.p)


# -- exploration / exploitation ----------------------------------------------------------------

def objective(u: np.ndarray, losses: np.ndarray, mode: str, kappa: float) -> np.ndarray:
    sign = -1.0 if mode == "exploration" else 1.0
    return sign * (u @ losses) - (kappa - 1.0) * np.log(u).sum(-1)


def cvxpy_map(losses, mode, kappa):
    u = cp.Variable(losses.shape[0])
    sign = -1.0 if mode == "exploration" else 1.0
    cp.Problem(cp.Minimize(sign * (losses @ u) - (kappa - 1) * cp.sum(cp.log(u))), [cp.sum(u) == 1]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return u.value


def slsqp_map(losses, mode, kappa):
    k = losses.shape[0]
    result = minimize(lambda u: objective(u, losses, mode, kappa), np.full(k, 1.0 / k), method="SLSQP",
                      bounds=[(1e-6, 1.0)] * k, constraints=[{"type": "eq", "fun": lambda u: u.sum() - 1}],
                      options={"ftol": 1e-14, "maxiter": 500})
    return result.x


LOSS_CASES = [np.array([0.1, 0.5, 2.0, 0.3]), np.array([3.0, 3.0, 0.01, 7.5, 1.0, 0.2]),
              np.random.default_rng(5).gamma(2.0, size=16), np.array([40.0, 0.0, 1.0])]


@pytest.mark.parametrize("mode", ["exploration", "exploitation"])
@pytest.mark.parametrize("kappa", [1.05, 1.2, 5.0])
@pytest.mark.parametrize("case", range(len(LOSS_CASES)))
def test_map_weights_match_cvxpy_and_slsqp(mode, kappa, case):
    losses = LOSS_CASES[case]
    got = dirichlet_map_weights(losses, mode, kappa)
    assert abs(got.sum() - 1) < 1e-12 and got.min() > 0
    np.testing.assert_allclose(got, cvxpy_map(losses, mode, kappa), atol=1e-6)
    reference = slsqp_map(losses, mode, kappa)
    assert objective(got, losses, mode, kappa) <= objective(reference, losses, mode, kappa) + 1e-9


@pytest.mark.parametrize("mode", ["exploration", "exploitation"])
def test_map_weights_beat_every_draw_of_the_dirichlet_prior(mode):
    # Monte-Carlo: among 200,000 draws from Dir(κ) none has a lower objective, and the best draw is
    # close to u*; the order of the weights follows (exploration) or reverses (exploitation) the losses.
    losses, kappa = np.array([0.2, 1.0, 0.6, 1.5]), 1.2
    draws = np.random.default_rng(0).dirichlet(np.full(4, kappa), size=200_000)
    values = objective(draws, losses, mode, kappa)
    got = dirichlet_map_weights(losses, mode, kappa)
    assert objective(got, losses, mode, kappa) <= values.min()
    np.testing.assert_allclose(draws[np.argmin(values)], got, atol=0.03)
    order = np.argsort(got)
    assert list(order) == (list(np.argsort(losses)) if mode == "exploration" else list(np.argsort(-losses)))


def test_concentration_limits():
    losses = np.array([0.3, 2.0, 1.0])
    np.testing.assert_allclose(dirichlet_map_weights(losses, "exploration", 1e6), np.full(3, 1 / 3), atol=1e-5)
    vertex = dirichlet_map_weights(losses, "exploration", 0.2)
    np.testing.assert_allclose(vertex, [1e-6, 1 - 2e-6, 1e-6])
    np.testing.assert_allclose(dirichlet_map_weights(losses, "exploitation", 0.2), [1 - 2e-6, 1e-6, 1e-6])
    # The vertex is what the paper's solver returns as well for κ < 1 (a concave objective).
    assert objective(vertex, losses, "exploration", 0.2) <= objective(
        slsqp_map(losses, "exploration", 0.2), losses, "exploration", 0.2) + 1e-9


# -- through the training loop ----------------------------------------------------------------

DISTRIBUTION_WEIGHTINGS = [{"name": "tr_maml", "step_size": 0.01}, {"name": "damaml", "step_size": 0.001},
                           {"name": "explore_exploit", "mode": "exploration"},
                           {"name": "explore_exploit", "mode": "exploitation", "concentration": 1.5}]


def final_model(out_dir):
    return torch.load(out_dir / FINAL_FILE, weights_only=False)["learner"]["model"]


@pytest.mark.parametrize("weighting", DISTRIBUTION_WEIGHTINGS, ids=lambda w: f"{w['name']}-{w.get('mode', '')}")
def test_train_end_to_end_and_resume_exactly(tmp_path, small_split, weighting):
    experiment = small_experiment(weighting, iterations=10)
    whole = train(experiment, 0, small_split, tmp_path / "whole", progress=False)
    assert np.isfinite(whole["final_test_mse"])
    train(experiment, 0, small_split, tmp_path / "parts", progress=False, stop_after=4, checkpoint_every=1000)
    parts = train(experiment, 0, small_split, tmp_path / "parts", progress=False)
    assert parts["resumed_from"] == 4
    a, b = final_model(tmp_path / "whole"), final_model(tmp_path / "parts")
    assert all(torch.equal(a[key], b[key]) for key in a)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole/curve.csv"), pd.read_csv(tmp_path / "parts/curve.csv"))
    if weighting["name"] != "explore_exploit":
        saved = torch.load(tmp_path / "whole" / FINAL_FILE, weights_only=False)["weighting"]["p"]
        assert saved.numel() == 320 and saved.max() > 1 / 320  # p moved towards the high-loss tasks


@pytest.mark.parametrize("weighting", [{"name": "tr_maml", "step_size": 0.01}, {"name": "damaml", "step_size": 0.001},
                                       {"name": "damaml", "step_size": 0.001, "p_in_direction": False}])
def test_with_a_nash_penalty_one_weighted_backward_pass_trains_as_the_jacobian_rows(tmp_path, small_split, weighting,
                                                                                  monkeypatch):
    from taskbal.learners import MAML
    from taskbal.train import Run

    experiment = small_experiment(weighting, iterations=6)
    experiment["learner"]["penalty"] = {"name": "robust", "weight": 0.05, "r": 2, "game_size": 8}
    one_pass_calls = []
    weighted = MAML.weighted_meta_gradient
    monkeypatch.setattr(MAML, "weighted_meta_gradient",
                        lambda self, *args: one_pass_calls.append(1) or weighted(self, *args))
    train(experiment, 0, small_split, tmp_path / "one_pass", progress=False)
    assert len(one_pass_calls) == 6
    monkeypatch.setattr(Run, "weighted_in_one_pass", lambda self, *args: (None, None))
    train(experiment, 0, small_split, tmp_path / "rows", progress=False)
    assert len(one_pass_calls) == 6
    a, b = final_model(tmp_path / "one_pass"), final_model(tmp_path / "rows")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    p = [torch.load(tmp_path / run / FINAL_FILE, weights_only=False)["weighting"]["p"] for run in ("one_pass", "rows")]
    torch.testing.assert_close(p[0], p[1], rtol=1e-6, atol=1e-9)
    assert p[0].max() > 1 / 320  # p moved


def test_zero_step_size_is_plain_maml(tmp_path, small_split):
    mean = train(small_experiment({"name": "mean"}), 0, small_split, tmp_path / "mean", progress=False)
    tr = train(small_experiment({"name": "tr_maml", "step_size": 0.0}), 0, small_split, tmp_path / "tr",
               progress=False)
    a, b = final_model(tmp_path / "mean"), final_model(tmp_path / "tr")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert abs(mean["final_test_mse"] - tr["final_test_mse"]) < 1e-4


def test_p_lives_on_the_skewed_sinusoid_training_bins(tmp_path):
    from taskbal.data.skewed_sinusoid import write_splits

    data = dict(family="skewed_sinusoid", shots=5, query=5, eval_query=10, train_tasks=300, val_tasks=10,
                test_tasks=20, split_seed=3)
    write_splits(tmp_path / "skewed.npz", data)
    experiment = small_experiment({"name": "tr_maml", "step_size": 0.01}, iterations=3)
    experiment["data"] = data
    train(experiment, 0, tmp_path / "skewed.npz", tmp_path / "run", progress=False)
    p = torch.load(tmp_path / "run" / FINAL_FILE, weights_only=False)["weighting"]["p"]
    assert p.shape == (100,) and abs(p.sum().item() - 1) < 1e-12 and p.max() > 0.01
