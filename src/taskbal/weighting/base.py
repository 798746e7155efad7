"""The contract between the training loops and every task-balancing method.

A weighting turns the per-task query losses and meta-gradients of one meta-batch
into the single direction handed to the outer optimiser. Methods that keep state
(SIMOL's re-weighting network, the improvement function's previous iterate) keep
it on the object and expose it through ``state_dict`` so checkpoints resume exactly.

A weighting sees what it declares in ``reads``: the loops hand it ``tasks.only(weighting.reads)``,
whose other fields raise (MGDA and CAGrad read only the gradients). A method that plans several outer
steps ahead (TOW, ``plans_ahead``) is handed what planning needs once, explicitly: the learner, the
outer optimiser and the upcoming meta-batches (``Planning``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class TaskGradients:
    """Everything a weighting may look at for one meta-batch of k tasks.

    losses:    [k] post-adaptation query losses at the current meta-parameters (detached).
    grads:     [k, d] per-task meta-gradients, flattened over all meta-parameters (detached); None where the
               loop took the weighted direction in one pass (``Weighting.weights_before_gradients``).
    features:  [k, f] a fixed-size description of each task (for SIMOL's re-weighting net).
    params:    [d] current meta-parameters, flattened (detached).
    iteration: outer iteration index, 0-based.
    generator: a torch.Generator seeded from (seed, iteration), for methods that draw random numbers.
    losses_at: evaluates the same k tasks' query losses at other flattened meta-parameters.
    task_ids:  [k] indices of the tasks in the training pool (for methods that keep a distribution
               over training tasks, DA-MAML / TR-MAML); None when unknown.
    num_pool_tasks: size of that pool (0 when unknown).
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

    @property
    def num_tasks(self) -> int:
        return self.features.shape[0]

    def only(self, fields: frozenset[str]) -> TaskView:
        return TaskView(self, fields)


FIELDS = frozenset(("losses", "grads", "features", "params", "iteration", "generator", "losses_at", "task_ids",
                    "num_pool_tasks"))


class TaskView:
    """The fields of a TaskGradients that a weighting declared in ``reads`` (and ``num_tasks``, the batch size);
    reading any other is an error naming it, so ``reads`` is exactly what the method depends on."""

    __slots__ = ("_tasks", "_fields")

    def __init__(self, tasks: TaskGradients, fields: frozenset[str]):
        unknown = sorted(set(fields) - FIELDS)
        if unknown:
            raise ValueError(f"reads: {unknown} are not fields of TaskGradients ({sorted(FIELDS)})")
        object.__setattr__(self, "_tasks", tasks)
        object.__setattr__(self, "_fields", fields | {"num_tasks"})

    def __getattr__(self, name: str):
        if name in self._fields:
            return getattr(self._tasks, name)
        raise AttributeError(f"TaskGradients.{name} is not among the fields this weighting reads "
                             f"({sorted(self._fields)}); add it to the weighting's ``reads``")

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError("a weighting must not change the task gradients")


@dataclass
class Planning:
    """What a weighting that plans ahead (TOW) needs besides one meta-batch's gradients.

    learner:   re-evaluates tasks at other meta-parameters.
    optimizer: the outer optimiser, read-only (its steps are simulated).
    upcoming:  upcoming(iteration, n) → the TaskBatches of outer iterations iteration … iteration + n − 1
               (fewer at the end of training).
    """

    learner: object
    optimizer: torch.optim.Optimizer
    upcoming: Callable[[int, int], list]


@dataclass
class Combined:
    """The result of combining a meta-batch: the direction to descend along and the task weights used."""

    direction: torch.Tensor  # [d]; the optimiser receives this as the gradient
    weights: torch.Tensor  # [k]; weight of each task in ``direction`` (for logging)
    stats: dict[str, float] = field(default_factory=dict)  # scalars worth tracking (logged to MLflow)


class Weighting:
    """Base class: subclasses implement ``combine``; stateful ones also ``state_dict``/``load_state_dict``."""

    name = "base"
    # The TaskGradients fields ``combine`` and ``after_step`` read (the loops pass only these).
    reads: frozenset[str] = FIELDS
    # Set by methods that must see the per-task gradients again after the optimiser step
    # (the training loop then recomputes them on the same tasks and calls ``after_step``).
    needs_gradients_after_step = False
    # Set by methods that plan several outer steps ahead; the loop then calls ``attach(Planning(...))``.
    plans_ahead = False

    def __init__(self, num_params: int, feature_dim: int | tuple[int, ...], seed: int):
        # feature_dim: the size of a task's features, or their shape where they are images
        # ((images, C, H, W), flattened in TaskGradients.features)
        self.num_params = num_params
        self.feature_dim = feature_dim
        self.seed = seed

    def combine(self, tasks: TaskGradients) -> Combined:  # pragma: no cover - interface
        raise NotImplementedError

    def weights_before_gradients(self, tasks: TaskGradients) -> torch.Tensor | None:
        """[k] task weights when they depend on which tasks the batch holds, not on their losses or gradients
        (TR-MAML's and DA-MAML's distribution p). Where the learner couples the tasks (Nash-GBML's penalties),
        the loop then takes the weighted direction in one backward pass instead of the k rows, and calls
        ``combine_weighted``. None (the default): ``combine`` needs the rows."""
        return None

    def combine_weighted(self, tasks: TaskGradients, weights: torch.Tensor,
                         direction: torch.Tensor) -> Combined:  # pragma: no cover - interface
        """``combine`` given ``direction`` = weights @ the rows; ``tasks`` has no ``grads``."""
        raise NotImplementedError

    def attach(self, planning: Planning) -> None:
        raise TypeError(f"weighting {self.name!r} does not plan ahead")

    def after_step(self, tasks: TaskGradients) -> dict[str, float]:
        """Called with the same tasks' losses and gradients at the updated parameters."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
