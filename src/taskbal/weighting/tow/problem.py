"""TOW's control problem on meta-batches (Eqs. 6–7): the stage evaluations of a learner (query losses,
per-task meta-gradients, Gauss–Newton curvature) and the ``ilqr.Problem`` built on them."""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

from .curvature import (
    _output_jacobian,
    at_meta_positions,
    gauss_newton,
    holds_batch_statistics,
    per_point_gauss_newton,
    per_query_point_gauss_newton,
    points_independent,
    prototype_factored_gauss_newton,
)
from .ilqr import Linearisation, Problem

Evaluate = Callable[[int, torch.Tensor], "StageEval"]


class StageEval:
    """Meta-batch t evaluated at x: query losses [M], meta-gradients [M, D] and the Gauss–Newton
    curvature ([M, D] diagonals or [M, D, D] matrices), the latter computed on first use
    (``curvature_fn``): only the trajectories that get linearised need it. The meta-gradients may be
    deferred too (``grads_fn``: the last stage of a rollout, whose meta-gradients only an expansion uses)."""

    def __init__(self, losses: torch.Tensor, grads: torch.Tensor | None, curvature: torch.Tensor | None = None,
                 curvature_fn: Callable[[], torch.Tensor] | None = None,
                 grads_fn: Callable[[], torch.Tensor] | None = None):
        if grads is None and grads_fn is None:
            raise ValueError("a stage evaluation needs its meta-gradients or a way to compute them")
        self.losses, self._grads, self._grads_fn = losses, grads, grads_fn
        self._curvature, self._curvature_fn = curvature, curvature_fn

    @property
    def grads(self) -> torch.Tensor:
        if self._grads is None:
            self._grads, self._grads_fn = self._grads_fn(), None
        return self._grads

    @property
    def curvature(self) -> torch.Tensor:
        if self._curvature is None:
            if self._curvature_fn is None:
                raise ValueError("this stage evaluation has no curvature")
            self._curvature, self._curvature_fn = self._curvature_fn(), None
        return self._curvature

    @staticmethod
    def stacked(parts: list[StageEval]) -> StageEval:
        """The evaluations of single tasks as one of all of them (a ragged batch is evaluated task by task);
        meta-gradients and curvature stay deferred until asked for."""
        return StageEval(torch.cat([p.losses for p in parts]), None,
                         curvature_fn=lambda: torch.cat([p.curvature for p in parts]),
                         grads_fn=lambda: torch.cat([p.grads for p in parts]))


class MetaProblem(Problem):
    """The control problem of Eqs. 6–7 on T meta-batches given by ``evaluate(t, x) -> StageEval``
    (``evaluate_final``, if given, for the last stage of a rollout: may defer the meta-gradients)."""

    nonnegative = False  # set by ``ilqr``: the paper's line search rejects negative weights

    def __init__(self, evaluate: Evaluate, horizon: int, num_tasks: int, dynamics, prior_precision: float,
                 prior_mean: float | None, evaluate_final: Evaluate | None = None):
        self.evaluate, self.horizon, self.M = evaluate, horizon, num_tasks
        self.evaluate_final = evaluate_final or evaluate
        self.dynamics, self.beta = dynamics, prior_precision
        self.mu = 1.0 / num_tasks if prior_mean is None else prior_mean
        self._C_uu: torch.Tensor | None = None  # β_u I, the same at every stage

    def nominal_action(self, t: int) -> torch.Tensor:
        return torch.full((self.M,), 1.0 / self.M, dtype=self._dtype, device=self._device)

    def bind(self, x: torch.Tensor) -> None:
        self._dtype, self._device = x.dtype, x.device

    def stage(self, t, x):
        return self.evaluate(t, x)

    def final_stage(self, t, x):
        return self.evaluate_final(t, x)

    def step(self, x, state, ev, u):
        return self.dynamics.step(x, state, u @ ev.grads)

    def cost(self, ev, u):
        return float(ev.losses.sum() + 0.5 * self.beta * (u - self.mu).pow(2).sum())

    def linearise(self, x, state, ev, u):
        return self.expand(x, state, ev, u, with_state=True)

    def linearise_start(self, x, state, ev, u):
        """x_1 is given: no F_x, C_xx, so stage 1's curvature is never computed."""
        return self.expand(x, state, ev, u, with_state=False)

    def expand(self, x, state, ev, u, with_state: bool) -> Linearisation:
        g = u @ ev.grads
        s = self.dynamics.scale(state, g)
        F_x = C_xx = None
        if with_state:
            curv = ev.curvature
            if curv.dim() == 2:  # diagonals [M, D]
                H_w, C_xx = u @ curv, curv.sum(0)
                F_x = 1 - s * H_w
            else:  # matrices [M, D, D]
                H_w, C_xx = torch.einsum("m,mde->de", u, curv), curv.sum(0)
                F_x = torch.eye(x.shape[0], dtype=x.dtype, device=x.device) - s[:, None] * H_w
        if self._C_uu is None or self._C_uu.dtype != x.dtype or self._C_uu.device != x.device:
            self._C_uu = self.beta * torch.eye(self.M, dtype=x.dtype, device=x.device)
        return Linearisation(F_x=F_x, F_u=-s[:, None] * ev.grads.T, c_x=ev.grads.sum(0),
                             c_u=self.beta * (u - self.mu), C_xx=C_xx, C_uu=self._C_uu)


