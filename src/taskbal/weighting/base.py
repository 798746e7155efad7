"""The contract between the training loop and every task-balancing method.

A weighting turns the per-task query losses and meta-gradients of one meta-batch
into the single direction handed to the outer optimiser. Methods that keep state
(SIMOL's re-weighting network, the improvement function's previous iterate) keep
it on the object and expose it through ``state_dict`` so checkpoints resume exactly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class TaskGradients:
    """Everything a weighting may look at for one meta-batch of k tasks.

    losses:    [k] post-adaptation query losses at the current meta-parameters (detached).
    grads:     [k, d] per-task meta-gradients, flattened over all meta-parameters (detached).
    features:  [k, f] a fixed-size description of each task (for SIMOL's re-weighting net).
    params:    [d] current meta-parameters, flattened (detached).
    iteration: outer iteration index, 0-based.
    generator: a torch.Generator seeded from (seed, iteration), for methods that draw random numbers.
    losses_at: evaluates the same k tasks' query losses at other flattened meta-parameters.
    task_ids:  [k] indices of the tasks in the training pool (for methods that keep a distribution
               over training tasks, DA-MAML / TR-MAML); None when unknown.
    num_pool_tasks: size of that pool (0 when unknown).
    learner:   the learner (for methods that re-evaluate tasks at other meta-parameters: TOW).
    upcoming:  upcoming(n) → the TaskBatches of this and the next n−1 outer iterations (fewer at the end
               of training), for methods that plan several outer steps ahead (TOW).
    optimizer: the outer optimiser, read-only (TOW simulates its steps).
    """

    losses: torch.Tensor
    grads: torch.Tensor
    features: torch.Tensor
    params: torch.Tensor
    iteration: int
    generator: torch.Generator
    losses_at: Callable[[torch.Tensor], torch.Tensor] | None = None
    task_ids: torch.Tensor | None = None
    num_pool_tasks: int = 0
    learner: object | None = None
    upcoming: Callable[[int], list] | None = None
    optimizer: torch.optim.Optimizer | None = None

    @property
    def num_tasks(self) -> int:
        return self.grads.shape[0]


@dataclass
class Combined:
    """The result of combining a meta-batch: the direction to descend along and the task weights used."""

    direction: torch.Tensor  # [d]; the optimiser receives this as the gradient
    weights: torch.Tensor  # [k]; weight of each task in ``direction`` (for logging)
    stats: dict[str, float] = field(default_factory=dict)  # scalars worth tracking (logged to MLflow)


class Weighting:
    """Base class: subclasses implement ``combine``; stateful ones also ``state_dict``/``load_state_dict``."""

    name = "base"
    # Set by methods that must see the per-task gradients again after the optimiser step
    # (the training loop then recomputes them on the same tasks and calls ``after_step``).
    needs_gradients_after_step = False

    def __init__(self, num_params: int, feature_dim: int, seed: int):
        self.num_params = num_params
        self.feature_dim = feature_dim
        self.seed = seed

    def combine(self, tasks: TaskGradients) -> Combined:  # pragma: no cover - interface
        raise NotImplementedError

    def after_step(self, tasks: TaskGradients) -> dict[str, float]:
        """Called with the same tasks' losses and gradients at the updated parameters."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
