"""SIMOL for prototypical networks (SIMOL Algorithm 3): the ``simol`` weighting on the ``protonet``
learner, with the re-weighting network reading each task's support set (the few-shot blob family).

References: the outer direction against central finite differences of the r-weighted mean of
per-task ProtoNet losses written independently (a loop over tasks and classes); the θ step against
finite differences of K̃_B written over the gradient vectors (not the Gram matrix); a short
end-to-end run through the training loop and the evaluation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from taskbal.data import family_module
from taskbal.data.fewshot_blobs import Tasks, write_splits
from taskbal.evaluate import evaluate
from taskbal.learners import ProtoNet
from taskbal.models import build_model
from taskbal.train import train
from taskbal.weighting import TaskGradients, build_weighting

F64 = torch.float64
DATA = {"family": "fewshot_blobs", "ways": 3, "shots": 2, "query": 3, "dim": 4, "train_tasks": 400,
        "val_tasks": 20, "test_tasks": 60, "split_seed": 5}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("fewshot") / "blobs.npz"
    write_splits(path, DATA)
    return path


def setup(split, seed=0, init_scale=0.5):
    tasks = Tasks(split)
    torch.manual_seed(seed)
    model = build_model({"name": "mlp", "hidden": [8]}, tasks.io_dims).double()
    learner = ProtoNet(model)
    simol = build_weighting("simol", sum(p.numel() for p in learner.parameters()), tasks.feature_dim, seed,
                            init_scale=init_scale, theta_optimizer="sgd", theta_lr=1e-3, lambda_grad=0.5,
                            lambda_mean=2.0)
    simol.to(dtype=torch.float64)
    batch = tasks.batch("train", torch.arange(5))
    batch = type(batch)(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y,
                        batch.features.double())
    return tasks, model, learner, simol, batch


def reference_loss(model, flat, batch, task):
    """Task ``task``'s ProtoNet query loss at flat parameters: one task, prototypes by a loop over classes."""
    params, offset = {}, 0
    for name, p in model.named_parameters():
        params[name] = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    support = functional_call(model, params, (batch.support_x[task],))
    query = functional_call(model, params, (batch.query_x[task],))
    labels = batch.support_y[task]
    prototypes = torch.stack([support[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    logits = -torch.stack([((q - prototypes) ** 2).sum(1) for q in query])
    return F.cross_entropy(logits, batch.query_y[task])


def task_gradients(learner, batch) -> TaskGradients:
    losses, grads = learner.meta_gradients(batch)
    return TaskGradients(losses=losses, grads=grads, features=batch.features,
                         params=learner.flat_meta_parameters(), iteration=0,
                         generator=torch.Generator().manual_seed(0))


def test_family_is_registered_and_its_batches_are_consistent(split):
    assert family_module("fewshot_blobs").Tasks is Tasks
    tasks = Tasks(split)
    batch = tasks.batch("test", torch.tensor([3, 7]))
    assert batch.support_x.shape == (2, 6, 4) and batch.query_x.shape == (2, 9, 4)
    assert batch.support_y.tolist()[0] == [0, 0, 1, 1, 2, 2] and batch.query_y.dtype == torch.int64
    assert batch.features.shape == (2, tasks.feature_dim) and tasks.io_dims == (4, 3)
    table = tasks.task_table("test")
    assert len(table["spread"]) == 60 and np.all((table["spread"] >= 0.3) & (table["spread"] <= 2.0))


def test_bad_data_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="data.ways"):
        write_splits(tmp_path / "x.npz", {**DATA, "ways": 1})
    with pytest.raises(ValueError, match="data.spread"):
        write_splits(tmp_path / "x.npz", {**DATA, "spread": [2.0, 1.0]})
    with pytest.raises(ValueError, match="data.colour"):
        write_splits(tmp_path / "x.npz", {**DATA, "colour": 1})


def test_outer_direction_is_the_gradient_of_the_reweighted_protonet_losses(split):
    """d = (1/k) Σ r_θ(τ) ∇_w L_τ(w) with r_θ read from each task's support set (Alg. 3 line 9): checked
    along random directions by central differences of (1/k) Σ r_τ L_τ(w), L_τ written independently."""
    _, model, learner, simol, batch = setup(split)
    tasks = task_gradients(learner, batch)
    with torch.no_grad():
        r = simol.weights(tasks)
    assert float(r.max() - r.min()) > 0.05  # the tasks are weighted differently: the check sees r
    direction = simol.combine(tasks).direction
    flat = learner.flat_meta_parameters().detach()
    k = batch.num_tasks

    def objective(w):
        return sum(r[t] * reference_loss(model, w, batch, t) for t in range(k)) / k

    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(flat.shape, generator=generator, dtype=F64)
        eps = 1e-6
        numeric = (objective(flat + eps * v) - objective(flat - eps * v)) / (2 * eps)
        assert float(direction @ v) == pytest.approx(float(numeric), rel=1e-6, abs=1e-9)


def test_theta_step_ascends_the_objective_written_over_the_gradient_vectors(split):
    """θ ← θ + β' ∇_θ K̃_B(θ) (Alg. 3 line 10) with K̃_B = −‖(1/k) Σ r g‖²/(2λ') − λ''/2 ((1/k) Σ r − 1)²
    evaluated on the ProtoNet task gradients; ∇_θ by central differences on a few entries of θ."""
    _, _, learner, simol, batch = setup(split, seed=1)
    tasks = task_gradients(learner, batch)
    lr, lam1, lam2 = 1e-3, 0.5, 2.0

    def objective():
        r = simol.weights(tasks)
        mean_direction = (r[:, None] * tasks.grads).mean(0)
        return float(-mean_direction.pow(2).sum() / (2 * lam1) - lam2 / 2 * (r.mean() - 1) ** 2)

    entries = [(simol.net[0].weight, (0, 3)), (simol.net[0].weight, (5, 10)), (simol.net[-1].weight, (0, 7)),
               (simol.net[-1].bias, (0,))]
    numeric = []
    for param, index in entries:
        with torch.no_grad():
            saved = param[index].item()
            eps = 1e-6
            param[index] = saved + eps
            plus = objective()
            param[index] = saved - eps
            minus = objective()
            param[index] = saved
        numeric.append((plus - minus) / (2 * eps))
    before = [param[index].item() for param, index in entries]
    simol.combine(tasks)
    after = [param[index].item() for param, index in entries]
    for b, a, n in zip(before, after, numeric):
        assert (a - b) / lr == pytest.approx(n, rel=1e-5, abs=1e-9)


def test_simol_protonet_trains_and_evaluates_end_to_end(split, tmp_path):
    experiment = {
        "data": DATA,
        "model": {"name": "mlp", "hidden": [16]},
        "learner": {"name": "protonet"},
        "weighting": {"name": "simol", "theta_lr": 0.01},
        "outer": {"optimizer": "adam", "lr": 0.01, "meta_batch": 8, "iterations": 100},
        "evaluation": {"curve_every": 10},
    }
    summary = train(experiment, 0, split, tmp_path / "run", progress=False)
    curve = pd.read_csv(tmp_path / "run/curve.csv")
    stats = curve[["simol_r_mean", "simol_r_min", "simol_r_max", "simol_objective"]].iloc[1:]  # row 0: before any step
    assert np.isfinite(stats.to_numpy()).all() and (stats["simol_r_max"] > stats["simol_r_min"]).all()
    # the query cross-entropy (logged as *_mse by the loop) falls from its value at the initialisation
    assert summary["final_test_mse"] < 0.85 * curve["test_mse"].iloc[0]
    result = evaluate(tmp_path / "run/final.pt", split, tmp_path / "run")
    per_task = pd.read_csv(tmp_path / "run/eval.csv")
    assert len(per_task) == DATA["test_tasks"] and {"accuracy", "loss", "spread"} <= set(per_task.columns)
    assert result["accuracy_mean"] > 0.55  # chance is 1/3
    # harder tasks (closer class means) are classified worse: the family's difficulty is real
    assert np.corrcoef(per_task["min_gap"], per_task["accuracy"])[0, 1] > 0.3
    assert json.loads((tmp_path / "run/eval.json").read_text())["test_tasks"] == DATA["test_tasks"]
