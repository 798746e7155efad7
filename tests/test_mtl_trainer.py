"""The multi-task loop: its gradients against autograd / cvxpy references, determinism, resume, the
hyper-cleaning MOBLO problem on a small generated dataset, and the runner's outputs."""
from __future__ import annotations

import copy

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from taskbal.data import FAMILIES
from taskbal.mtl import blobs
from taskbal.mtl.bilevel import batch_for_step, lower_descent, unrolled_hypergradients
from taskbal.mtl.data import MultiTaskData
from taskbal.mtl.model import MultiTaskNet
from taskbal.mtl.problems import HyperCleaning
from taskbal.mtl.trainer import macro_f1
from taskbal.mtl.weighted import WeightedMTL, task_loss
from taskbal.runners import mtl as runner

DATA = {"family": "mtl_blobs", "tasks": 2, "classes": 3, "dim": 6, "train": 96, "val": 30, "val2": 30, "test": 60,
        "corruption": 0.5}


@pytest.fixture(autouse=True)
def blobs_family(monkeypatch):
    """The generated multi-task family, registered for these tests only."""
    monkeypatch.setitem(FAMILIES, "mtl_blobs", blobs)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("mtl") / "blobs.npz"
    blobs.write_splits(path, DATA)
    return path


def experiment(weighting: dict, iterations: int = 8, **mtl) -> dict:
    settings = {"iterations": iterations, "hidden": [12, 8], "batch_size": 16, "curve_every": 3,
                "select_on": "val2", "upper_batch_size": 15, **mtl}
    return {"runner": "mtl", "data": DATA, "weighting": weighting, "mtl": settings}


def setup(split, seed=0, hidden=(12, 8)):
    data = MultiTaskData(blobs.Tasks(split))
    torch.manual_seed(seed)
    model = MultiTaskNet(data.input_dim, list(hidden), data.num_classes)
    return data, model


def reference_gradients(model, batches, weights):
    """Autograd of Σ_i w_i L_i on a copy of the model: the gradient a weighted sum of losses gives."""
    clone = copy.deepcopy(model)
    total = sum(w * task_loss(clone(b.x, i), b.y) for i, (b, w) in enumerate(zip(batches, weights)))
    return torch.autograd.grad(total, list(clone.parameters()))


@pytest.mark.parametrize("scale,factor", [("sum", 1.0), ("mean", 0.5)])
def test_equal_weighting_step_is_the_gradient_of_the_summed_loss(split, scale, factor):
    data, model = setup(split)
    step = WeightedMTL(model, data, 0, "mean", {}, batch_size=16, optimizer="sgd", lr=1.0, scale=scale)
    batches = data.batch("train", 0, 0, 16, "train")
    expected = reference_gradients(model, batches, [factor, factor])  # sum: Σ L_i; mean: (1/2) Σ L_i
    before = [p.detach().clone() for p in model.parameters()]
    step.step(0)
    for p, old, g in zip(model.parameters(), before, expected):
        torch.testing.assert_close(old - p.detach(), g, rtol=1e-5, atol=1e-7)


def test_mgda_step_descends_along_the_min_norm_point_of_the_task_gradients(split):
    data, model = setup(split)
    shared = model.shared_parameters()
    batches = data.batch("train", 0, 0, 16, "train")
    clone = copy.deepcopy(model)
    rows = []
    for i, b in enumerate(batches):
        grads = torch.autograd.grad(task_loss(clone(b.x, i), b.y), clone.shared_parameters())
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    matrix = torch.stack(rows).double().numpy()
    gamma = cp.Variable(2)
    cp.Problem(cp.Minimize(cp.sum_squares(matrix.T @ gamma)),
               [gamma >= 0, cp.sum(gamma) == 1]).solve(solver=cp.CLARABEL)
    before = torch.cat([p.detach().reshape(-1) for p in shared])
    step = WeightedMTL(model, data, 0, "mgda", {}, batch_size=16, optimizer="sgd", lr=1.0)
    stats = step.step(0)
    after = torch.cat([p.detach().reshape(-1) for p in shared])
    np.testing.assert_allclose((before - after).numpy(), matrix.T @ gamma.value, atol=1e-5)
    np.testing.assert_allclose([stats["weight_task0"], stats["weight_task1"]], gamma.value, atol=1e-4)


