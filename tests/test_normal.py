"""NORMAL (thesis Ch. 5): the Euler-integrated heavy-ball NODE against its closed form on a linear
field, and the task-position gradient (Eq. 5.11) against finite differences and autograd."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from taskbal.mtl.blobs import Tasks as BlobTasks
from taskbal.mtl.blobs import write_splits
from taskbal.mtl.data import MultiTaskData
from taskbal.mtl.model import MultiTaskNet
from taskbal.mtl.normal import NORMAL, HeavyBallODE, NormalNeck
from taskbal.mtl.weighted import task_loss

F64 = torch.float64


class Scale(nn.Module):
    """z ↦ c z: a linear map, so the ODE has a closed-form solution."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, z):
        return self.c * z


def damped_oscillator(z0: torch.Tensor, v0: torch.Tensor, gamma: float, k: float, t: float):
    """z(t) and z'(t) of z'' + γ z' + k z = 0 (underdamped: k > γ²/4)."""
    w = math.sqrt(k - gamma**2 / 4)
    c1, c2 = z0, (v0 + gamma / 2 * z0) / w
    decay = math.exp(-gamma * t / 2)
    z = decay * (c1 * math.cos(w * t) + c2 * math.sin(w * t))
    dz = -gamma / 2 * z + decay * (-c1 * w * math.sin(w * t) + c2 * w * math.cos(w * t))
    return z, dz


@pytest.mark.parametrize("position", [1.3, -0.7])
def test_heavy_ball_euler_converges_to_the_closed_form(position):
    """dz/dt = −q, dq/dt = −γq + a z + ξ z, q(0) = b z0  ⇔  z'' + γ z' + (a + ξ) z = 0 with
    z'(0) = −b z0: an underdamped oscillator for a + ξ > γ²/4, integrated forwards and backwards."""
    a, xi, b, damping_logit = 3.0, 0.5, 0.4, 0.3
    gamma = 1 / (1 + math.exp(-damping_logit))
    z0 = torch.tensor([[0.8, -1.2, 0.3]], dtype=F64)
    z_exact, dz_exact = damped_oscillator(z0, -b * z0, gamma, a + xi, position)
    errors = []
    for steps in (50, 500, 5000):
        ode = HeavyBallODE(3, ode_steps=steps, xi=xi, damping_init=damping_logit,
                           velocity=Scale(b), field=Scale(a)).double()
        z, dz = ode(z0, torch.tensor(position, dtype=F64))
        errors.append(float((z - z_exact).abs().max()))
        if steps == 5000:
            torch.testing.assert_close(dz, dz_exact, atol=2e-3, rtol=0)
    assert errors[0] > 5 * errors[1] > 25 * errors[2]  # first-order convergence of explicit Euler
    assert errors[2] < 1e-3


def test_first_order_node_converges_to_the_exponential():
    ode = HeavyBallODE(2, ode_steps=4000, order=1, field=Scale(0.7)).double()
    z0 = torch.tensor([[1.0, -2.0]], dtype=F64)
    z, dz = ode(z0, torch.tensor(1.5, dtype=F64))
    torch.testing.assert_close(z, z0 * math.exp(0.7 * 1.5), rtol=1e-3, atol=0)
    torch.testing.assert_close(dz, 0.7 * z, rtol=1e-12, atol=0)


def neck_loss(neck: NormalNeck, head: nn.Module, features, labels, position: float) -> torch.Tensor:
    with torch.no_grad():
        neck.positions[0] = position
        z, _ = neck(features, 0)
        return task_loss(head(z), labels)


@pytest.fixture
def tiny_neck():
    torch.manual_seed(0)
    neck = NormalNeck(4, 1, init_position=0.9, ode_steps=10).double()
    head = nn.Linear(4, 3).double()
    features = torch.randn(16, 4, dtype=F64)
    labels = torch.randint(0, 3, (16,))
    return neck, head, features, labels


def manual_position_gradient(neck, head, features, labels) -> float:
    z, velocity = neck(features, 0)
    (grad_z,) = torch.autograd.grad(task_loss(head(z), labels), z)
    return float(torch.sum(grad_z * velocity))  # Eq. 5.11: ⟨∂L/∂z(p), dz/dt(p)⟩ = −⟨∂L/∂z(p), q(p)⟩


def test_manual_position_gradient_matches_finite_differences_of_the_flow(tiny_neck):
    """With a fine Euler grid the map p ↦ L(z(p)) is the ODE's, and its derivative is Eq. 5.11."""
    neck, head, features, labels = tiny_neck
    neck.ode.steps = 4000
    manual = manual_position_gradient(neck, head, features, labels)
    h = 1e-4
    numeric = (neck_loss(neck, head, features, labels, 0.9 + h)
               - neck_loss(neck, head, features, labels, 0.9 - h)) / (2 * h)
    assert manual == pytest.approx(float(numeric), rel=2e-3)


def test_manual_and_autograd_position_gradients_agree_as_the_grid_refines(tiny_neck):
    neck, head, features, labels = tiny_neck
    gaps = []
    for steps in (5, 50, 500):
        neck.ode.steps = steps
        manual = manual_position_gradient(neck, head, features, labels)
        z, _ = neck(features, 0)
        (autograd,) = torch.autograd.grad(task_loss(head(z), labels), neck.positions)
        gaps.append(abs(manual - float(autograd[0])))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * max(1.0, abs(manual))


