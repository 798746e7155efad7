"""SIMOL's Figure 1 toy: objectives, Pareto front, and the three methods."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from taskbal.data import simol_toy
from taskbal.runners import simol_toy as runner
from taskbal.weighting import TaskGradients


def torch_objectives(x: torch.Tensor, sign: float) -> torch.Tensor:
    """Appendix A written with torch ops (clamp as in CAGrad's code), an independent reference."""
    x1, x2 = x[0], x[1]
    l1 = torch.log(torch.clamp(torch.abs(0.5 * (-x1 - 7) - torch.tanh(-x2)), min=5e-6)) + 6
    l2 = torch.log(torch.clamp(torch.abs(0.5 * (-x1 + 3) + sign * torch.tanh(-x2) + 2), min=5e-6)) + 6
    g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c1 = torch.clamp(torch.tanh(0.5 * x2), min=0)
    c2 = torch.clamp(torch.tanh(-0.5 * x2), min=0)
    return torch.stack([c1 * l1 + c2 * g1, c1 * l2 + c2 * g2])


@pytest.mark.parametrize("sign_name", ["paper", "cagrad"])
def test_values_and_gradients_match_autograd(sign_name):
    rng = np.random.default_rng(0)
    for point in rng.uniform(-10, 10, (20, 2)):
        values, grads = simol_toy.objectives_and_gradients(point[None], sign_name)
        x = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        reference = torch_objectives(x, simol_toy.SIGNS[sign_name])
        jacobian = torch.stack([torch.autograd.grad(reference[i], x, retain_graph=True)[0] for i in range(2)])
        np.testing.assert_allclose(values[0], reference.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grads[0], jacobian.numpy(), rtol=1e-10, atol=1e-12)


def non_dominated(values: np.ndarray) -> np.ndarray:
    """The non-dominated points of a finite set (sort by f1, keep each point that lowers the running min of f2)."""
    ordered = values[np.lexsort((values[:, 1], values[:, 0]))]
    running = np.minimum.accumulate(ordered[:, 1])
    keep = np.concatenate([[True], ordered[1:, 1] < running[:-1]])
    return ordered[keep]


def test_analytic_front_matches_a_brute_force_scan():
    grid = np.linspace(-10, 10, 1201)
    points = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    scan = non_dominated(simol_toy.objectives(points))
    front = simol_toy.pareto_front(801)
    vertices = np.stack([front["f1"], front["f2"]], axis=1)
    # (1) every non-dominated grid point lies on the analytic front (up to the grid's resolution) ...
    gaps = np.array([simol_toy.distance_to_polyline(p, vertices) for p in scan])
    assert gaps.max() < 5e-3
    # (2) ... no grid point dominates a front point, and (3) the scan covers the front from end to end.
    order = np.argsort(scan[:, 0])
    for a, b in vertices:
        better_f1 = scan[order][scan[order][:, 0] < a - 1e-9]
        assert better_f1.size == 0 or better_f1[:, 1].min() >= b - 1e-6
    assert np.allclose([scan[:, 0].min(), scan[:, 1].min()], [vertices[:, 0].min(), vertices[:, 1].min()], atol=1e-2)
    np.testing.assert_allclose(vertices[0], [-0.398, -19.989], atol=1e-3)  # f2's minimiser end
    np.testing.assert_allclose(vertices[-1], [-19.989, -0.398], atol=1e-3)


def test_front_points_are_pareto_stationary():
    front = simol_toy.pareto_front(21)
    for x1, x2 in zip(front["x1"], front["x2"]):
        _, grads = simol_toy.objectives_and_gradients(np.array([[x1, x2]]))
        gap, _ = runner.mgda_min_norm(grads[0])
        assert gap < 1e-5


def test_distance_to_polyline_matches_dense_sampling():
    rng = np.random.default_rng(1)
    vertices = np.cumsum(rng.uniform(0.1, 1, (6, 2)), axis=0)
    t = np.linspace(0, 1, 20001)[:, None]
    dense = np.concatenate([a + t * (b - a) for a, b in zip(vertices[:-1], vertices[1:])])
    for point in rng.uniform(-1, 6, (10, 2)):
        reference = np.min(np.linalg.norm(dense - point, axis=1))
        assert simol_toy.distance_to_polyline(point, vertices) == pytest.approx(reference, abs=1e-3)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.npz"
    simol_toy.write_splits(path, {"family": "simol_toy", "front_points": 801})
    return path


def experiment(weighting, batch_size, start=(-8.5, -5.0), iterations=2000, optimizer="adam", curve_every=100):
    return {"runner": "simol_toy", "data": {"family": "simol_toy", "front_points": 801}, "weighting": weighting,
            "problem": {"start": list(start), "iterations": iterations, "batch_size": batch_size,
                        "optimizer": optimizer, "curve_every": curve_every}}


@pytest.mark.parametrize("start", [(-8.5, -5.0), (0.0, -3.0), (3.0, -9.0)])
def test_full_mgda_converges_to_a_pareto_stationary_point(split, tmp_path, start):
    """Plain MGDA steps (a large step: the x₂ direction has curvature ≈ 0.02) drive min ‖Σγ∇f‖ to 0."""
    out = tmp_path / "mgda"
    exp = experiment({"name": "mgda"}, 2, start, iterations=1500, optimizer="sgd")
    exp["problem"]["lr"] = 0.5
    runner.train(exp, 0, split, out, progress=False)
    final = runner.evaluate(out / "final.pt", split, out)
    _, grads = simol_toy.objectives_and_gradients(np.array([start]))
    initial_gap, _ = runner.mgda_min_norm(grads[0])
    assert final["min_norm"] < 1e-8 and initial_gap > 1e-2
    assert final["distance_to_front"] < 1e-5  # the front is stored as an 801-point polyline


def test_mini_batch_mgda_with_one_objective_is_a_plain_step_on_it(split, tmp_path):
    """MGDA over a mini-batch of one gradient puts weight 1 on it, so each step follows one objective."""
    out = tmp_path / "mb"
    runner.train(experiment({"name": "mgda"}, 1, optimizer="sgd", iterations=1, curve_every=1), 0, split, out,
                 progress=False)
    curve = pd.read_csv(out / "curve.csv")
    drawn = int(np.random.default_rng([0, 1]).choice(2, size=1, replace=False, p=[2 / 3, 1 / 3])[0])
    _, grads = simol_toy.objectives_and_gradients(np.array([[-8.5, -5.0]]))
    expected = np.array([-8.5, -5.0]) - 0.01 * grads[0, drawn]
    np.testing.assert_allclose(curve[["x1", "x2"]].iloc[-1], expected, rtol=1e-12)
    assert curve[f"weight_f{drawn + 1}"].iloc[-1] == 1.0


def test_tail_summary_measures_where_the_tail_lies_and_how_much_it_moves():
    """Only the curve points of the last tenth of the iterations count; the spread is √(var f1 + var f2)."""
    still = [[0, 5.0, 5.0, 9.0], [50, 1.0, 1.0, 3.0], [91, -10.0, -5.0, 2e-6], [100, -10.0, -5.0, 1e-6]]
    assert runner.tail_summary(still) == {"tail_mean_distance_to_front": pytest.approx(1.5e-6), "tail_spread": 0.0}
    # ten points alternating between (−10 ± 0.3, −5 ∓ 0.4): spread √(0.3² + 0.4²) = 0.5
    moving = [[0, 0.0, 0.0, 9.0]] + [[91 + i, -10 + (-1) ** i * 0.3, -5 - (-1) ** i * 0.4, 0.0] for i in range(10)]
    assert runner.tail_summary(moving)["tail_spread"] == pytest.approx(0.5)
    assert runner.tail_summary(moving)["tail_mean_distance_to_front"] == 0.0


def test_the_tail_tells_a_settled_run_from_one_that_wanders_along_the_front(split, tmp_path):
    """Both end next to the front, but only full MGDA stops moving: a mini-batch of one objective keeps
    stepping towards one end of the front or the other (a large step makes it quick)."""
    summaries = {}
    for name, batch_size in (("full", 2), ("mini", 1)):
        exp = experiment({"name": "mgda"}, batch_size, (-8.5, -5.0), iterations=1500, optimizer="sgd", curve_every=10)
        exp["problem"]["lr"] = 0.5
        runner.train(exp, 0, split, tmp_path / name, progress=False)
        summaries[name] = runner.evaluate(tmp_path / name / "final.pt", split, tmp_path / name)
    assert summaries["full"]["tail_spread"] < 1e-6 and summaries["full"]["tail_mean_distance_to_front"] < 1e-5
    assert summaries["mini"]["tail_spread"] > 0.1 and summaries["mini"]["tail_mean_distance_to_front"] < 1e-3


def test_train_json_names_a_divergence_only_for_a_run_that_diverged(split, tmp_path):
    """taskbal.divergence reads any ``diverged_at`` in train.json as a diverged seed, so a run that never
    diverged has none; SIMOL's plain θ ascent (step 0.1) from (9, 9) turns x non-finite within steps."""
    calm = runner.train(experiment({"name": "mgda"}, 2, iterations=20, optimizer="sgd", curve_every=10), 0, split,
                        tmp_path / "calm", progress=False)
    wild = runner.train(experiment({"name": "simol", "theta_optimizer": "sgd", "theta_lr": 0.1}, 1, (9.0, 9.0),
                                   iterations=200, optimizer="sgd", curve_every=10), 0, split, tmp_path / "wild",
                        progress=False)
    assert "diverged_at" not in calm
    assert 0 <= wild["diverged_at"] < 200


def test_objectives_are_drawn_with_the_configured_probabilities(split, tmp_path):
    out = tmp_path / "freq"
    n = 3000
    runner.train(experiment({"name": "mgda"}, 1, optimizer="sgd", iterations=n, curve_every=n), 0, split, out,
                 progress=False)
    share = pd.read_csv(out / "curve.csv")["weight_f1"].iloc[-1]  # mean weight of f1 = share of steps on f1
    assert abs(share - 2 / 3) < 4 * np.sqrt(2 / 9 / n)


@pytest.mark.parametrize("lambda_grad, lambda_mean", [(1.0, 1.0), (0.5, 2.0)])
def test_toy_simol_reweights_and_ascends_as_the_closed_form(lambda_grad, lambda_mean):
    """k = 1: r = θ_τ², direction r·g, and ∂K̃/∂θ_τ = 2θ_τ(−r‖g‖²/λ' − λ''(r − 1)) (plain ascent, step β')."""
    simol = runner.ToySIMOL(2, 2, seed=0, lambda_grad=lambda_grad, lambda_mean=lambda_mean, theta_lr=0.1,
                            theta_optimizer="sgd", init_theta=0.8)
    g = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    task = torch.tensor([1])
    tasks = TaskGradients(losses=torch.zeros(1, dtype=torch.float64), grads=g, features=torch.eye(2)[task],
                          params=torch.zeros(2, dtype=torch.float64), iteration=0, generator=torch.Generator(),
                          task_ids=task, num_pool_tasks=2)
    combined = simol.combine(tasks)
    r = 0.8**2
    torch.testing.assert_close(combined.direction, r * g[0])
    norm_sq = float(g.pow(2).sum())
    ascent = 2 * 0.8 * (-r * norm_sq / lambda_grad - lambda_mean * (r - 1))
    theta = simol.net.theta.detach()
    assert float(theta[1]) == pytest.approx(0.8 + 0.1 * ascent, rel=1e-12)
    assert float(theta[0]) == pytest.approx(0.8)  # the objective not drawn keeps its weight


def test_runs_are_deterministic_per_seed(split, tmp_path):
    weighting = {"name": "simol", "theta_optimizer": "adam", "theta_lr": 0.1}
    frames = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        runner.train(experiment(weighting, 1, iterations=300, curve_every=50), seed, split, tmp_path / name,
                     progress=False)
        frames.append(pd.read_csv(tmp_path / name / "curve.csv"))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert not frames[0][["x1", "x2"]].equals(frames[2][["x1", "x2"]])
    summary = runner.evaluate(tmp_path / "a" / "final.pt", split, tmp_path / "a")
    assert summary["f1"] == pytest.approx(frames[0]["f1"].iloc[-1])
    assert set(summary) >= {"distance_to_front", "distance_to_pareto_set", "min_norm", "f1", "f2"}


BASE = {"start": [1.0, 2.0], "iterations": 3, "batch_size": 1}


@pytest.mark.parametrize("problem, field", [({**BASE, "start": [1.0]}, "problem.start"),
                                            ({**BASE, "batch_size": 3}, "problem.batch_size"),
                                            ({"start": [1.0, 2.0], "iterations": 3}, "problem.batch_size"),
                                            ({**BASE, "task_probabilities": [0.5, 0.6]}, "problem.task_probabilities"),
                                            ({**BASE, "lr": 0}, "problem.lr"),
                                            ({**BASE, "optimizer": "rmsprop"}, "problem.optimizer")])
def test_bad_settings_name_the_config_field(problem, field):
    exp = {"runner": "simol_toy", "data": {"family": "simol_toy"}, "weighting": {"name": "mgda"}, "problem": problem}
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        runner.check_experiment(exp)


def test_unknown_weighting_option_names_the_field():
    exp = experiment({"name": "simol", "theta": 1.0}, 1)
    with pytest.raises(ValueError, match=r"weighting\.theta"):
        runner.check_experiment(exp)
