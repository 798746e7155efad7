"""Multi-objective bi-level optimisation (MOBLO): the problem contract and the pieces MOML and FORUM share.

Thesis (Ye 2024) §3.3, Eq. 3.3:

    min_{α ∈ A, ω}  F(ω, α) = (F_1(ω, α), …, F_m(ω, α))ᵀ    s.t.  ω ∈ argmin_ω f(ω, α)

α [n] is the upper-level (UL) variable (task weights, per-sample weights of hyper-cleaning, the
synthetic problem's scalar), ω [p] the lower-level (LL) variable (network parameters). A problem
gives f and F as differentiable torch functions of FLAT tensors, so every method works the same
on a 3-number toy and on a network (whose parameters the problem unflattens itself).

Pieces:
  * ``lower_descent``: T steps ω ← ω − η ∇_ω f(α, ω) (Alg. 1 lines 4–6, Eq. 3.15), optionally
    keeping the graph so ω_T is a differentiable function of α (iterative differentiation, ITD).
  * ``unrolled_hypergradients``: ∇_α F_i(ω_T(α), α) for every i by back-propagating through the
    unrolled steps (MOML, Alg. 1 line 7): m backward passes over one forward graph.
  * ``implicit_hypergradients``: ∇φ_i(α) = ∇_α F_i − ∇²_{αω} f [∇²_{ωω} f]⁻¹ ∇_ω F_i at ω ≈ ω*(α)
    (Eq. 3.7 with the implicit-function theorem), the inverse-Hessian product by conjugate
    gradients on Hessian-vector products. Not in the thesis (MOML uses ITD); offered because its
    fixed point is the exact hypergradient of the LL minimiser, which the tests compare against.

Mini-batches: ``lower_batch(iteration)`` / ``upper_batch(iteration)`` return whatever the
problem's f / F take as ``batch`` (None for deterministic problems). By default a method draws ONE
LL batch and ONE UL batch per UL iteration and uses the LL batch for all T inner steps, as the
official FORUM/MOML code does (LibMTL trainer: the inner SGD steps reuse the LL batch). A problem
may instead return ``StepBatches`` (a fresh LL batch for every inner step t, ``at(t)``); then the
T steps walk through them and the single-point evaluations of f (FORUM's f(z) and f(α, ω̃^T), the
implicit Hessian) use step 0's batch. Problems derive batches from (seed, iteration), so a resumed
run sees the same data.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Batch = Any


class MOBLOProblem:
    """Contract of a MOBLO problem; subclasses implement the two objectives."""

    num_objectives: int = 0
    objective_names: tuple[str, ...] = ()

    def lower_objective(self, alpha: torch.Tensor, omega: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        """f(ω, α): a scalar."""
        raise NotImplementedError

    def upper_objectives(self, alpha: torch.Tensor, omega: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        """F(ω, α): [m]."""
        raise NotImplementedError

    def lower_batch(self, iteration: int) -> Batch:
        return None

    def upper_batch(self, iteration: int) -> Batch:
        return None


class StepBatches:
    """One LL mini-batch per inner step: ``at(t)`` for t = 0..T-1 (fetched lazily)."""

    def __init__(self, fetch: Callable[[int], Any]):
        self.fetch = fetch

    def at(self, step: int):
        return self.fetch(step)


def batch_for_step(batch: Batch, step: int = 0) -> Batch:
    """The batch an evaluation of f at inner step ``step`` uses."""
    return batch.at(step) if isinstance(batch, StepBatches) else batch


def _grad_or_zeros(output: torch.Tensor, inputs: tuple[torch.Tensor, ...], **kwargs) -> list[torch.Tensor]:
    """autograd.grad that returns zeros (not None) for inputs the output does not depend on."""
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def lower_descent(problem: MOBLOProblem, alpha: torch.Tensor, omega: torch.Tensor, batch: Batch,
                  steps: int, lr: float, *, differentiable: bool) -> torch.Tensor:
    """ω_T after ``steps`` gradient steps on f(·, α) from ω.

    With ``differentiable`` the graph of every step is kept (create_graph), so ω_T depends on α
    through the unrolled trajectory; ``alpha`` must then require grad. Otherwise ω_T is detached.
    """
    omega = omega.detach().requires_grad_(True)
    if not differentiable:
        alpha = alpha.detach()
    for step in range(steps):
        value = problem.lower_objective(alpha, omega, batch_for_step(batch, step))
        (grad,) = _grad_or_zeros(value, (omega,), create_graph=differentiable)
        omega = omega - lr * grad
        if not differentiable:
            omega = omega.detach().requires_grad_(True)
    return omega if differentiable else omega.detach()


def per_objective_gradients(values: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """For each input, the [m, dim] matrix of ∇ values[i] (one backward pass per objective)."""
    m = values.shape[0]
    rows = [_grad_or_zeros(values[i], inputs, retain_graph=True) for i in range(m)]
    return [torch.stack([row[j] for row in rows]) for j in range(len(inputs))]


def unrolled_hypergradients(problem: MOBLOProblem, alpha: torch.Tensor, omega0: torch.Tensor,
                            lower_batch: Batch, upper_batch: Batch, steps: int, lr: float):
    """(F(ω_T(α), α) [m], ∇_α F_i(ω_T(α), α) [m, n], ω_T detached [p]) by ITD through T steps."""
    alpha = alpha.detach().requires_grad_(True)
    omega_T = lower_descent(problem, alpha, omega0, lower_batch, steps, lr, differentiable=True)
    values = problem.upper_objectives(alpha, omega_T, upper_batch)
    (grads,) = per_objective_gradients(values, (alpha,))
    return values.detach(), grads.detach(), omega_T.detach()


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, steps: int,
                       tol: float = 1e-12) -> torch.Tensor:
    """Solve H x = rhs for a symmetric positive-definite H given only x ↦ H x."""
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    norm2 = residual @ residual
    threshold = tol * max(float(rhs @ rhs), 1e-300)
    for _ in range(steps):
        if float(norm2) <= threshold:
            break
        applied = apply(direction)
        curvature = direction @ applied
        if float(curvature) <= 0:  # not positive definite along this direction: stop where we are
            break
        step = norm2 / curvature
        x = x + step * direction
        residual = residual - step * applied
        new_norm2 = residual @ residual
        direction = residual + (new_norm2 / norm2) * direction
        norm2 = new_norm2
    return x


def implicit_hypergradients(problem: MOBLOProblem, alpha: torch.Tensor, omega: torch.Tensor,
                            lower_batch: Batch, upper_batch: Batch, cg_steps: int = 50):
    """(F(ω, α) [m], implicit hypergradients [m, n]) with ω taken as the LL minimiser ω*(α)."""
    alpha = alpha.detach().requires_grad_(True)
    omega = omega.detach().requires_grad_(True)
    lower = problem.lower_objective(alpha, omega, batch_for_step(lower_batch))
    (grad_omega_f,) = _grad_or_zeros(lower, (omega,), create_graph=True)

    def hessian_vector(v: torch.Tensor) -> torch.Tensor:
        (hv,) = _grad_or_zeros(grad_omega_f, (omega,), grad_outputs=v, retain_graph=True)
        return hv.detach()

    values = problem.upper_objectives(alpha, omega, upper_batch)
    direct_alpha, direct_omega = per_objective_gradients(values, (alpha, omega))
    rows = []
    for i in range(values.shape[0]):
        v = conjugate_gradient(hessian_vector, direct_omega[i].detach(), cg_steps)
        # ∇²_{αω} f · v = ∇_α ⟨∇_ω f, v⟩
        (mixed,) = _grad_or_zeros(grad_omega_f, (alpha,), grad_outputs=v, retain_graph=True)
        rows.append(direct_alpha[i].detach() - mixed.detach())
    return values.detach(), torch.stack(rows)
