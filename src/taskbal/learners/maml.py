"""MAML (Finn et al., 2017), batched over the tasks of a meta-batch.

Every task gets its own copy of the meta-parameters, stacked along a leading task
dimension. The network is evaluated on all tasks at once (the model's own
``batched_forward`` when it has one, else ``torch.func.vmap(functional_call(...))``),
so an inner step of k tasks is one batched forward and one backward instead of k of each. Because the tasks share nothing
after the copy, the gradient of the *sum* of task losses with respect to the
stacked copies is exactly the stack of per-task gradients: one backward pass gives
all k per-task meta-gradients that MGDA, CAGrad, PCGrad and SIMOL need.

Options (config ``learner``):
- ``inner_steps``, ``inner_lr``: adaptation on the support set.
- ``first_order``: drop the second-order terms (FOMAML) by not building a graph of
  the inner gradients.
- ``inner_optimizer``: ``sgd`` (Finn et al.; learn2learn's ``maml_sine``) or ``adam``
  (SIMOL §5.1 says "Adam, with an initial learning rate of 0.01 ... for 5 steps").
  The differentiable Adam is the textbook update with bias correction; its
  denominator is ``sqrt(v_hat + 1e-16) + eps`` so that a parameter whose gradient is
  exactly zero (a dead ReLU) does not produce an infinite second-order term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

Params = dict[str, torch.Tensor]


@dataclass
class TaskBatch:
    """k tasks: support and query sets stacked along dim 0, plus a per-task feature vector."""

    support_x: torch.Tensor  # [k, n_support, in_dim]
    support_y: torch.Tensor  # [k, n_support, out_dim]
    query_x: torch.Tensor  # [k, n_query, in_dim]
    query_y: torch.Tensor  # [k, n_query, out_dim]
    features: torch.Tensor  # [k, f]

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device) -> "TaskBatch":
        return TaskBatch(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x,
                                                  self.query_y, self.features)))


class MAML:
    def __init__(self, model: nn.Module, inner_steps: int = 5, inner_lr: float = 0.01,
                 first_order: bool = False, inner_optimizer: str = "sgd",
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8):
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"learner.inner_optimizer: expected 'sgd' or 'adam', got {inner_optimizer!r}")
        self.model = model
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.inner_optimizer = inner_optimizer
        self.adam_betas = adam_betas
        self.adam_eps = adam_eps
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        # A model may provide its own batched forward (MLP does: one baddbmm per layer);
        # any other module is batched generically with torch.func.vmap.
        self._batched_forward = getattr(model, "batched_forward", None) or vmap(self._forward_one_task)

    # -- parameters -------------------------------------------------------------------------
    def meta_parameters(self) -> Params:
        return dict(self.model.named_parameters())

    def flat_meta_parameters(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def unflatten(self, flat: torch.Tensor) -> Params:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            out[name] = flat[start:start + size].view(shape)
            start += size
        return out

    def per_task_copies(self, params: Params, num_tasks: int) -> Params:
        """Independent leaf copies [k, ...] whose gradients are the per-task meta-gradients."""
        return {name: p.detach().unsqueeze(0).repeat(num_tasks, *([1] * p.dim())).requires_grad_()
                for name, p in params.items()}

    # -- forward and adaptation --------------------------------------------------------------
    def _forward_one_task(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def task_losses(self, task_params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each task: [k]."""
        prediction = self._batched_forward(task_params, x)
        return (prediction - y).pow(2).flatten(1).mean(1)

    def adapt(self, task_params: Params, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> Params:
        """``inner_steps`` optimiser steps on each task's support set, all tasks at once."""
        names = list(task_params)
        params = list(task_params.values())
        moments = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
        for step in range(1, self.inner_steps + 1):
            loss = self.task_losses(dict(zip(names, params)), x, y).sum()
            grads = torch.autograd.grad(loss, params, create_graph=create_graph)
            if self.inner_optimizer == "sgd":
                params = [p - self.inner_lr * g for p, g in zip(params, grads)]
            else:
                params = self._adam_step(params, grads, moments, step)
        return dict(zip(names, params))

    def _adam_step(self, params, grads, moments, step):
        beta1, beta2 = self.adam_betas
        first, second = moments
        updated = []
        for i, (p, g) in enumerate(zip(params, grads)):
            first[i] = beta1 * first[i] + (1 - beta1) * g
            second[i] = beta2 * second[i] + (1 - beta2) * g * g
            m_hat = first[i] / (1 - beta1 ** step)
            v_hat = second[i] / (1 - beta2 ** step)
            updated.append(p - self.inner_lr * m_hat / ((v_hat + 1e-16).sqrt() + self.adam_eps))
        return updated

    # -- what the training loop and the evaluation call ----------------------------------------
    def meta_gradients(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-adaptation query losses [k] and per-task meta-gradients [k, d] (both detached)."""
        copies = self.per_task_copies(self.meta_parameters(), batch.num_tasks)
        adapted = self.adapt(copies, batch.support_x, batch.support_y, create_graph=not self.first_order)
        losses = self.task_losses(adapted, batch.query_x, batch.query_y)
        grads = torch.autograd.grad(losses.sum(), list(copies.values()))
        flat = torch.cat([g.reshape(batch.num_tasks, -1) for g in grads], dim=1)
        return losses.detach(), flat

    def adapted_query_losses(self, batch: TaskBatch, flat_params: torch.Tensor | None = None) -> torch.Tensor:
        """Query losses [k] after adaptation from the given (default: current) meta-parameters; no meta-graph."""
        params = self.meta_parameters() if flat_params is None else self.unflatten(flat_params)
        with torch.enable_grad():
            copies = self.per_task_copies(params, batch.num_tasks)
            adapted = self.adapt(copies, batch.support_x, batch.support_y, create_graph=False)
        with torch.no_grad():
            return self.task_losses({n: p.detach() for n, p in adapted.items()}, batch.query_x, batch.query_y)
