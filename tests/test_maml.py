"""The batched MAML learner against learn2learn and against finite differences."""
from __future__ import annotations

import learn2learn as l2l
import pytest
import torch

from taskbal.learners import MAML, TaskBatch
from taskbal.models import MLP


def random_tasks(k: int, shots: int, seed: int, dtype=torch.float64) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    amplitude = torch.rand(k, 1, 1, generator=g, dtype=dtype) * 4.9 + 0.1
    phase = torch.rand(k, 1, 1, generator=g, dtype=dtype) * torch.pi
    xs = torch.rand(k, shots, 1, generator=g, dtype=dtype) * 10 - 5
    xq = torch.rand(k, shots, 1, generator=g, dtype=dtype) * 10 - 5
    return TaskBatch(xs, amplitude * torch.sin(xs + phase), xq, amplitude * torch.sin(xq + phase),
                     torch.zeros(k, 1, dtype=dtype))


def learn2learn_per_task_gradients(model, batch: TaskBatch, steps: int, lr: float, first_order: bool):
    maml = l2l.algorithms.MAML(model, lr=lr, first_order=first_order)
    grads = []
    for i in range(batch.num_tasks):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(((learner(batch.support_x[i]) - batch.support_y[i]) ** 2).mean())
        query_loss = ((learner(batch.query_x[i]) - batch.query_y[i]) ** 2).mean()
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(query_loss, list(model.parameters()))]))
    return torch.stack(grads)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradients_equal_learn2learn(first_order):
    torch.manual_seed(0)
    model = MLP(1, [32, 32], 1).double()
    batch = random_tasks(16, 5, seed=1)
    ours = MAML(model, inner_steps=5, inner_lr=0.01, first_order=first_order)
    losses, grads = ours.meta_gradients(batch)
    reference = learn2learn_per_task_gradients(model, batch, 5, 0.01, first_order)
    assert grads.shape == reference.shape == (16, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(grads, reference, rtol=0, atol=1e-5)
    # The mean over tasks is what plain MAML steps along.
    torch.testing.assert_close(grads.mean(0), reference.mean(0), rtol=0, atol=1e-5)


def test_second_order_differs_from_first_order():
    torch.manual_seed(0)
    model = MLP(1, [32, 32], 1).double()
    batch = random_tasks(4, 5, seed=2)
    second = MAML(model, inner_steps=5, inner_lr=0.05).meta_gradients(batch)[1]
    first = MAML(model, inner_steps=5, inner_lr=0.05, first_order=True).meta_gradients(batch)[1]
    assert (second - first).abs().max() > 1e-4


def meta_loss(learner: MAML, flat: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Sum over tasks of the query loss after adaptation from meta-parameters ``flat``."""
    params = learner.unflatten(flat.clone().requires_grad_())
    copies = {n: p.unsqueeze(0).repeat(batch.num_tasks, *([1] * p.dim())) for n, p in params.items()}
    adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=True)
    return learner.task_losses(adapted, batch.query_x, batch.query_y).sum()


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_meta_gradient_matches_finite_differences(inner_optimizer):
    torch.manual_seed(3)
    model = MLP(1, [8, 8], 1).double()
    batch = random_tasks(3, 4, seed=4)
    learner = MAML(model, inner_steps=3, inner_lr=0.05, inner_optimizer=inner_optimizer)
    _, grads = learner.meta_gradients(batch)
    flat = learner.flat_meta_parameters()
    direction = torch.randn(flat.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = 1e-6
    with torch.enable_grad():
        plus = meta_loss(learner, flat + eps * direction, batch).item()
        minus = meta_loss(learner, flat - eps * direction, batch).item()
    finite_difference = (plus - minus) / (2 * eps)
    assert grads.sum(0) @ direction == pytest.approx(finite_difference, rel=1e-5, abs=1e-8)


def test_vmap_path_equals_batched_forward():
    torch.manual_seed(0)
    model = MLP(1, [16, 16], 1).double()
    batch = random_tasks(5, 5, seed=6)
    fast = MAML(model, inner_steps=2, inner_lr=0.01)
    generic = MAML(model, inner_steps=2, inner_lr=0.01)
    generic._batched_forward = torch.func.vmap(generic._forward_one_task)
    torch.testing.assert_close(fast.meta_gradients(batch)[1], generic.meta_gradients(batch)[1])


def test_adapted_losses_at_other_parameters():
    torch.manual_seed(0)
    model = MLP(1, [16], 1).double()
    batch = random_tasks(4, 5, seed=7)
    learner = MAML(model, inner_steps=2, inner_lr=0.01)
    flat = learner.flat_meta_parameters()
    at_current = learner.adapted_query_losses(batch)
    torch.testing.assert_close(learner.adapted_query_losses(batch, flat.clone()), at_current)
    assert not torch.allclose(learner.adapted_query_losses(batch, flat + 0.1), at_current)
    torch.testing.assert_close(learner.meta_gradients(batch)[0], at_current)


def test_unknown_inner_optimizer_names_the_key():
    with pytest.raises(ValueError, match="learner.inner_optimizer"):
        MAML(MLP(1, [4], 1), inner_optimizer="rmsprop")
