"""Reptile (Nichol, Achiam and Schulman, 2018), batched over the tasks of a meta-batch.

Each task takes ``inner_steps`` SGD (or Adam) steps from θ on its data, reaching φ_i; Reptile moves
θ towards the adapted weights, θ ← θ + ε (1/k) Σ_i (φ_i − θ) (Nichol et al., Alg. 2). No meta-graph is
built: the inner steps run without ``create_graph``.

How it plugs into the weightings (deliberate choice): ``meta_gradients`` returns, as task i's
"gradient", the pseudo-gradient g_i = (θ − φ_i) / s. An outer SGD step along the mean of the g_i
with learning rate ε·s is exactly Reptile's update, and every weighting (SIMOL, MGDA, …) combines
the g_i as it combines MAML's meta-gradients. The scale s is ``difference_scale``:
- ``null`` (default): s = inner_lr × inner_steps, so that g_i has the units of a loss gradient (for
  one SGD step g_i *is* the support-loss gradient at θ) and an outer Adam learning rate or a
  weighting's step size tuned for MAML transfers; an Adam outer optimiser is invariant to s anyway.
- a number: s itself (1.0 = the raw difference θ − φ_i of Nichol et al.'s ε-update).
The losses returned with them are the post-adaptation query losses, as for every learner.

``inner_data``: ``support`` (default) adapts on the support set, as at evaluation, so train and test
adaptation match; ``support_and_query`` trains each task on all of its examples, as Nichol et al.
do (Reptile needs no held-out query set for its update).
A Nash-GBML penalty (anchor θ) shapes the inner trajectory; its meta-gradient is not differentiated.
"""
from __future__ import annotations

import torch
from torch import nn

from .maml import MAML, TaskBatch


class Reptile(MAML):
    def __init__(self, model: nn.Module, inner_steps: int = 5, inner_lr: float = 0.01,
                 inner_optimizer: str = "sgd", adam_betas: tuple[float, float] = (0.9, 0.999),
                 adam_eps: float = 1e-8, loss: str = "mse", penalty: dict | None = None,
                 evaluate_with_penalty: bool = True, difference_scale: float | None = None,
                 inner_data: str = "support", task_chunk: int | str | None = "auto"):
        super().__init__(model, inner_steps=inner_steps, inner_lr=inner_lr, first_order=True,
                         inner_optimizer=inner_optimizer, adam_betas=adam_betas, adam_eps=adam_eps, loss=loss,
                         penalty=penalty, evaluate_with_penalty=evaluate_with_penalty, task_chunk=task_chunk)
        if inner_steps < 1:
            raise ValueError(f"learner.inner_steps: Reptile needs at least one inner step, got {inner_steps}")
        if difference_scale is not None and not (isinstance(difference_scale, (int, float)) and difference_scale > 0):
            raise ValueError(f"learner.difference_scale: must be > 0 or null, got {difference_scale!r}")
        if inner_data not in ("support", "support_and_query"):
            raise ValueError(f"learner.inner_data: expected 'support' or 'support_and_query', got {inner_data!r}")
        self.difference_scale = float(difference_scale) if difference_scale is not None else inner_lr * inner_steps
        self.inner_data = inner_data

    def _training_data(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inner_data == "support":
            return batch.support_x, batch.support_y
        return torch.cat([batch.support_x, batch.query_x], dim=1), torch.cat([batch.support_y, batch.query_y], dim=1)

    def meta_gradients_of_chunk(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-adaptation query losses [k] and pseudo-gradients (θ − φ_i) / difference_scale [k, d]."""
        k = batch.num_tasks
        x, y = self._training_data(batch)
        with torch.enable_grad():
            copies = self.per_task_copies(self.meta_parameters(), k)
            adapted = {n: p.detach() for n, p in self.adapt(copies, x, y, create_graph=False).items()}
        with torch.no_grad():
            losses = self.task_losses(adapted, batch.query_x, batch.query_y)
            differences = [(copies[name].detach() - adapted[name]).reshape(k, -1) for name in self.names]
            return losses, torch.cat(differences, dim=1) / self.difference_scale