@contextmanager
def held_statistics(model, hold: bool, record):
    """With ``hold``: the network's batch statistics held at their values in ``record()``, a forward of
    the whole episode (``batch_statistics_held``); without: nothing changes."""
    if not hold:
        yield
        return
    with model.batch_statistics_held():
        with torch.no_grad():
            record()
        yield


def evaluate_learner(learner, batch, flat: torch.Tensor, curvature: str = "diagonal",
                     through: str = "adapted", known: tuple[torch.Tensor, torch.Tensor] | None = None,
                     defer_grads: bool = False, statistics: str = "held") -> StageEval:
    """Query losses and per-task meta-gradients (as the learner's ``meta_gradients`` computes them, but
    at the meta-parameters ``flat``); the Gauss–Newton curvature (``curvature``: diagonal | full) is
    computed on first use. ``through``: ``adapted`` differentiates the query outputs w.r.t. the adapted
    weights (∂φ/∂x = I, as with first-order MAML in the authors' code; one extra forward of the query
    sets, no new adaptation); ``meta`` differentiates them through the adaptation (the Gauss–Newton
    matrix of the meta-loss itself; re-runs the adaptation when the curvature is needed).
    ``known``: the (losses, grads) at ``flat`` are already known (the training loop's own evaluation):
    nothing is evaluated until the curvature is asked for, which then re-runs the adaptation without a
    meta-graph (``ilqr`` never asks for stage 1's). ``defer_grads``: keep the meta-graph and run its
    backward only when the meta-gradients are asked for (the last stage of a rollout).
    ``statistics``: for networks with batch statistics that can hold them (conv4's BatchNorm), ``held``
    computes the curvature with each task's statistics fixed at their values on its whole episode, so that
    every query point is seen on its own (c backward passes; what a Gauss–Newton diagonal of the network
    in evaluation mode gives, as BackPACK computes it); ``coupled`` differentiates through the statistics
    too (the exact Jacobian of all points: n·c probes through the backward)."""
    k = batch.num_tasks
    if batch.ragged:  # support sets of different sizes (any-shot): every task on its own real support set
        return StageEval.stacked([
            evaluate_learner(learner, part, flat, curvature, through,
                             None if known is None else (known[0][i:i + 1], known[1][i:i + 1]), defer_grads, statistics)
            for i, part in enumerate(batch.chunks(1))])
    plain = learner.predicts_after_adapting
    fast = None  # the adapted weights (plain learners), detached
    grads_fn = None
    if known is not None:
        losses, grads = known[0], known[1].detach()
    else:
        with torch.enable_grad():
            copies = learner.per_task_copies(learner.unflatten(flat), k)
            create_graph = not learner.first_order
            if plain:
                adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=create_graph)
                outputs = learner.predict(adapted, batch.query_x)
                fast = {name: p.detach() for name, p in adapted.items()}
            else:
                outputs = learner.query_outputs(copies, batch, create_graph=create_graph)
            losses = learner.loss_per_task(outputs, batch.query_y)
            total, leaves = losses.sum(), list(copies.values())

        def grads_fn():
            grads = torch.autograd.grad(total, leaves, allow_unused=True, materialize_grads=True)
            return torch.cat([g.reshape(k, -1) for g in grads], dim=1).detach()
        grads = None if defer_grads else grads_fn()
        if not defer_grads:
            grads_fn = None  # (frees the meta-graph)

    def adapted_weights():
        if fast is not None:
            return fast
        with torch.enable_grad():
            copies = learner.per_task_copies(learner.unflatten(flat), k)
            adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=False)
        return {name: p.detach() for name, p in adapted.items()}

    held = statistics == "held" and holds_batch_statistics(learner.model)
    independent = held or points_independent(learner.model)

    if through == "adapted" and plain and independent:
        def curvature_fn():
            weights = adapted_weights()
            with held_statistics(learner.model, held, lambda: learner.predict(weights, batch.query_x)):
                return per_point_gauss_newton(learner, weights, batch.query_x, flat.shape[0], curvature)
    elif not plain and independent and not learner.inner_steps:
        def curvature_fn():
            copies = learner.per_task_copies(learner.unflatten(flat), k)
            with held_statistics(learner.model, held, lambda: learner.query_outputs(copies, batch, create_graph=False)):
                factored = prototype_factored_gauss_newton(learner, flat, batch) if (
                    curvature == "diagonal" and hasattr(learner, "prototypes")) else None
                return per_query_point_gauss_newton(learner, flat, batch, curvature) if factored is None else factored
    elif through == "adapted" and plain:
        def curvature_fn():
            weights = adapted_weights()
            with torch.enable_grad():
                leaves = {name: p.clone().requires_grad_() for name, p in weights.items()}
                out = learner.predict(leaves, batch.query_x)
                jac_fast = _output_jacobian(out, list(leaves.values()), retain=False)
            layout = [(name, p[0].numel()) for name, p in weights.items()]
            jac = at_meta_positions(jac_fast, layout, learner, flat.shape[0])
            return gauss_newton(learner.loss, out.detach(), jac, curvature)
    else:
        def curvature_fn():
            with torch.enable_grad():
                copies = learner.per_task_copies(learner.unflatten(flat), k)
                out = learner.query_outputs(copies, batch, create_graph=not learner.first_order)
                jac = _output_jacobian(out, list(copies.values()), retain=False)
            return gauss_newton(learner.loss, out.detach(), jac, curvature)
    return StageEval(losses.detach(), grads, curvature_fn=curvature_fn, grads_fn=grads_fn)
