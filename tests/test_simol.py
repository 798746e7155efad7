"""SIMOL's weighting against closed forms and finite differences."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskbal.weighting import TaskGradients, build_weighting
from taskbal.weighting.simol import SIMOL, ThetaAscent


def tasks(k=6, d=20, f=4, seed=0, scale=1.0) -> TaskGradients:
    g = torch.Generator().manual_seed(seed)
    return TaskGradients(losses=torch.rand(k, generator=g, dtype=torch.float64),
                         grads=scale * torch.randn(k, d, generator=g, dtype=torch.float64),
                         features=torch.randn(k, f, generator=g, dtype=torch.float64),
                         params=torch.zeros(d, dtype=torch.float64), iteration=0, generator=g)


def test_objective_gradient_in_r_matches_the_closed_form():
    simol = SIMOL(20, 4, seed=0, lambda_grad=0.3, lambda_mean=0.7)
    batch = tasks()
    gram = batch.grads @ batch.grads.T
    r = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    (grad,) = torch.autograd.grad(simol.objective(r, gram), r)
    k = 6
    closed = -(gram @ r.detach()) / (0.3 * k**2) - 0.7 / k * (r.detach().mean() - 1)
    torch.testing.assert_close(grad, closed)


@pytest.mark.parametrize("k", [1, 5])
def test_maximiser_over_free_weights_matches_the_linear_solve(k):
    """K̃ is concave in r; its maximiser solves (G/(λ'k²) + λ''/k² 11ᵀ) r = λ''/k 1.
    For k = 1 that is r* = λ''/(λ'' + ‖g‖²/λ')."""
    lam1, lam2 = 2.0, 0.5
    simol = SIMOL(20, 4, seed=0, lambda_grad=lam1, lambda_mean=lam2)
    batch = tasks(k=k, scale=0.3)
    gram = batch.grads @ batch.grads.T
    r = torch.ones(k, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([r], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = -simol.objective(r, gram)
        loss.backward()
        return loss

    optimizer.step(closure)
    system = gram.numpy() / (lam1 * k**2) + lam2 / k**2 * np.ones((k, k))
    expected = np.linalg.solve(system, lam2 / k * np.ones(k))
    np.testing.assert_allclose(r.detach().numpy(), expected, rtol=1e-5)
    if k == 1:
        norm_sq = float(gram[0, 0])
        assert expected[0] == pytest.approx(lam2 / (lam2 + norm_sq / lam1))


def test_direction_is_the_mean_of_reweighted_gradients_and_starts_near_mean():
    simol = build_weighting("simol", 20, 4, seed=3)
    batch = tasks(seed=2)
    with torch.no_grad():
        r = simol.weights(batch)
    out = simol.combine(batch)
    torch.testing.assert_close(out.direction, (r[:, None] * batch.grads).mean(0))
    assert r.min() > 0.9 and r.max() < 1.1  # initialised so the first steps are MAML's


def test_theta_step_is_gradient_ascent_checked_by_finite_differences():
    lr = 1e-3
    simol = SIMOL(20, 4, seed=0, theta_lr=lr, lambda_grad=1.0, lambda_mean=1.0, theta_optimizer="sgd")
    simol.to(dtype=torch.float64)
    batch = tasks(seed=4)
    gram = batch.grads @ batch.grads.T
    param = simol.net[0].weight
    before = param.detach().clone()

    def objective_with(entry_value):
        with torch.no_grad():
            saved = param[1, 2].item()
            param[1, 2] = entry_value
            value = simol.objective(simol.weights(batch), gram).item()
            param[1, 2] = saved
        return value

    eps = 1e-6
    x0 = before[1, 2].item()
    finite_difference = (objective_with(x0 + eps) - objective_with(x0 - eps)) / (2 * eps)
    simol.combine(batch)
    step = (param.detach()[1, 2] - before[1, 2]).item()
    assert step == pytest.approx(lr * finite_difference, rel=1e-4, abs=1e-12)


def test_theta_at_next_defers_the_update_to_after_step():
    simol = SIMOL(20, 4, seed=0, theta_at="next")
    assert simol.needs_gradients_after_step
    batch = tasks(seed=5)
    before = [p.detach().clone() for p in simol.net.parameters()]
    simol.combine(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, simol.net.parameters()))
    assert "simol_objective" in simol.after_step(tasks(seed=6))
    assert not all(torch.equal(a, b) for a, b in zip(before, simol.net.parameters()))


def test_state_round_trip_gives_identical_weights():
    a = SIMOL(20, 4, seed=0)
    a.combine(tasks(seed=7))
    b = SIMOL(20, 4, seed=1)
    b.load_state_dict(a.state_dict())
    batch = tasks(seed=8)
    torch.testing.assert_close(a.combine(batch).direction, b.combine(batch).direction)


def test_bad_option_names_the_key():
    with pytest.raises(ValueError, match="weighting.theta_at"):
        build_weighting("simol", 20, 4, 0, theta_at="later")


@pytest.mark.parametrize("features", ["support", "support+loss"])
def test_closed_form_theta_gradient_matches_autograd(features):
    simol = SIMOL(20, 4, seed=0, lambda_grad=0.3, lambda_mean=0.7, features=features, hidden=[8, 5, 6])
    simol.to(dtype=torch.float64)
    with torch.no_grad():  # move r away from its initial ≈ 1 so every term of K̃ matters
        simol.net[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    batch = tasks(seed=9)
    objective, gradient, r = simol.theta_gradients(batch)
    reference = simol.objective(simol.weights(batch), batch.grads @ batch.grads.T)
    expected = torch.autograd.grad(reference, list(simol.net.parameters()))
    assert objective.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(r, simol.weights(batch).detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(gradient, torch.cat([g.reshape(-1) for g in expected]), rtol=1e-10, atol=1e-14)
    theta = simol.theta  # θ is the network's storage: its layers are views of it
    assert all(p.untyped_storage().data_ptr() == theta.untyped_storage().data_ptr() for p in simol.net.parameters())


@pytest.mark.parametrize("method", ["sgd", "adam"])
def test_theta_ascent_matches_torch_optimisers_maximising(method):
    """ThetaAscent on one flat tensor = torch.optim.SGD / Adam with maximize=True, step by step."""
    generator = torch.Generator().manual_seed(11)
    start = torch.randn(30, dtype=torch.float64, generator=generator)
    mine = start.clone()
    ascent = ThetaAscent(mine, method, lr=0.05)
    theirs = torch.nn.Parameter(start.clone())
    optimiser = (torch.optim.SGD if method == "sgd" else torch.optim.Adam)([theirs], lr=0.05, maximize=True,
                                                                           foreach=False)
    for _ in range(7):
        gradient = torch.randn(30, dtype=torch.float64, generator=generator)
        ascent.step(gradient)
        theirs.grad = gradient.clone()
        optimiser.step()
        torch.testing.assert_close(mine, theirs.detach(), rtol=1e-14, atol=1e-15)
    restored = ThetaAscent(mine.clone(), method, lr=0.05)
    restored.load_state_dict(ascent.state_dict())
    gradient = torch.randn(30, dtype=torch.float64, generator=generator)
    ascent.step(gradient)
    restored.step(gradient)
    torch.testing.assert_close(restored.theta, mine, rtol=0, atol=0)


def test_moving_to_another_precision_keeps_the_network_and_theta_in_step():
    simol = SIMOL(20, 4, seed=0)
    before = simol.weights(tasks(seed=1)).double()
    simol.to(dtype=torch.float64)
    assert simol.theta.dtype == torch.float64 and simol.net[0].weight.dtype == torch.float64
    torch.testing.assert_close(simol.weights(tasks(seed=1)), before, rtol=1e-6, atol=0)
    simol.combine(tasks(seed=2))  # the step moves the network through its views of θ
    assert not torch.allclose(simol.weights(tasks(seed=1)), before)


def test_unknown_theta_optimizer_names_the_key():
    with pytest.raises(ValueError, match="weighting.theta_optimizer"):
        build_weighting("simol", 20, 4, 0, theta_optimizer="rmsprop")


def image_tasks(k=4, images=3, side=16, seed=0) -> TaskGradients:
    g = torch.Generator().manual_seed(seed)
    return TaskGradients(losses=torch.rand(k, generator=g, dtype=torch.float64),
                         grads=torch.randn(k, 20, generator=g, dtype=torch.float64),
                         features=torch.rand(k, images * 3 * side * side, generator=g, dtype=torch.float64),
                         params=torch.zeros(20, dtype=torch.float64), iteration=0, generator=g)


@pytest.mark.parametrize("features", ["support", "support+loss"])
def test_image_reweighting_network_ascends_along_finite_differences(features):
    """The conv4 + 3-layer FC network of the image tables: r > 0 per task, starting near 1, and the θ step
    of plain ascent equals β' times central differences of K̃ (float64) at entries of a conv filter, of
    BatchNorm's scale and of the first linear layer."""
    lr = 1e-3
    simol = SIMOL(20, (3, 3, 16, 16), seed=0, theta_lr=lr, lambda_grad=0.3, lambda_mean=0.7, theta_optimizer="sgd",
                  network="conv4", filters=4, features=features)
    simol.to(dtype=torch.float64)
    batch = image_tasks()
    r = simol.weights(batch)
    assert r.shape == (4,) and (r > 0).all() and torch.allclose(r, torch.ones(4, dtype=torch.float64), atol=0.05)
    with torch.no_grad():  # move r away from ≈ 1 so every term of K̃ matters
        simol.net.head[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    gram = batch.grads @ batch.grads.T
    entries = [(simol.net.trunk.blocks[0].conv.weight, (1, 2, 0, 1)), (simol.net.trunk.blocks[2].norm.weight, (3,)),
               (simol.net.head[0].weight, (5, 7))]
    before = [param.detach()[index].item() for param, index in entries]

    def objective_with(param, index, value):
        with torch.no_grad():
            saved = param[index].item()
            param[index] = value
            result = simol.objective(simol.weights(batch), gram).item()
            param[index] = saved
        return result

    eps = 1e-6
    differences = [(objective_with(p, i, x + eps) - objective_with(p, i, x - eps)) / (2 * eps)
                   for (p, i), x in zip(entries, before)]
    simol.combine(batch)
    for (param, index), x, difference in zip(entries, before, differences):
        assert param.detach()[index].item() - x == pytest.approx(lr * difference, rel=1e-5, abs=1e-13)


def test_image_reweighting_network_needs_image_features():
    with pytest.raises(ValueError, match="weighting.network: conv4 reads support images"):
        build_weighting("simol", 20, 4, 0, network="conv4")
    with pytest.raises(ValueError, match="weighting.network"):
        build_weighting("simol", 20, 4, 0, network="resnet")
