"""TOW: the iLQR solver against exact LQR, the linearisations against autograd, the planned weights
against brute-force optimisation of the unrolled objective, and TOW inside the training loop."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import nn

from conftest import small_experiment
from taskbal.learners import MAML, TaskBatch
from taskbal.train import Run, train
from taskbal.weighting import build_weighting
from taskbal.weighting.tow import curvature as tow_curvature
from taskbal.weighting.tow import problem as tow_problem
from taskbal.weighting.tow.dynamics import AdamDynamics, SGDDynamics
from taskbal.weighting.tow.ilqr import Linearisation, Problem, ilqr, ilqr_backward, rollout
from taskbal.weighting.tow.problem import MetaProblem, StageEval, evaluate_learner

DT = torch.float64


# -- a linear-quadratic problem, solved exactly --------------------------------------------------
class LQProblem(Problem):
    """x' = A_t x + B_t u + d_t; c_t = qᵀx + ½xᵀQx + rᵀu + ½uᵀRu. The stage "evaluation" is x itself."""

    def __init__(self, gen, D, M, T, diagonal=False):
        self.horizon, self.D, self.M = T, D, M
        r = lambda *s: torch.randn(*s, generator=gen, dtype=DT)
        self.A = [torch.diag(1 + 0.3 * r(D)) if diagonal else torch.eye(D, dtype=DT) + 0.3 * r(D, D) for _ in range(T)]
        self.B = [r(D, M) for _ in range(T)]
        self.d = [r(D) for _ in range(T)]
        self.q = [r(D) for _ in range(T)]
        self.r = [r(M) for _ in range(T)]

        def spd(n, diag):
            if diag:
                return torch.diag(0.5 + r(n).abs())
            L = r(n, n)
            return L @ L.T / n + 0.5 * torch.eye(n, dtype=DT)
        self.Q = [spd(D, diagonal) for _ in range(T)]
        self.R = [spd(M, False) for _ in range(T)]
        self.u0 = [r(M) for _ in range(T)]

    def nominal_action(self, t):
        return self.u0[t]

    def stage(self, t, x):
        return (t, x)

    def cost(self, ev, u):
        t, x = ev
        return float(self.q[t] @ x + 0.5 * x @ self.Q[t] @ x + self.r[t] @ u + 0.5 * u @ self.R[t] @ u)

    def step(self, x, state, ev, u):
        t, _ = ev
        return self.A[t] @ x + self.B[t] @ u + self.d[t], None

    def linearise(self, x, state, ev, u):
        t, _ = ev
        diag = lambda m: torch.diagonal(m).clone() if self.diagonal_matrices else m
        return Linearisation(F_x=diag(self.A[t]), F_u=self.B[t], c_x=self.q[t] + self.Q[t] @ x,
                             c_u=self.r[t] + self.R[t] @ u, C_xx=diag(self.Q[t]), C_uu=self.R[t])

    diagonal_matrices = False

    def total_cost(self, x1, us):
        x, total = x1, 0.0
        for t in range(self.horizon):
            u = us[t]
            total = total + self.q[t] @ x + 0.5 * x @ self.Q[t] @ x + self.r[t] @ u + 0.5 * u @ self.R[t] @ u
            x = self.A[t] @ x + self.B[t] @ us[t] + self.d[t]
        return total


def qp_optimum(problem, x1):
    """The exact minimiser of the (quadratic) total cost over all actions: one Newton step from 0."""
    n = problem.horizon * problem.M
    f = lambda flat: problem.total_cost(x1, flat.view(problem.horizon, problem.M))
    zero = torch.zeros(n, dtype=DT)
    grad = torch.autograd.functional.jacobian(f, zero)
    hess = torch.autograd.functional.hessian(f, zero)
    return torch.linalg.solve(hess, -grad).view(problem.horizon, problem.M)


@pytest.mark.parametrize("seed", range(4))
def test_ilqr_solves_random_linear_quadratic_problems_exactly(seed):
    gen = torch.Generator().manual_seed(seed)
    problem = LQProblem(gen, D=5, M=3, T=4)
    x1 = torch.randn(5, generator=gen, dtype=DT)
    trajectory, _, _ = ilqr(problem, x1, None, iterations=1, value="full", line_search="none")
    torch.testing.assert_close(torch.stack(trajectory.us), qp_optimum(problem, x1), rtol=1e-8, atol=1e-8)


def test_ilqr_with_the_papers_line_search_converges_to_the_lqr_solution():
    """The paper's acceptance test also asks u ≥ 0: the instance is shifted so that its optimum is a
    given positive u*, and the nominal actions are positive."""
    gen = torch.Generator().manual_seed(11)
    problem = LQProblem(gen, D=4, M=2, T=5)
    x1 = torch.randn(4, generator=gen, dtype=DT)
    target = torch.rand(5, 2, generator=gen, dtype=DT) + 0.1
    shift = torch.autograd.functional.jacobian(lambda us: problem.total_cost(x1, us), target)
    problem.r = [r - g for r, g in zip(problem.r, shift)]
    problem.u0 = [torch.rand(2, generator=gen, dtype=DT) + 0.1 for _ in range(5)]
    torch.testing.assert_close(qp_optimum(problem, x1), target)
    trajectory, log, _ = ilqr(problem, x1, None, iterations=30, value="full", line_search="paper",
                              min_step=2.0 ** -30)
    assert log["line_search_failures"] < 30  # once at the optimum, θ₁ ≈ 0 and no trial is accepted
    torch.testing.assert_close(torch.stack(trajectory.us), target, rtol=1e-6, atol=1e-6)


