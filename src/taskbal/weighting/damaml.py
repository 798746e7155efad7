"""DA-MAML (Collins, Mokhtari & Shakkottai, "Distribution-Agnostic Model-Agnostic Meta-Learning").

The early version of TR-MAML (tr_maml.py): min_w max_{p∈Δ} Σ_i p_i F̃_i(w) over the m training
tasks (or training groups), by stochastic projected descent on w and ascent on p (Algorithm 1):

- direction (Eq. 8, D = 1): ĝ_w = (m/C) Σ_{b∈batch} p_{id_b} ∇L_b, C = meta-batch size; at p
  uniform this is the MAML mean;
- p ← Π_Δ(p + η_p·ĝ_p) with ĝ_p[i] = (m/C)·Σ_{copies of i in the batch} L (Eq. 9 read with the
  indexing of the proof, Eq. 28: other entries are 0), both at the same (w^t, p^t).
  Π_Δ is the exact sort-based Euclidean projection (simplex.py); the paper leaves the method open.

Ambiguities of the paper and what is done here:
- Eq. 9's index is sloppy as printed → entry i sums only the batch's copies of task i
  (``duplicates: sum``; ``once`` counts every id once with the mean loss of its copies).
- Algorithm 2's printed w-update drops p_i while Eq. 8 has it → Eq. 8 by default
  (``p_in_direction: true``); ``false`` gives the printed Algorithm 2: every task weighs m/C
  (p then has no effect on w; under Adam the factor m is nearly immaterial).
- η_p is not given → ``step_size`` (default 1e-3, our choice), constant; the
  theory's decaying T^{-β} schedules are not implemented.
- Tasks are to be sampled uniformly with replacement; the training loop visits the pool in
  seeded permutations (uniform, without replacement within a pass). For grouped pools (the
  skewed sinusoid's bins) the groups are then hit in proportion to their share of the pool.
- Output rule (average iterate for convex losses, random iterate otherwise) → the current
  iterate is evaluated, as in the paper's experiment.
- W = R^d (no projection of w); D = 1 (one support/query pair per sampled task); the outer
  optimiser is the training loop's (Adam), where the paper's theory uses plain SGD.
"""
from __future__ import annotations

import torch

from ..options import OptionError
from .base import TaskGradients
from .tr_maml import DistributionWeighting


class DAMAML(DistributionWeighting):
    name = "damaml"

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, step_size: float = 1e-3,
                 duplicates: str = "sum", p_in_direction: bool = True):
        super().__init__(num_params, feature_dim, seed, step_size=step_size, duplicates=duplicates)
        if not isinstance(p_in_direction, bool):
            raise OptionError("p_in_direction", f"expected true or false, got {p_in_direction!r}")
        self.p_in_direction = p_in_direction

    def ascent_scale(self, tasks: TaskGradients) -> float:
        return tasks.num_pool_tasks / tasks.num_tasks  # m/(C·D) with D = 1

    def weights_before_gradients(self, tasks: TaskGradients) -> torch.Tensor:
        """(m/C)·p of the batch's pool ids, or m/C for every task without p in the direction (float64)."""
        weights = super().weights_before_gradients(tasks)  # also creates p at the first batch
        return weights if self.p_in_direction else torch.full_like(weights, tasks.num_pool_tasks / tasks.num_tasks)