def final_model(out_dir):
    return torch.load(out_dir / "final.pt", weights_only=False)["model"]


METHODS = [{"name": "mean"}, {"name": "mgda"}, {"name": "normal", "ode_steps": 4},
           {"name": "moml", "lower_steps": 3, "lower_lr": 0.3, "alpha_lr": 10.0},
           {"name": "moml", "combiner": "moco", "lower_steps": 3, "lower_lr": 0.3, "alpha_lr": 10.0},
           {"name": "forum", "lower_steps": 3, "lower_lr": 0.3, "alpha_lr": 10.0, "omega_lr": 0.3, "rho": 0.5}]


def method_id(w):
    return w["name"] + ("_" + w["combiner"] if "combiner" in w else "")


@pytest.mark.parametrize("weighting", METHODS, ids=method_id)
def test_same_seed_same_numbers_and_resume_equals_uninterrupted(split, tmp_path, weighting):
    exp = experiment(weighting, iterations=8)
    runner.train(exp, 0, split, tmp_path / "whole", progress=False)
    runner.train(exp, 0, split, tmp_path / "again", progress=False)
    stopped = runner.train(exp, 0, split, tmp_path / "parts", progress=False, stop_after=4, checkpoint_every=1000)
    assert stopped == {"stopped_at": 4}
    summary = runner.train(exp, 0, split, tmp_path / "parts", progress=False)
    assert summary["resumed_from"] == 4 and not (tmp_path / "parts" / "resume.pt").exists()
    whole = final_model(tmp_path / "whole")
    for other in ("again", "parts"):
        state = final_model(tmp_path / other)
        assert all(torch.equal(whole[k], state[k]) for k in whole)
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole/curve.csv"),
                                      pd.read_csv(tmp_path / other / "curve.csv"))
    runner.train(exp, 1, split, tmp_path / "seed1", progress=False)
    seed1 = final_model(tmp_path / "seed1")
    assert any(not torch.equal(whole[k], seed1[k]) for k in whole)


def test_hyper_cleaning_lower_objective_is_the_sigmoid_weighted_training_loss(split):
    data, model = setup(split)
    problem = HyperCleaning(model, data, 0, batch_size=16, upper_batch_size=15, upper_split="val")
    alpha = torch.randn(problem.offsets[-1])
    omega = problem.initial_omega()
    batch = problem.lower_batch(3)
    expected = 0.0
    for i, b in enumerate(batch):
        for j, index in enumerate(b.indices.tolist()):
            weight = 1 / (1 + np.exp(-float(alpha[problem.offsets[i] + index])))
            loss = float(torch.nn.functional.cross_entropy(model(b.x[j:j + 1], i), b.y[j:j + 1]))
            expected += weight * loss / len(b.indices)
    assert float(problem.lower_objective(alpha, omega, batch)) == pytest.approx(expected, rel=1e-5)
    upper = problem.upper_objectives(alpha, omega, problem.upper_batch(3))
    assert upper.shape == (2,) and torch.all(upper > 0)