def test_diagonal_value_is_exact_in_one_dimension():
    gen = torch.Generator().manual_seed(3)
    problem = LQProblem(gen, D=1, M=3, T=6, diagonal=True)
    problem.diagonal_matrices = True
    x1 = torch.randn(1, generator=gen, dtype=DT)
    trajectory, _, _ = ilqr(problem, x1, None, iterations=1, value="diagonal", line_search="none")
    torch.testing.assert_close(torch.stack(trajectory.us), qp_optimum(problem, x1), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("theta_form, should_match", [("inverse", True), ("printed", False)])
def test_theta_is_the_first_order_change_of_the_total_cost(theta_form, should_match):
    """θ₁ = dJ/dε at ε = 0 along u(ε) = û + K δx + ε k (Lemma 12) with Q_uu⁻¹; the printed Q_uu is not."""
    gen = torch.Generator().manual_seed(5)
    problem = LQProblem(gen, D=4, M=3, T=4)
    x1 = torch.randn(4, generator=gen, dtype=DT)
    nominal = rollout(problem, x1, None, None)
    stages = [problem.linearise(nominal.xs[t], None, nominal.evals[t], nominal.us[t]) for t in range(4)]
    gains, offsets, theta_1 = ilqr_backward(stages, "full", theta_form)
    h = 1e-6
    plus = rollout(problem, x1, None, nominal, gains, offsets, h).cost
    minus = rollout(problem, x1, None, nominal, gains, offsets, -h).cost
    slope = (plus - minus) / (2 * h)
    assert theta_1 < 0
    assert (abs(slope - theta_1) < 1e-5 * abs(slope)) == should_match


# -- the dynamics' linearisation -----------------------------------------------------------------
def separable_tasks(gen, M, D):
    """ℓ_i(x) = ½ Σ_d a_id (x_d − c_id)²: diagonal Hessians diag(a_i), gradients a_i ⊙ (x − c_i)."""
    a = torch.rand(M, D, generator=gen, dtype=DT) + 0.2
    c = torch.randn(M, D, generator=gen, dtype=DT)
    return a, c, lambda x: a * (x - c)


def test_adam_dynamics_replay_torch_adam():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, generator=gen, dtype=DT)
    param = nn.Parameter(x.clone())
    optimizer = torch.optim.Adam([param], lr=0.03, betas=(0.8, 0.99), eps=1e-6)
    dyn, state = AdamDynamics(0.03, (0.8, 0.99), 1e-6), None
    state = dyn.initial_state(x)
    for _ in range(6):
        g = torch.randn(7, generator=gen, dtype=DT)
        param.grad = g.clone()
        optimizer.step()
        x, state = dyn.step(x, state, g)
    torch.testing.assert_close(x, param.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_linearised_dynamics_match_autograd(kind):
    """F_x = I − diag(s) H_w and F_u = −diag(s) Jᵀ (Eqs. 91–105, Adam moments of the past held fixed)
    against autograd Jacobians of one optimiser step, where the Hessians are exactly diagonal."""
    gen = torch.Generator().manual_seed(1)
    M, D = 3, 6
    a, c, grads = separable_tasks(gen, M, D)
    x = torch.randn(D, generator=gen, dtype=DT)
    u = torch.rand(M, generator=gen, dtype=DT)
    if kind == "adam":
        dyn = AdamDynamics(0.01, (0.9, 0.999), 1e-8)
        state = (0.1 * torch.randn(D, generator=gen, dtype=DT), 0.1 * torch.rand(D, generator=gen, dtype=DT), 4)
    else:
        dyn, state = SGDDynamics(0.05), None
    step_x = lambda x_: dyn.step(x_, state, u @ grads(x_))[0]
    step_u = lambda u_: dyn.step(x, state, u_ @ grads(x))[0]
    problem = MetaProblem(None, 1, M, dyn, 10.0, None)
    lin = problem.linearise(x, state, StageEval(torch.zeros(M, dtype=DT), grads(x), a), u)
    torch.testing.assert_close(torch.diag(lin.F_x), torch.autograd.functional.jacobian(step_x, x))
    torch.testing.assert_close(lin.F_u, torch.autograd.functional.jacobian(step_u, u))
    torch.testing.assert_close(lin.C_xx, a.sum(0))
    torch.testing.assert_close(lin.c_x, grads(x).sum(0))


# -- Gauss–Newton curvature of real learners ------------------------------------------------------
def linear_learner(loss, inner_steps, in_dim=3, out_dim=1, first_order=False):
    torch.manual_seed(0)
    model = nn.Linear(in_dim, out_dim).to(DT)
    return MAML(model, inner_steps=inner_steps, inner_lr=0.1, first_order=first_order, loss=loss)


def regression_batch(gen, k, n_s=4, n_q=5, in_dim=3):
    r = lambda *s: torch.randn(*s, generator=gen, dtype=DT)
    return TaskBatch(r(k, n_s, in_dim), r(k, n_s, 1), r(k, n_q, in_dim), r(k, n_q, 1), torch.zeros(k, 1, dtype=DT))


def functional_query_loss(learner, batch, i, flat):
    """Task i's query loss at meta-parameters ``flat``, written out independently of the learner:
    one SGD inner step on the support MSE of a linear model, then the query MSE."""
    W, b = flat[:3].view(1, 3), flat[3:]
    loss = lambda W_, b_, x, y: ((x @ W_.T + b_ - y) ** 2).mean()
    gW, gb = torch.autograd.grad(loss(W, b, batch.support_x[i], batch.support_y[i]), (W, b), create_graph=True)
    return loss(W - 0.1 * gW, b - 0.1 * gb, batch.query_x[i], batch.query_y[i])


def test_gauss_newton_is_the_hessian_of_a_quadratic_meta_loss():
    """Linear model, MSE, one second-order inner step: the meta-loss is quadratic, its Gauss–Newton
    matrix is its Hessian."""
    gen = torch.Generator().manual_seed(2)
    learner, batch = linear_learner("mse", 1), regression_batch(gen, 3)
    flat = torch.randn(4, generator=gen, dtype=DT)
    full = evaluate_learner(learner, batch, flat, "full", through="meta")
    diag = evaluate_learner(learner, batch, flat, "diagonal", through="meta")
    for i in range(3):
        f = lambda z: functional_query_loss(learner, batch, i, z)
        torch.testing.assert_close(full.curvature[i], torch.autograd.functional.hessian(f, flat))
        torch.testing.assert_close(full.grads[i], torch.autograd.functional.jacobian(f, flat))
    torch.testing.assert_close(diag.curvature, torch.diagonal(full.curvature, dim1=1, dim2=2))
    torch.testing.assert_close(full.grads, learner_gradients_at(learner, batch, flat))


def learner_gradients_at(learner, batch, flat):
    with torch.no_grad():
        for p, new in zip(learner.parameters(), learner.unflatten(flat).values()):
            p.copy_(new)
    return learner.meta_gradients(batch)[1]


def test_gauss_newton_of_cross_entropy_is_the_hessian_of_a_linear_classifier():
    gen = torch.Generator().manual_seed(4)
    learner = linear_learner("cross_entropy", 0, in_dim=3, out_dim=4)
    k, n = 2, 6
    x = torch.randn(k, n, 3, generator=gen, dtype=DT)
    y = torch.randint(0, 4, (k, n), generator=gen)
    batch = TaskBatch(x, y, x, y, torch.zeros(k, 1, dtype=DT))
    flat = torch.randn(16, generator=gen, dtype=DT)
    full = evaluate_learner(learner, batch, flat, "full")
    for i in range(k):
        f = lambda z: nn.functional.cross_entropy(x[i] @ z[:12].view(4, 3).T + z[12:], y[i])
        torch.testing.assert_close(full.curvature[i], torch.autograd.functional.hessian(f, flat))


def test_gauss_newton_at_the_adapted_weights_of_a_nonlinear_network():
    """``through: adapted``: J_oᵀ H_o J_o at the adapted weights φ_i, against an independent adaptation
    (two SGD steps written out with functional_call) and autograd Jacobians of one task's outputs."""
    from torch.func import functional_call

    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(DT)
    learner = MAML(model, inner_steps=2, inner_lr=0.1, first_order=True, loss="mse")
    r = lambda *sh: torch.randn(*sh, generator=gen, dtype=DT)
    batch = TaskBatch(r(3, 5, 2), r(3, 5, 1), r(3, 6, 2), r(3, 6, 1), torch.zeros(3, 1, dtype=DT))
    flat = learner.flat_meta_parameters() + 0.1 * r(17)
    ev = evaluate_learner(learner, batch, flat, "full", through="adapted")
    diagonal = evaluate_learner(learner, batch, flat, "diagonal", through="adapted")
    # the training loop's own (losses, grads) reused: only the curvature is computed
    reused = evaluate_learner(learner, batch, flat, "diagonal", through="adapted", known=(ev.losses, ev.grads))
    torch.testing.assert_close(reused.curvature, torch.diagonal(ev.curvature, dim1=1, dim2=2))
    names, shapes = learner.names, learner.shapes

    def unflat(z):
        out, start = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = z[start:start + shape.numel()].view(shape)
            start += shape.numel()
        return out
    for i in range(3):
        phi = flat.clone()
        for _ in range(2):
            z = phi.clone().requires_grad_()
            loss = ((functional_call(model, unflat(z), (batch.support_x[i],)) - batch.support_y[i]) ** 2).mean()
            phi = phi - 0.1 * torch.autograd.grad(loss, z)[0]
        outputs = lambda z: functional_call(model, unflat(z), (batch.query_x[i],)).reshape(-1)
        J = torch.autograd.functional.jacobian(outputs, phi)
        expected = 2.0 / 6 * J.T @ J
        torch.testing.assert_close(ev.curvature[i], expected)
        torch.testing.assert_close(diagonal.curvature[i], torch.diagonal(expected))


def mlp_learner(kind: str):
    """An MLP learner of each kind the per-point curvature handles, with a batch of matching targets."""
    from taskbal.learners import CAVIA, MetaSGD
    from taskbal.models.mlp import MLP

    torch.manual_seed(3)
    out, loss = {"multi": (3, "mse"), "ce": (4, "cross_entropy")}.get(kind, (1, "mse"))
    model = MLP(2, [6, 5], out, context=3 if kind == "cavia" else 0).to(DT)
    learner = {"metasgd": lambda: MetaSGD(model, inner_steps=2, inner_lr=0.1, loss=loss),
               "cavia": lambda: CAVIA(model, inner_steps=2, inner_lr=0.5, loss=loss)}.get(
        kind, lambda: MAML(model, inner_steps=2, inner_lr=0.1, loss=loss))()
    gen = torch.Generator().manual_seed(8)
    r = lambda *sh: torch.randn(*sh, generator=gen, dtype=DT)
    target = (lambda n: torch.randint(0, out, (4, n), generator=gen)) if loss == "cross_entropy" else (
        lambda n: r(4, n, out))
    batch = TaskBatch(r(4, 5, 2), target(5), r(4, 7, 2), target(7), torch.zeros(4, 1, dtype=DT))
    flat = learner.flat_meta_parameters() + 0.3 * r(learner.flat_meta_parameters().shape[0])
    return learner, batch, flat


@pytest.mark.parametrize("kind", ["maml", "multi", "ce", "metasgd", "cavia"])
def test_per_point_gauss_newton_equals_the_jacobian_path(kind, monkeypatch):
    """The curvature from per-point backward passes (the MLP's closed-form diagonal, and k·n weight
    copies) against the vmapped Jacobian J_oᵀ H_o J_o that networks with coupled points still use."""
    learner, batch, flat = mlp_learner(kind)
    assert tow_curvature.points_independent(learner.model)
    ours = {form: evaluate_learner(learner, batch, flat, form).curvature for form in ("diagonal", "full")}
    monkeypatch.setattr(tow_curvature, "_closed_form_diagonal", lambda *args: None)  # the k·n copies
    copies = evaluate_learner(learner, batch, flat, "diagonal").curvature
    monkeypatch.setattr(tow_problem, "points_independent", lambda model: False)  # the Jacobian
    for form in ("diagonal", "full"):
        reference = evaluate_learner(learner, batch, flat, form).curvature
        assert reference.abs().max() > 0
        torch.testing.assert_close(ours[form], reference, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(copies, ours["diagonal"], rtol=1e-10, atol=1e-13)
    if kind == "metasgd":  # the rates are not adapted weights: no curvature
        assert ours["diagonal"][:, flat.shape[0] // 2:].abs().max() == 0


def conv4_held_reference(model, weights: dict, query_x: torch.Tensor) -> torch.Tensor:
    """The Gauss–Newton diagonal of one task's mean cross-entropy on its query images, written out
    without the project's batched forward: conv4 (no affine BatchNorm) with each BatchNorm normalising by
    the statistics of this task's query batch, taken as constants (what ``batch_statistics: held``
    means), differentiated by ``torch.func.jacrev``."""
    from torch.func import jacrev

    blocks = len(model.embedding.blocks)
    with torch.no_grad():  # the statistics of the query batch at these weights
        stats, h = [], query_x
        for i in range(blocks):
            z = F.conv2d(h, weights[f"embedding.blocks.{i}.conv.weight"], weights[f"embedding.blocks.{i}.conv.bias"],
                         padding=1)
            stats.append((z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)))
            h = F.relu(F.max_pool2d(F.batch_norm(z, *stats[-1], training=False, eps=1e-5), 2))
    names = list(weights)

    def logits(*values):
        w = dict(zip(names, values))
        h = query_x
        for i in range(blocks):
            z = F.conv2d(h, w[f"embedding.blocks.{i}.conv.weight"], w[f"embedding.blocks.{i}.conv.bias"], padding=1)
            h = F.relu(F.max_pool2d(F.batch_norm(z, *stats[i], training=False, eps=1e-5), 2))
        return F.linear(h.flatten(1), w["head.weight"], w["head.bias"])

    values = tuple(weights.values())
    out = logits(*values)
    jac = torch.cat([j.flatten(2) for j in jacrev(logits, argnums=tuple(range(len(values))))(*values)], dim=2)
    p = torch.softmax(out, -1)
    hessian = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / out.shape[0]  # mean cross-entropy
    return torch.einsum("pcd,pce,ped->d", jac, hessian, jac)


def test_conv4_with_held_statistics_curvature_equals_an_independent_reference():
    """conv4 (BatchNorm on batch statistics, no affine parameters) under ``batch_statistics: held``: the
    diagonal and the full matrix from k·n weight copies against jacrev of a hand-written forward with each
    task's statistics fixed."""
    from taskbal.models import build_model

    torch.manual_seed(11)
    model = build_model({"name": "conv4", "filters": 3, "bn_affine": False}, ((1, 16, 16), 3)).to(DT)
    assert not tow_curvature.points_independent(model)
    learner = MAML(model, inner_steps=1, inner_lr=0.3, first_order=True, loss="cross_entropy")
    gen = torch.Generator().manual_seed(12)
    labels = torch.arange(3).repeat(2).expand(2, -1)
    batch = TaskBatch(torch.randn(2, 6, 1, 16, 16, generator=gen, dtype=DT), labels,
                      torch.randn(2, 6, 1, 16, 16, generator=gen, dtype=DT), labels, torch.zeros(2, 1, dtype=DT))
    flat = learner.flat_meta_parameters()
    copies = evaluate_learner(learner, batch, flat, "diagonal").curvature
    full = evaluate_learner(learner, batch, flat, "full").curvature
    adapted = learner.adapt(learner.per_task_copies(learner.unflatten(flat), 2), batch.support_x, batch.support_y,
                            create_graph=False)
    for i in range(2):
        reference = conv4_held_reference(model, {name: p[i].detach() for name, p in adapted.items()},
                                         batch.query_x[i])
        assert reference.abs().max() > 0
        torch.testing.assert_close(copies[i], reference, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(torch.diagonal(full[i]), reference, rtol=1e-9, atol=1e-12)
    coupled = evaluate_learner(learner, batch, flat, "diagonal", statistics="coupled").curvature
    assert not torch.allclose(coupled, copies)  # through the statistics: another (the exact training-mode) matrix


def test_batch_norm_networks_keep_the_jacobian_path():
    """BatchNorm couples the query points, so per-point copies would be wrong; such a network gets
    J_oᵀ H_o J_o from the Jacobian of all points, checked against autograd of one task's outputs."""
    from torch.func import functional_call

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(2, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.Tanh(),
                          nn.Linear(5, 1)).to(DT)
    learner = MAML(model, inner_steps=1, inner_lr=0.1, first_order=True, loss="mse")
    gen = torch.Generator().manual_seed(9)
    r = lambda *sh: torch.randn(*sh, generator=gen, dtype=DT)
    batch = TaskBatch(r(3, 4, 2), r(3, 4, 1), r(3, 6, 2), r(3, 6, 1), torch.zeros(3, 1, dtype=DT))
    flat = learner.flat_meta_parameters()
    assert not tow_curvature.points_independent(model)
    curvature = evaluate_learner(learner, batch, flat, "full").curvature
    adapted = learner.adapt(learner.per_task_copies(learner.unflatten(flat), 3), batch.support_x,
                            batch.support_y, create_graph=False)
    names, shapes = learner.names, learner.shapes
    for i in range(3):
        def outputs(z):
            params, start = {}, 0
            for name, shape in zip(names, shapes):
                params[name] = z[start:start + shape.numel()].view(shape)
                start += shape.numel()
            return functional_call(model, params, (batch.query_x[i],)).reshape(-1)
        phi = torch.cat([adapted[name][i].detach().reshape(-1) for name in names])
        J = torch.autograd.functional.jacobian(outputs, phi)
        torch.testing.assert_close(curvature[i], 2.0 / 6 * J.T @ J)


def test_skipped_work_does_not_change_the_plan():
    """iLQR skips stage 1's curvature (δx_1 = 0 makes K_1 irrelevant) and defers the meta-gradients of
    a rollout's last stage until an expansion needs them: the same weights, costs and gains (K_1 = 0)
    as expanding every stage eagerly, and the skipped work is really not done."""
    meta = MetaRegression(0, T=4)
    dyn = SGDDynamics(0.5)
    made = []

    def evaluate(t, x, defer=False):
        made.append(evaluate_learner(meta.learner, meta.batches[t], x, "diagonal", defer_grads=defer))
        return made[-1]

    class Eager(MetaProblem):
        def linearise_start(self, x, state, ev, u):
            return self.linearise(x, state, ev, u)

    eager = Eager(evaluate, meta.T, meta.M, dyn, 10.0, None)
    lazy = MetaProblem(evaluate, meta.T, meta.M, dyn, 10.0, None,
                       evaluate_final=lambda t, x: evaluate(t, x, defer=True))
    runs = []
    for problem in (eager, lazy):
        problem.bind(meta.x1)
        made.clear()
        runs.append(ilqr(problem, meta.x1, None, iterations=3, last_backward_only=True))
        if problem is lazy:
            assert made[0]._curvature is None  # stage 1 at x_1
            assert any(ev._grads is None for ev in made)  # last stages nobody expanded
    (traj_e, log_e, (K_e, k_e)), (traj_l, log_l, (K_l, k_l)) = runs
    assert log_l == log_e and log_e["line_search_trials"] > 2  # some trials were rejected
    torch.testing.assert_close(torch.stack(traj_l.us), torch.stack(traj_e.us), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.stack(k_l), torch.stack(k_e), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(torch.stack(K_l[1:]), torch.stack(K_e[1:]), rtol=1e-12, atol=1e-14)
    assert K_l[0].abs().max() == 0 and K_e[0].abs().max() > 0


# -- planned weights against brute force --------------------------------------------------------
class MetaRegression:
    """T meta-batches of M linear-regression tasks (one MAML step), evaluated by the real learner."""

    def __init__(self, seed, T=3, M=3):
        gen = torch.Generator().manual_seed(seed)
        self.learner = linear_learner("mse", 1)
        self.batches = [regression_batch(gen, M) for _ in range(T)]
        self.x1 = torch.randn(4, generator=gen, dtype=DT)
        self.T, self.M = T, M

    def problem(self, dynamics, curvature="full"):
        ev = lambda t, x: evaluate_learner(self.learner, self.batches[t], x, curvature, through="meta")
        problem = MetaProblem(ev, self.T, self.M, dynamics, prior_precision=10.0, prior_mean=None)
        problem.bind(self.x1)
        return problem

    def unrolled_cost(self, us, dynamics):
        """J(u_{1:T}) of Eq. 73 by direct unrolling with the independent functional loss."""
        x = self.x1.detach().clone().requires_grad_()  # the inner gradients need a graph from x_1
        state, total = dynamics.initial_state(self.x1), 0.0
        for t in range(self.T):
            losses = torch.stack([functional_query_loss(self.learner, self.batches[t], i, x) for i in range(self.M)])
            grads = torch.stack([torch.autograd.grad(functional_query_loss(self.learner, self.batches[t], i, x), x,
                                                     create_graph=True)[0] for i in range(self.M)])
            total = total + losses.sum() + 0.5 * 10.0 * (us[t] - 1.0 / self.M).pow(2).sum()
            x, state = dynamics.step(x, state, us[t] @ grads)
        return total

    def brute_force(self, dynamics):
        def f(flat):
            us = torch.tensor(flat, dtype=DT, requires_grad=True)
            J = self.unrolled_cost(us.view(self.T, self.M), dynamics)
            (g,) = torch.autograd.grad(J, us)
            return J.item(), g.numpy()
        start = np.full(self.T * self.M, 1.0 / self.M)
        res = scipy.optimize.minimize(f, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
        return torch.tensor(res.x, dtype=DT).view(self.T, self.M), res.fun


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("value", ["full", "diagonal"])
def test_ilqr_weights_match_brute_force_on_a_tiny_meta_learning_problem(seed, value):
    """SGD dynamics on quadratic meta-losses: the iLQR fixed point (k_t = 0 ⇔ q_u = 0, whatever V_t)
    is a stationary point of the unrolled objective, so full and diagonal V_t both reach the optimum."""
    meta = MetaRegression(seed)
    dyn = SGDDynamics(0.3)
    trajectory, log, _ = ilqr(meta.problem(dyn), meta.x1, None, iterations=12, value=value,
                              line_search="paper", min_step=2.0 ** -12)
    u_brute, J_brute = meta.brute_force(dyn)
    assert log["cost"] < log["cost_uniform"]
    torch.testing.assert_close(torch.stack(trajectory.us), u_brute, rtol=1e-4, atol=1e-5)
    assert abs(log["cost"] - J_brute) < 1e-8 * max(1.0, abs(J_brute))


def test_adam_planning_improves_the_unrolled_objective():
    """With Adam dynamics the paper's linearisation holds the past moments fixed, so the fixed point is
    only approximately stationary: TOW must still lower J below uniform and not below the optimum."""
    meta = MetaRegression(3)
    dyn = AdamDynamics(0.05)
    trajectory, log, _ = ilqr(meta.problem(dyn, "diagonal"), meta.x1, dyn.initial_state(meta.x1), iterations=2)
    _, J_brute = meta.brute_force(dyn)
    direct = meta.unrolled_cost(trajectory.us, dyn).item()
    assert direct == pytest.approx(log["cost"], rel=1e-10)
    assert J_brute - 1e-9 <= log["cost"] < log["cost_uniform"]


def test_diagonal_and_full_value_agree_up_to_a_horizon_of_two():
    """V_{T+1} = 0 makes V_T = C_xx diagonal when the curvature is diagonal, so with T ≤ 2 both value
    variants compute the same gains; from T = 3 on they differ."""
    for T, same in ((2, True), (3, False)):
        meta = MetaRegression(4, T=T)
        dyn = SGDDynamics(0.3)
        runs = [ilqr(meta.problem(dyn, "diagonal"), meta.x1, None, iterations=1, value=v, line_search="none")[0]
                for v in ("diagonal", "full")]
        close = torch.allclose(torch.stack(runs[0].us), torch.stack(runs[1].us), rtol=1e-10, atol=1e-12)
        assert close == same, T


def test_the_last_weights_stay_uniform_on_the_first_iteration():
    """No terminal cost: K_T = 0 and k_T = −c_u/β_u = 0 at the uniform nominal (Algorithm 2's backward pass)."""
    meta = MetaRegression(5, T=3)
    trajectory, _, _ = ilqr(meta.problem(SGDDynamics(0.3)), meta.x1, None, iterations=1, line_search="none")
    torch.testing.assert_close(trajectory.us[-1], torch.full((3,), 1 / 3, dtype=DT))
    assert not torch.allclose(trajectory.us[0], torch.full((3,), 1 / 3, dtype=DT))


# -- inside the training loop --------------------------------------------------------------------
def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="weighting.value"):
        build_weighting("tow", 10, 1, 0, value="dense")
    with pytest.raises(ValueError, match="weighting.horizon"):
        build_weighting("tow", 10, 1, 0, horizon=0)


def test_the_training_loop_follows_the_planned_trajectory(small_split):
    """The planner replays the loop's Adam on the loop's upcoming batches: the parameters the loop
    reaches are the planned states, and the weights it applies are the planned ones."""
    run = Run(small_experiment({"name": "tow", "horizon": 3}, iterations=7), 0, small_split, torch.device("cpu"))
    seen = []
    original = run.weighting.combine

    def spy(tasks):
        combined = original(tasks)
        plan = run.weighting.plan
        j = tasks.iteration - plan["start"]
        seen.append(((tasks.params - plan["xs"][j]).abs().max().item(),
                     (combined.weights - plan["us"][j]).abs().max().item()))
        return combined
    run.weighting.combine = spy
    for _ in range(7):
        run.step()
    assert len(seen) == 7 and max(dx for dx, _ in seen) < 1e-5 and max(du for _, du in seen) == 0
    assert run.weighting.plan["start"] == 6 and run.weighting.plan["length"] == 1  # cut at the end


def test_live_final_pass_equals_the_simulated_one(small_split):
    """``final_pass: live`` lets the loop run the last forward pass (ε = 1); without line search that
    is the simulated forward pass, so both runs reach the same parameters (no weight was clipped)."""
    finals = []
    for final_pass in ("simulated", "live"):
        run = Run(small_experiment({"name": "tow", "horizon": 3, "line_search": "none", "final_pass": final_pass},
                                   iterations=6), 0, small_split, torch.device("cpu"))
        weights = []
        for _ in range(6):
            stats = run.step()
            weights.append(stats["tow_weight_min"])
        assert min(weights) > 0
        finals.append(run.learner.flat_meta_parameters())
    assert not torch.equal(finals[0], Run(small_experiment(iterations=6), 0, small_split,
                                          torch.device("cpu")).learner.flat_meta_parameters())
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_interrupted_and_resumed_tow_equals_uninterrupted(tmp_path, small_split):
    experiment = small_experiment({"name": "tow", "horizon": 3}, iterations=8)
    whole = train(experiment, 0, small_split, tmp_path / "whole", progress=False)
    train(experiment, 0, small_split, tmp_path / "parts", progress=False, stop_after=4)  # mid-window
    parts = train(experiment, 0, small_split, tmp_path / "parts", progress=False)
    assert parts["final_test_mse"] == whole["final_test_mse"]


def test_tow_trains_on_the_sinusoid(tmp_path, small_split):
    experiment = small_experiment({"name": "tow"}, iterations=20)
    experiment["outer"]["lr"] = 0.01
    summary = train(experiment, 0, small_split, tmp_path, progress=False)
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert summary["final_test_mse"] < curve["test_mse"].iloc[0]
    assert curve["tow_cost"].dropna().lt(curve["tow_cost_uniform"].dropna()).all()
    assert (curve["tow_weight_max"].dropna() != curve["tow_weight_min"].dropna()).any()


def test_learner_capabilities_follow_the_methods_they_rest_on():
    """TOW asks learners what they can do instead of testing their types: a learner that overrides the
    method a capability rests on loses it unless it declares it again (CAVIA's predict does)."""
    from taskbal.learners import REGISTRY
    from taskbal.learners.maml import CAPABILITIES

    expected = {"maml": (True, True, True), "metasgd": (True, True, True), "cavia": (True, True, True),
                "protonet": (True, False, True), "reptile": (False, True, True)}
    for name, flags in expected.items():
        assert tuple(getattr(REGISTRY[name], c) for c in CAPABILITIES) == flags, name

    class OwnForward(MAML):
        def predict(self, params, x):
            return super().predict(params, x)

    assert not OwnForward.predicts_with_model_forward and OwnForward.descends_query_losses


def test_probing_a_window_plans_what_training_on_it_would_and_changes_nothing(small_split):
    """TOW's Figures 4–5 monitor the weights of tasks it does not train on: ``probe`` on the window the loop is
    about to train on gives the weights the loop's own plan then applies, and leaves the run untouched (its
    parameters, Adam state and plan; a second probe gives the same weights)."""
    run = Run(small_experiment({"name": "tow", "horizon": 3}, iterations=6), 0, small_split, torch.device("cpu"))
    run.step()  # an Adam state with moments to replay
    before = copy.deepcopy(run.state_dict())
    window = run.upcoming_batches(1, 3)
    probed = run.weighting.probe(window, run.learner.flat_meta_parameters())
    assert probed.shape == (3, window[0].num_tasks)
    torch.testing.assert_close(run.weighting.probe(window, run.learner.flat_meta_parameters()), probed)
    after = run.state_dict()
    torch.testing.assert_close(after["learner"], before["learner"])
    torch.testing.assert_close(after["optimizer"]["state"], before["optimizer"]["state"])
    assert after["weighting"]["plan"]["start"] == before["weighting"]["plan"]["start"] == 0
    run.step()  # iteration 1 is still in the first window (horizon 3): plan from iteration 3 on instead
    run.step()
    run.step()
    assert run.weighting.plan["start"] == 3
    planned = run.weighting.plan["us"]
    fresh = Run(small_experiment({"name": "tow", "horizon": 3}, iterations=6), 0, small_split, torch.device("cpu"))
    for _ in range(3):
        fresh.step()
    torch.testing.assert_close(fresh.weighting.probe(fresh.upcoming_batches(3, 3),
                                                     fresh.learner.flat_meta_parameters()), planned)


def protonet_held_reference(model, weights: dict, support_x, query_x, ways: int, shots: int, squared: bool):
    """The Gauss–Newton diagonal of one task's ProtoNet query loss (mean cross-entropy of −distances to the class
    means of the support embeddings), written out without the project's batched forward: conv4's embedding with
    each BatchNorm normalising by the statistics of this task's whole episode (support and query images, as
    ProtoNet embeds them in one batch), taken as constants, differentiated by ``torch.func.jacrev``."""
    from torch.func import jacrev

    blocks = len(model.blocks)
    episode = torch.cat([support_x, query_x])
    with torch.no_grad():
        stats, h = [], episode
        for i in range(blocks):
            z = F.conv2d(h, weights[f"blocks.{i}.conv.weight"], weights[f"blocks.{i}.conv.bias"], padding=1)
            stats.append((z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)))
            h = F.relu(F.max_pool2d(F.batch_norm(z, *stats[-1], training=False, eps=1e-5), 2))
    names = list(weights)

    def embed(w, x):
        h = x
        for i in range(blocks):
            z = F.conv2d(h, w[f"blocks.{i}.conv.weight"], w[f"blocks.{i}.conv.bias"], padding=1)
            h = F.relu(F.max_pool2d(F.batch_norm(z, *stats[i], training=False, eps=1e-5), 2))
        return h.flatten(1)

    def logits(*values):
        w = dict(zip(names, values))
        prototypes = embed(w, support_x).view(ways, shots, -1).mean(1)
        diff = embed(w, query_x)[:, None, :] - prototypes[None]
        squares = (diff * diff).sum(-1)
        return -squares if squared else -squares.sqrt()

    values = tuple(weights.values())
    out = logits(*values)
    jac = torch.cat([j.flatten(2) for j in jacrev(logits, argnums=tuple(range(len(values))))(*values)], dim=2)
    p = torch.softmax(out, -1)
    hessian = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / out.shape[0]
    return torch.einsum("pcd,pce,ped->d", jac, hessian, jac)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean"])
def test_protonet_curvature_equals_an_independent_reference(distance, monkeypatch):
    """ProtoNet on conv4 with held statistics: the prototype-factored diagonal (query copies + the prototypes'
    Jacobian) and the copies of whole episodes per query point, against jacrev of a hand-written ProtoNet."""
    from taskbal.learners import ProtoNet
    from taskbal.models import build_model

    torch.manual_seed(5)
    model = build_model({"name": "conv4", "filters": 3, "bn_affine": False}, ((1, 16, 16), 3)).to(DT)
    learner = ProtoNet(model, distance=distance)
    gen = torch.Generator().manual_seed(6)
    ways, shots, queries = 3, 2, 4
    support_y = torch.arange(ways).repeat_interleave(shots).expand(2, -1)
    query_y = torch.arange(ways).repeat_interleave(queries).expand(2, -1)
    batch = TaskBatch(torch.randn(2, ways * shots, 1, 16, 16, generator=gen, dtype=DT), support_y,
                      torch.randn(2, ways * queries, 1, 16, 16, generator=gen, dtype=DT), query_y,
                      torch.zeros(2, 1, dtype=DT))
    flat = learner.flat_meta_parameters()
    assert tow_curvature.prototype_factored_pays(batch, embedding_dim=3)
    factored = evaluate_learner(learner, batch, flat, "diagonal").curvature
    monkeypatch.setattr(tow_curvature, "prototype_factored_pays", lambda *args: False)
    copies = evaluate_learner(learner, batch, flat, "diagonal").curvature
    params = learner.unflatten(flat)
    for i in range(2):
        reference = protonet_held_reference(model.embedding, {name: p.detach() for name, p in params.items()},
                                            batch.support_x[i], batch.query_x[i], ways, shots,
                                            squared=distance == "squared_euclidean")
        assert reference.abs().max() > 0
        torch.testing.assert_close(factored[i], reference, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(copies[i], reference, rtol=1e-9, atol=1e-12)
