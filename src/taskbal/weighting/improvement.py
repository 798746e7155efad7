"""Mini-batch improvement function: the SIMOL paper's Table 1 baseline.

Steepest descent on the improvement function H(w, w') = max_τ [L_τ(w_τ*(w)) − L_τ(w_τ*(w'))]
(SIMOL Eq. 6, after Montonen et al., 2018) with the max taken over the mini-batch only.
The paper does not define the baseline further. With the
first-order model of Eq. 10 the regularised descent problem gives the mini-batch MGDA
direction, yet the paper's numbers differ from MGDA's, so we implement the
subgradient of H itself:

- ``variant: improvement`` (default): evaluate the batch's tasks at the current iterate
  w^s and at the previous one w^{s−1} (same support and query data), pick
  τ* = argmax_τ [L_τ(w^s) − L_τ(w^{s−1})], and step along ∇_w L_τ*(w_τ*(w^s)).
  At the first iteration there is no previous iterate, so the highest-loss task is used.
- ``variant: highest_loss``: always step on the task of the batch with the highest loss.
"""
from __future__ import annotations

import torch

from ..options import OptionError
from .base import Combined, TaskGradients, Weighting


class ImprovementFunction(Weighting):
    reads = frozenset({"grads", "losses", "losses_at", "params"})
    name = "improvement"

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, variant: str = "improvement"):
        super().__init__(num_params, feature_dim, seed)
        if variant not in ("improvement", "highest_loss"):
            raise OptionError("variant", f"expected 'improvement' or 'highest_loss', got {variant!r}")
        self.variant = variant
        self.previous_params: torch.Tensor | None = None

    def improvements(self, tasks: TaskGradients) -> torch.Tensor:
        if self.variant == "highest_loss" or self.previous_params is None:
            return tasks.losses
        previous = self.previous_params.to(tasks.params.device)
        return tasks.losses - tasks.losses_at(previous)

    def combine(self, tasks: TaskGradients) -> Combined:
        chosen = int(torch.argmax(self.improvements(tasks)))
        self.previous_params = tasks.params.detach().cpu().clone()
        weights = torch.zeros(tasks.num_tasks, dtype=tasks.grads.dtype, device=tasks.grads.device)
        weights[chosen] = 1.0
        return Combined(direction=tasks.grads[chosen].clone(), weights=weights,
                        stats={"improvement_task_loss": tasks.losses[chosen].item()})

    def state_dict(self) -> dict:
        return {"previous_params": self.previous_params}

    def load_state_dict(self, state: dict) -> None:
        self.previous_params = state["previous_params"]
