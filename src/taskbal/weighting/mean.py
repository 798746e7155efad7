"""Minimum average loss (plain MAML): every task of the meta-batch weighs 1/k."""
from __future__ import annotations

import torch

from .base import Combined, TaskGradients, Weighting


class Mean(Weighting):
    reads = frozenset({"grads"})
    name = "mean"

    def combine(self, tasks: TaskGradients) -> Combined:
        k = tasks.num_tasks
        weights = torch.full((k,), 1.0 / k, dtype=tasks.grads.dtype)
        return Combined(direction=weights @ tasks.grads, weights=weights)