@pytest.fixture
def normal_setup(tmp_path):
    path = tmp_path / "blobs.npz"
    write_splits(path, {"family": "mtl_blobs", "tasks": 2, "classes": 3, "dim": 5, "train": 64, "val": 20,
                        "val2": 20, "test": 20})
    data = MultiTaskData(BlobTasks(path))
    return data


@pytest.mark.parametrize("position_gradient", ["manual", "autograd"])
def test_normal_step_moves_each_position_along_its_own_gradient(normal_setup, position_gradient):
    """p_i ← p_i − η d_{p_i} (Alg. 4 line 7): compared with finite differences of L_i(p_i) on the same batch."""
    data = normal_setup
    torch.manual_seed(1)
    neck = NormalNeck(6, 2, init_position=1.0, ode_steps=400)
    model = MultiTaskNet(data.input_dim, [6], data.num_classes, neck).double()
    for pairs in data.tensors.values():  # float64 data so finite differences are accurate
        pairs[:] = [(x.double(), y) for x, y in pairs]
    batches = data.batch("train", 0, 0, 16, "train")

    def loss_at(task, position):
        with torch.no_grad():
            saved = neck.positions[task].item()
            neck.positions[task] = position
            value = float(task_loss(model(batches[task].x, task), batches[task].y))
            neck.positions[task] = saved
            return value

    h = 1e-5
    numeric = [(loss_at(i, 1.0 + h) - loss_at(i, 1.0 - h)) / (2 * h) for i in range(2)]
    step = NORMAL(model, data, 0, position_lr=0.5, position_gradient=position_gradient, batch_size=16,
                  optimizer="sgd", lr=1e-3)
    step.step(0)
    moved = [(1.0 - float(neck.positions[i])) / 0.5 for i in range(2)]
    tolerance = 1e-6 if position_gradient == "autograd" else 1e-2  # manual: O(h) Euler discretisation gap
    assert moved == pytest.approx(numeric, rel=tolerance, abs=1e-9)


def test_fixed_positions_do_not_move(normal_setup):
    data = normal_setup
    neck = NormalNeck(6, 2, init_position=1.25)
    model = MultiTaskNet(data.input_dim, [6], data.num_classes, neck)
    step = NORMAL(model, data, 0, learn_positions=False, batch_size=16)
    step.step(0)
    assert torch.equal(neck.positions.detach(), torch.full((2,), 1.25))


def test_normal_rejects_bad_options(normal_setup):
    data = normal_setup
    model = MultiTaskNet(data.input_dim, [6], data.num_classes, NormalNeck(6, 2))
    with pytest.raises(ValueError, match="weighting.position_gradient"):
        NORMAL(model, data, 0, position_gradient="adjoint", batch_size=16)
    with pytest.raises(ValueError, match="weighting.ode_steps"):
        HeavyBallODE(4, ode_steps=0)


def test_exp_positions_step_follows_the_chain_rule(normal_setup):
    """p_i = e^{v_i} (Table 5.4's "different form"): the manual step on v is −η d_{p_i} e^{v_i}, which on a fine
    Euler grid matches finite differences of L_i in v."""
    data = normal_setup
    torch.manual_seed(1)
    neck = NormalNeck(6, 2, init_position=[1.0, 1.5], position_form="exp", ode_steps=400)
    model = MultiTaskNet(data.input_dim, [6], data.num_classes, neck).double()
    for pairs in data.tensors.values():
        pairs[:] = [(x.double(), y) for x, y in pairs]
    batches = data.batch("train", 0, 0, 16, "train")
    start = neck.positions.detach().clone()
    torch.testing.assert_close(neck.effective_positions().detach(), torch.tensor([1.0, 1.5], dtype=F64))

    def loss_at(task, v):
        with torch.no_grad():
            saved = neck.positions[task].item()
            neck.positions[task] = v
            value = float(task_loss(model(batches[task].x, task), batches[task].y))
            neck.positions[task] = saved
            return value

    h = 1e-5
    numeric = [(loss_at(i, float(start[i]) + h) - loss_at(i, float(start[i]) - h)) / (2 * h) for i in range(2)]
    step = NORMAL(model, data, 0, position_lr=0.5, batch_size=16, optimizer="sgd", lr=1e-3)
    stats = step.step(0)
    moved = [(float(start[i]) - float(neck.positions[i])) / 0.5 for i in range(2)]
    assert moved == pytest.approx(numeric, rel=1e-2, abs=1e-9)
    assert stats["position_" + data.names[1]] == pytest.approx(math.exp(float(neck.positions[1])))


def test_positions_per_task_and_their_checks():
    assert torch.equal(NormalNeck(4, 3, init_position=[1.0, 1.25, 1.5]).positions.detach(),
                       torch.tensor([1.0, 1.25, 1.5]))
    with pytest.raises(ValueError, match="weighting.init_position"):
        NormalNeck(4, 3, init_position=[1.0, 1.25])
    with pytest.raises(ValueError, match="weighting.init_position"):
        NormalNeck(4, 2, init_position=[1.0, -1.0], position_form="exp")
    with pytest.raises(ValueError, match="weighting.position_form"):
        NormalNeck(4, 2, position_form="softplus")
