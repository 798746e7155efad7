"""Meta-SGD (Li et al., 2017): MAML whose inner step has a learned learning rate per parameter.

The inner step is φ ← φ − α ∘ ∇L (Li et al., Eq. 2; element-wise product), α a tensor of the shape
of every network tensor, meta-learned together with θ: the outer optimiser steps (θ, α) and the
per-task meta-gradient has both blocks (flat order: all network tensors, then all rates in the
same order). Batched over tasks as MAML: every task gets its own copy of θ *and* α, so one
backward gives dL_i/dθ and dL_i/dα for every task i.

Deliberate choices:
- α is initialised to ``inner_lr`` everywhere (learn2learn's ``MetaSGD(lr=...)``). Li et al. draw
  it uniformly from [0.005, 0.1] for regression; ``inner_lr_range: [low, high]`` does that (drawn
  from torch's global generator, which the training loop seeds before building the learner).
- The inner optimiser is plain SGD scaled by α (the method's definition); ``inner_optimizer`` is
  accepted only as ``sgd`` so that a config shared with MAML rows fails loudly if it asks for Adam.
- ``first_order``: the inner gradients are not differentiated (learn2learn's ``first_order``); α
  still gets its meta-gradient −∇L(φ) ⊙ dL/dφ' through the update.
- Nash-GBML penalty: the rates also multiply the penalty gradient (φ ← φ − α ∘ (∇L + ∇p));
  the anchor is θ.
"""
from __future__ import annotations

import torch
from torch import nn

from .maml import MAML, Params

RATE_PREFIX = "inner_lr:"  # ':' never occurs in a module's parameter names


def rate_name(name: str) -> str:
    return RATE_PREFIX + name


class MetaSGD(MAML):
    def __init__(self, model: nn.Module, inner_steps: int = 1, inner_lr: float = 0.01,
                 first_order: bool = False, inner_optimizer: str = "sgd", loss: str = "mse",
                 penalty: dict | None = None, evaluate_with_penalty: bool = True,
                 penalty_gradients: str = "jacobian", task_chunk: int | str | None = "auto",
                 inner_lr_range: list[float] | None = None):
        if inner_optimizer != "sgd":
            raise ValueError(f"learner.inner_optimizer: Meta-SGD's learned rates scale plain SGD steps; "
                             f"only 'sgd' is possible, got {inner_optimizer!r}")
        super().__init__(model, inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                         inner_optimizer="sgd", loss=loss, penalty=penalty,
                         evaluate_with_penalty=evaluate_with_penalty,
                         penalty_gradients=penalty_gradients, task_chunk=task_chunk)
        # Created on the network's device: build the learner after moving the model (train.py does).
        self.rates = [nn.Parameter(self._initial_rate(p, inner_lr, inner_lr_range)) for p in model.parameters()]

    @staticmethod
    def _initial_rate(param: torch.Tensor, inner_lr: float, inner_lr_range) -> torch.Tensor:
        if inner_lr_range is None:
            return torch.full_like(param.detach(), float(inner_lr))
        if (not isinstance(inner_lr_range, (list, tuple)) or len(inner_lr_range) != 2
                or not 0 < inner_lr_range[0] <= inner_lr_range[1]):
            raise ValueError("learner.inner_lr_range: expected [low, high] with 0 < low <= high, "
                             f"got {inner_lr_range!r}")
        low, high = inner_lr_range
        return torch.empty_like(param.detach()).uniform_(low, high)

    def meta_parameters(self) -> Params:
        network = dict(self.model.named_parameters())
        return {**network, **{rate_name(name): rate for name, rate in zip(network, self.rates)}}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "inner_lrs": [rate.detach().clone() for rate in self.rates]}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            for rate, saved in zip(self.rates, state["inner_lrs"]):
                rate.copy_(saved)

    def inner_update(self, task_params: Params, names: list[str], values: list[torch.Tensor],
                     grads: list[torch.Tensor], step: int, state: dict) -> list[torch.Tensor]:
        rates = [task_params[rate_name(name)] for name in names]
        return list(torch._foreach_sub(values, torch._foreach_mul(rates, grads)))
