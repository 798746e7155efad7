"""CAVIA (Zintgraf et al., 2019): fast context adaptation. Only a context vector adapts per task.

Each task starts from the context φ_0 = 0 and takes ``inner_steps`` gradient steps on it
(φ ← φ − α ∇_φ L(θ, φ) on the support set) while the network weights θ stay fixed; the meta-loss is
the query loss at (θ, φ_n) and the outer loop learns θ only (Zintgraf et al., Alg. 1). The
meta-parameters and the flat meta-gradient are therefore the network weights alone. Batched as MAML:
per-task copies of θ, a [k, num_context] context, one backward for all per-task meta-gradients;
second order differentiates through the context steps (dφ_n/dθ).

Where the context enters is the network's business (``model.context`` = number of context
parameters, documented in models/): the MLP concatenates it to the input (CAVIA's regression and
CelebA networks), conv4 feeds it to FiLM layers (γ, β) of the blocks in ``model.film_blocks``
(CAVIA's mini-ImageNet network: block 3). The context size is a model option because the network's
shapes depend on it; the learner's ``num_context`` is optional and must agree with it when given.

Deliberate choices:
- Defaults are CAVIA's code defaults: ``inner_steps`` 2, ``inner_lr`` 1.0 (the context is
  zero-initialised and its scale is free, so a large rate is natural); configs set their own.
- ``inner_optimizer: adam`` adapts the context with the differentiable Adam of MAML (not in the paper).
- Nash-GBML penalty: the anchor is φ_0 (zeros of the context size) and the task parameters passed to
  the penalty are ``{"context": [k, num_context]}`` (Nash-GBML App. E: "set θ = φ_0 for CAVIA").
- CAVIA's code clamps meta-gradients to [−10, 10] in the outer step; that belongs to the outer loop,
  not to this learner.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from .maml import MAML, Params

CONTEXT = "context"


class CAVIA(MAML):
    predicts_with_model_forward = True  # the model's batched forward with the context (``model_inputs``)

    def __init__(self, model: nn.Module, inner_steps: int = 2, inner_lr: float = 1.0,
                 first_order: bool = False, inner_optimizer: str = "sgd",
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 loss: str = "mse", penalty: dict | None = None, evaluate_with_penalty: bool = True,
                 penalty_gradients: str = "jacobian", task_chunk: int | str | None = "auto",
                 num_context: int | None = None):
        model_context = getattr(model, "num_context", 0)
        if model_context == 0:
            raise ValueError("model.context: CAVIA adapts context parameters; build the network with "
                             "model.context > 0 (e.g. 4 for the sinusoid MLP, 100 for conv4 with FiLM)")
        if num_context is not None and num_context != model_context:
            raise ValueError(f"learner.num_context: {num_context!r} disagrees with model.context = {model_context}")
        super().__init__(model, inner_steps=inner_steps, inner_lr=inner_lr, first_order=first_order,
                         inner_optimizer=inner_optimizer, adam_betas=adam_betas, adam_eps=adam_eps, loss=loss,
                         penalty=penalty, evaluate_with_penalty=evaluate_with_penalty,
                         penalty_gradients=penalty_gradients, task_chunk=task_chunk)
        self.num_context = model_context
        self._context_forward = getattr(model, "batched_forward", None) or vmap(
            self._forward_one_task_with_context, randomness="different")

    def _forward_one_task_with_context(self, params: Params, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x, context))

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        network, context = self.model_inputs(params)
        return self._context_forward(network, x, context)

    def model_inputs(self, params: Params) -> tuple[Params, torch.Tensor | None]:
        return {name: params[name] for name in self.network_names}, params[CONTEXT]

    def fast_weights(self, task_params: Params) -> Params:
        """φ_0 = 0 for every task: a fresh [k, num_context] leaf the inner loop differentiates."""
        reference = next(iter(task_params.values()))
        context = reference.new_zeros(reference.shape[0], self.num_context).requires_grad_()
        return {CONTEXT: context}

    def network_view(self, task_params: Params, fast: Params) -> Params:
        return {**{name: task_params[name] for name in self.network_names}, CONTEXT: fast[CONTEXT]}

    def penalty_anchor(self, task_params: Params) -> Params:
        reference = next(iter(task_params.values()))
        return {CONTEXT: reference.new_zeros(self.num_context)}

    def anchor_of(self, meta: Params) -> Params:
        reference = next(iter(meta.values()))
        return {CONTEXT: reference.new_zeros(self.num_context)}