@pytest.mark.parametrize("lower_batches", ["iteration", "step"])
def test_hyper_cleaning_hypergradient_matches_finite_differences(split, lower_batches):
    """∂F_i(ω_T(α))/∂α for a few per-sample logits of the LL batches, in float64."""
    data, model = setup(split, hidden=(5,))
    model = model.double()
    for pairs in data.tensors.values():
        pairs[:] = [(x.double(), y) for x, y in pairs]
    steps = 4
    problem = HyperCleaning(model, data, 0, batch_size=8, upper_batch_size=10, upper_split="val",
                            lower_batches=lower_batches, steps_per_iteration=steps)
    alpha = 0.3 * torch.randn(problem.offsets[-1], dtype=torch.float64)
    omega0 = problem.initial_omega()
    lower, upper = problem.lower_batch(0), problem.upper_batch(0)
    _, grads, _ = unrolled_hypergradients(problem, alpha, omega0, lower, upper, steps, 0.5)
    seen = torch.zeros(problem.offsets[-1], dtype=torch.bool)
    probes = []
    for t in range(steps):
        for i, b in enumerate(batch_for_step(lower, t)):
            seen[problem.offsets[i] + b.indices] = True
            probes.append(problem.offsets[i] + int(b.indices[t]))

    def objectives(a):
        return problem.upper_objectives(
            a, lower_descent(problem, a, omega0, lower, steps, 0.5, differentiable=False), upper)

    for index in probes[::2]:
        shift = torch.zeros_like(alpha)
        shift[index] = 1e-6
        numeric = (objectives(alpha + shift) - objectives(alpha - shift)) / 2e-6
        torch.testing.assert_close(grads[:, index], numeric, rtol=1e-5, atol=1e-9)
    assert torch.all(grads[:, ~seen] == 0)  # samples outside the LL batches get no hypergradient
    assert int(seen.sum()) == (8 if lower_batches == "iteration" else 8 * steps) * 2


@pytest.mark.parametrize("weighting", [METHODS[3], METHODS[5]], ids=method_id)
def test_bilevel_methods_down_weight_corrupted_samples(split, tmp_path, weighting):
    exp = experiment({**weighting, "lower_steps": 5}, iterations=30, select_on=None, curve_every=30)
    runner.train(exp, 0, split, tmp_path, progress=False)
    last = pd.read_csv(tmp_path / "curve.csv").iloc[-1]
    for task in ("task0", "task1"):
        assert last[f"sample_weight_corrupted_{task}"] < last[f"sample_weight_clean_{task}"]


def test_evaluate_writes_one_row_per_task_with_metrics(split, tmp_path):
    exp = experiment({"name": "mean"}, iterations=6)
    runner.train(exp, 0, split, tmp_path, progress=False)
    summary = runner.evaluate(tmp_path / "final.pt", split, tmp_path)
    frame = pd.read_csv(tmp_path / "eval.csv")
    assert list(frame.columns) == ["task", "accuracy", "f1", "loss"] and list(frame.task) == ["task0", "task1"]
    assert summary["mean_accuracy"] == pytest.approx(frame.accuracy.mean())
    assert summary["selected_iteration"] in (0, 3, 6)
    data, _ = setup(split)
    model = MultiTaskNet(data.input_dim, [12, 8], data.num_classes)
    model.load_state_dict(final_model(tmp_path))
    for i, row in frame.iterrows():
        batch = data.split("test", i)
        predictions = model(batch.x, i).argmax(1)
        assert row.accuracy == pytest.approx(100 * float((predictions == batch.y).float().mean()))


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 5, 300), rng.integers(0, 4, 300)
    assert macro_f1(labels, predictions) == pytest.approx(f1_score(labels, predictions, average="macro"))


def test_runner_rejects_bad_configs(split, tmp_path):
    with pytest.raises(ValueError, match="mtl.bogus"):
        runner.check_experiment(experiment({"name": "mean"}, bogus=1))
    with pytest.raises(ValueError, match="weighting.rho"):
        runner.check_experiment(experiment({"name": "moml", "rho": 0.3}))
    with pytest.raises(ValueError, match="weighting.name"):
        runner.check_experiment(experiment({"name": "nope"}))
    with pytest.raises(ValueError, match="weighting.ode_step"):
        runner.check_experiment(experiment({"name": "normal", "ode_step": 3}))
    with pytest.raises(ValueError, match="weighting.combiner_options.c"):
        runner.check_experiment(experiment({"name": "moml", "combiner_options": {"c": 0.4}}))
    with pytest.raises(ValueError, match="mtl.select_on"):
        runner.train(experiment({"name": "mean"}, select_on="val3"), 0, split, tmp_path, progress=False)
