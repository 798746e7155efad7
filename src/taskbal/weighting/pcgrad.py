"""Mini-batch PCGrad: project away the conflicting component of each task gradient.

Paper: Yu, Kumar, Gupta, Levine, Hausman & Finn (2020), "Gradient Surgery for Multi-Task
Learning" (NeurIPS), Algorithm 1. For each task i, starting from g_i^PC = g_i, and for every
other task j ≠ i in a uniformly random order:

    if ⟨g_i^PC, g_j⟩ < 0:   g_i^PC ← g_i^PC - ⟨g_i^PC, g_j⟩ / ‖g_j‖² · g_j

(always projecting against the ORIGINAL g_j). direction = (1/k) Σ_i g_i^PC: the mean rather
than the paper's sum, so that without conflicts the direction is plain MAML's average and the
outer learning rate keeps its meaning.

Hyper-parameters: none (the paper has none).

Deliberate choices:
  * A separate random order per task i, as in the paper's Algorithm 1: task i's order over the
    other k-1 tasks is torch.randperm(k - 1, generator=tasks.generator), drawn for i = 0..k-1
    in turn, and position p maps to task p if p < i, else p + 1. One shared permutation would
    be cheaper to draw but couples the tasks' orders, which the paper does not do; drawing k
    small permutations is cheap.
  * Every g_i^PC stays a linear combination Σ_j C_ij g_j of the original gradients, and every
    inner product the algorithm needs is ⟨g_i^PC, g_j⟩ = (C G)_ij with G the k×k Gram matrix.
    So the whole procedure runs on k×k float64 matrices, vectorised over i (all tasks advance
    one position of their order at a time), and touches the [k, d] gradients only twice: to
    form G and to form the direction. Float64 also makes the sign test ⟨·,·⟩ < 0 exact to
    round-off even for float32 gradients.
  * Reported weights are the uniform 1/k: the method is specified as projection + averaging,
    not as a reweighting. (The effective coefficient of g_j in the direction is
    mean_i C_ij, computed here but not reported.) stats: 'pcgrad_conflicts', the number of
    projections made (negative inner products met) in this meta-batch.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Combined, TaskGradients, Weighting
from .mgda import gram_matrix


def per_task_orders(k: int, generator: torch.Generator) -> np.ndarray:
    """[k, k-1] int array: row i lists the tasks j ≠ i in the random order task i visits them."""
    rows = [torch.randperm(k - 1, generator=generator, device=generator.device).cpu().numpy() for _ in range(k)]
    positions = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.int64)
    # Skip over i itself: position p < i is task p, position p >= i is task p + 1.
    return positions + (positions >= np.arange(k)[:, None])


def projection_coefficients(gram: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, int]:
    """C with g_i^PC = Σ_j C_ij g_j after PCGrad's projections, and the number of projections made."""
    k = gram.shape[0]
    coefficients = np.eye(k)
    rows = np.arange(k)
    conflicts = 0
    for position in range(orders.shape[1]):
        others = orders[:, position]  # the task each i projects against at this position
        dots = np.einsum("ij,ij->i", coefficients, gram[others])  # ⟨g_i^PC, g_j⟩, j = others[i]
        sq_norms = gram[others, others]
        # A zero g_j has ⟨g_i^PC, g_j⟩ = 0, so the strict test already skips it; the sq_norms
        # guard only protects against round-off making a zero-norm dot slightly negative.
        conflict = (dots < 0) & (sq_norms > 0)
        coefficients[rows[conflict], others[conflict]] -= dots[conflict] / sq_norms[conflict]
        conflicts += int(conflict.sum())
    return coefficients, conflicts


class PCGrad(Weighting):
    reads = frozenset({"grads", "generator"})
    name = "pcgrad"

    def combine(self, tasks: TaskGradients) -> Combined:
        grads = tasks.grads
        k = tasks.num_tasks
        gram = gram_matrix(grads).cpu().numpy()
        coefficients, conflicts = projection_coefficients(gram, per_task_orders(k, tasks.generator))
        mean_coefficients = torch.as_tensor(coefficients.mean(axis=0), dtype=grads.dtype, device=grads.device)
        direction = mean_coefficients @ grads
        weights = torch.full((k,), 1.0 / k, dtype=grads.dtype, device=grads.device)
        return Combined(direction=direction, weights=weights, stats={"pcgrad_conflicts": float(conflicts)})
