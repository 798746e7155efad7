"""MAML (Finn et al., 2017), batched over the tasks of a meta-batch; the base class of the learners.

Every task gets its own copy of the meta-parameters, stacked along a leading task
dimension. The network is evaluated on all tasks at once (the model's own
``batched_forward`` when it has one — MLP: one ``baddbmm`` per layer, conv4: grouped convolutions
over stacked task channels — else ``torch.func.vmap(functional_call(...))``),
so an inner step of k tasks is one batched forward and one backward instead of k of each. Because
the tasks share nothing after the copy, the gradient of the *sum* of task losses with respect to the
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
  exactly zero (a dead ReLU) does not produce an infinite second-order term. Both steps use
  ``torch._foreach_*`` ops (one kernel launch per operation for all tensors instead of one per
  tensor; benchmarks/bench_learners.py measures the gain), same formulas.
- ``loss``: ``mse`` (regression: targets [k, n, out]) or ``cross_entropy`` (classification:
  targets are int64 labels [k, n], the network outputs logits [k, n, n_way]).
- ``penalty``: Nash-GBML's coupling of the inner adaptation (None = plain GBML). The dict is
  passed to ``nash_penalty.build_penalty``; the callable ``penalty(anchor, task_params, step) -> [k]``
  is added to the inner objective of every inner step: the step differentiates
  ``task_losses.sum() + penalty(anchor, params, step).sum()``. ``anchor`` is θ, the meta-parameters
  (with its graph), for MAML and Meta-SGD, and CAVIA's initial context φ_0.
  With a penalty and second-order meta-gradients, task i's adapted parameters depend on every
  task's copy, so the gradient with respect to copy i is no longer task i's meta-gradient. The
  learner then differentiates all tasks from one shared θ and takes the k rows of the Jacobian of
  the query losses (one batched backward with ``is_grads_batched``): row i is dL_i/dθ including
  the paths through the other tasks (Nash-GBML §3.2, "back-propagation of φ^(t)"). First-order
  meta-gradients do not differentiate through the inner steps, so they keep the one-backward path.
- ``penalty_gradients``: ``jacobian`` (default; the exact per-task rows above, several times
  the cost of a MAML step — benchmarks/bench_learners.py measures it) or ``per_copy`` (the one-backward
  gradients with respect to each task's copy: under coupling, row i is task i's copy's share of
  d(Σ_j L_j)/dθ, not dL_i/dθ, but the rows still *sum* to the exact total). ``per_copy`` is only
  right for weightings that use the sum (``mean``, i.e. Nash-GBML as published); anything that
  weights or compares rows (SIMOL, MGDA, TR-MAML's p) needs ``jacobian``.
- ``task_chunk`` (default ``auto``): process the tasks in groups of this many, one graph and one
  batched backward per group; null = the whole meta-batch in one graph. The results are the same
  (tasks are independent), only peak memory and speed change. ``auto`` picks per call
  (``chunk_size``): one task per graph for a convolutional network (any ``nn.Conv2d``) on the CPU,
  the whole meta-batch otherwise: MLPs anywhere, whose per-task kernels are too small to run well
  alone, and every network on CUDA, where batching the tasks is the point. A conv net's per-task
  kernels are big enough for the CPU on their own, and one graph for all tasks keeps every task's
  activations alive until its backward, so there the whole meta-batch was the slow choice for every
  learner (benchmarks/bench_learners.py; the measurements behind the rule are in benchmarks/README.md).
  An explicit integer or null keeps its meaning; an explicit one is not allowed with a penalty (it
  couples the whole meta-batch), and ``auto`` then takes the whole meta-batch. A big backbone on a
  GPU may need an explicit chunk to fit.
- ``evaluate_with_penalty`` (default true): adapt with the penalty also in ``evaluate_tasks`` (the
  Nash inner loop on each evaluation batch; Nash-GBML does not say which it uses); false =
  independent per-task adaptation at evaluation.

Subclasses (Meta-SGD, CAVIA, Reptile, ProtoNet) change what is meta-learned
(``meta_parameters``), what the inner loop adapts (``fast_weights`` / ``network_view``), the inner
update (``inner_update``) or the query outputs (``query_outputs``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

Params = dict[str, torch.Tensor]
LOSSES = ("mse", "cross_entropy")
AUTO = "auto"  # the default ``task_chunk``: ``MAML.chunk_size`` picks the chunking per batch


@dataclass
class TaskBatch:
    """k tasks: support and query sets stacked along dim 0, plus a per-task feature vector.

    Support sets of different sizes (any-shot episodes) are stacked padded at the end, with
    ``support_counts`` [k] the number of real support points of each task; a chunk of one task is cut to
    its real support set, so every learner sees exact sets (``ragged``: learners process such a batch one
    task at a time, ``MAML.chunk_size``)."""

    support_x: torch.Tensor  # [k, n_support, in_dim] or [k, n_support, C, H, W]
    support_y: torch.Tensor  # [k, n_support, out_dim] (regression) or int64 labels [k, n_support]
    query_x: torch.Tensor  # [k, n_query, ...]
    query_y: torch.Tensor  # [k, n_query, out_dim] or [k, n_query]
    features: torch.Tensor  # [k, f]
    support_counts: torch.Tensor | None = None  # [k] int64: real support points of a padded (ragged) batch

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    @property
    def ragged(self) -> bool:
        return self.support_counts is not None

    def fields(self) -> tuple:
        return (self.support_x, self.support_y, self.query_x, self.query_y, self.features, self.support_counts)

    def to(self, device: torch.device) -> TaskBatch:
        return TaskBatch(*(None if t is None else t.to(device) for t in self.fields()))

    def chunks(self, size: int | None) -> list[TaskBatch]:
        """Consecutive groups of at most ``size`` tasks (all tasks when ``size`` is None); a ragged batch's
        single tasks come cut to their real support sets."""
        if size == 1 and self.ragged:
            return [TaskBatch(self.support_x[i:i + 1, :n], self.support_y[i:i + 1, :n], self.query_x[i:i + 1],
                              self.query_y[i:i + 1], self.features[i:i + 1])
                    for i, n in enumerate(self.support_counts.tolist())]
        if size is None or size >= self.num_tasks:
            return [self]
        return [TaskBatch(*(None if t is None else t[start:start + size] for t in self.fields()))
                for start in range(0, self.num_tasks, size)]


def check_inner_options(inner_steps, inner_lr, inner_optimizer, loss, adam_betas=(0.9, 0.999),
                        adam_eps=1e-8, first_order=False) -> None:
    """The options every gradient-based learner shares; a bad value names its ``learner.<field>``."""
    if not isinstance(first_order, bool):
        raise ValueError(f"learner.first_order: expected true or false, got {first_order!r}")
    if not isinstance(inner_steps, int) or isinstance(inner_steps, bool) or inner_steps < 0:
        raise ValueError(f"learner.inner_steps: expected an integer >= 0, got {inner_steps!r}")
    if not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool) or not inner_lr > 0:
        raise ValueError(f"learner.inner_lr: must be > 0, got {inner_lr!r}")
    if inner_optimizer not in ("sgd", "adam"):
        raise ValueError(f"learner.inner_optimizer: expected 'sgd' or 'adam', got {inner_optimizer!r}")
    if loss not in LOSSES:
        raise ValueError(f"learner.loss: expected one of {list(LOSSES)}, got {loss!r}")
    if len(adam_betas) != 2 or not all(0 <= b < 1 for b in adam_betas):
        raise ValueError(f"learner.adam_betas: expected two numbers in [0, 1), got {adam_betas!r}")
    if not adam_eps >= 0:
        raise ValueError(f"learner.adam_eps: must be >= 0, got {adam_eps!r}")


def check_task_chunk(task_chunk) -> None:
    if task_chunk == AUTO or task_chunk is None:
        return
    if not isinstance(task_chunk, int) or isinstance(task_chunk, bool) or task_chunk < 1:
        raise ValueError(f"learner.task_chunk: expected 'auto', a positive integer or null, got {task_chunk!r}")


def build_penalty_option(penalty):
    """The Nash-GBML penalty callable of the ``learner.penalty`` option (None = no coupling)."""
    if penalty is None:
        return None
    if not isinstance(penalty, dict):
        raise ValueError(f"learner.penalty: expected a mapping of penalty options or null, got {penalty!r}")
    from .nash_penalty import build_penalty

    return build_penalty(**penalty)


def jacobian_rows(losses: torch.Tensor, leaves: list[torch.Tensor], batched: bool = True) -> list[torch.Tensor]:
    """d losses[i] / d leaf for every i: one [k, *leaf.shape] tensor per leaf.

    ``batched`` runs the k vector-Jacobian products as one vmapped backward (``is_grads_batched``);
    an op without a batching rule for its backward falls back to k ordinary backward passes.
    """
    k = losses.shape[0]
    if batched:
        try:
            eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
            return list(torch.autograd.grad(losses, leaves, grad_outputs=eye, is_grads_batched=True,
                                            retain_graph=True, allow_unused=True, materialize_grads=True))
        except RuntimeError:
            pass
    per_task = [torch.autograd.grad(losses[i], leaves, retain_graph=True, allow_unused=True, materialize_grads=True)
                for i in range(k)]
    return [torch.stack(column) for column in zip(*per_task)]


# What a planner (TOW) may ask of a learner, and the method each capability rests on. MAML has them
# all; a subclass that overrides the method loses the capability unless it declares it again.
CAPABILITIES = {
    "descends_query_losses": "meta_gradients_of_chunk",  # meta-gradient = gradient of the query losses
    "predicts_after_adapting": "query_outputs",  # query outputs = predict(adapt(support), query)
    "predicts_with_model_forward": "predict",  # predict = the model's batched forward (``model_inputs``)
}


class MAML:
    descends_query_losses = True
    predicts_after_adapting = True
    predicts_with_model_forward = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for capability, method in CAPABILITIES.items():
            if method in vars(cls) and capability not in vars(cls):
                setattr(cls, capability, False)

    def __init__(self, model: nn.Module, inner_steps: int = 5, inner_lr: float = 0.01,
                 first_order: bool = False, inner_optimizer: str = "sgd",
                 adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                 loss: str = "mse", penalty: dict | None = None, evaluate_with_penalty: bool = True,
                 penalty_gradients: str = "jacobian", task_chunk: int | str | None = "auto"):
        check_inner_options(inner_steps, inner_lr, inner_optimizer, loss, adam_betas, adam_eps, first_order)
        check_task_chunk(task_chunk)
        # ``task_chunk`` keeps an explicit setting (None = whole meta-batch, as before); under "auto" it
        # is None too and ``auto_task_chunk`` says that ``chunk_size`` picks per call.
        self.auto_task_chunk = task_chunk == AUTO
        self.task_chunk = None if self.auto_task_chunk else task_chunk
        if penalty_gradients not in ("jacobian", "per_copy"):
            raise ValueError(f"learner.penalty_gradients: expected 'jacobian' or 'per_copy', got {penalty_gradients!r}")
        self.penalty_gradients = penalty_gradients
        self.model = model
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.inner_optimizer = inner_optimizer
        self.adam_betas = tuple(adam_betas)
        self.adam_eps = adam_eps
        self.loss = loss
        if penalty is not None and self.task_chunk is not None:
            raise ValueError("learner.task_chunk: a penalty couples all tasks of the meta-batch; "
                             "they cannot be split into chunks")
        self.penalty = build_penalty_option(penalty)
        self.evaluate_with_penalty = evaluate_with_penalty
        # A model may provide its own batched forward (MLP does: one baddbmm per layer);
        # any other module is batched generically with torch.func.vmap ("different" randomness:
        # each task draws its own dropout masks).
        self._batched_forward = getattr(model, "batched_forward", None) or vmap(
            self._forward_one_task, randomness="different")
        self._convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())

    # -- parameters -------------------------------------------------------------------------
    def meta_parameters(self) -> Params:
        """Everything the outer loop learns, by name, in the order of the flat meta-gradient."""
        return dict(self.model.named_parameters())

    def parameters(self) -> list[torch.Tensor]:
        """What the outer optimiser steps, in the order of the flat meta-gradient."""
        return list(self.meta_parameters().values())

    @property
    def names(self) -> list[str]:
        return list(self.meta_parameters())

    @property
    def shapes(self) -> list[torch.Size]:
        return [p.shape for p in self.meta_parameters().values()]

    def state_dict(self) -> dict:
        """Everything meta-learned (the network; subclasses add their own meta-parameters)."""
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    def flat_meta_parameters(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

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

    @property
    def network_names(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    # -- forward and losses ------------------------------------------------------------------
    def _forward_one_task(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Network outputs of every task: params [k, ...], x [k, n, ...] → [k, n, out]."""
        return self._batched_forward(params, x)

    def model_inputs(self, params: Params) -> tuple[Params, torch.Tensor | None]:
        """(network weights, context) that ``predict`` hands to the model's batched forward."""
        return params, None

    def loss_per_task(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error or mean cross-entropy of each task: [k]."""
        if self.loss == "mse":
            if not targets.is_floating_point():
                raise ValueError("learner.loss: the targets are integer class labels; set loss: cross_entropy")
            return (outputs - targets).pow(2).flatten(1).mean(1)
        k, n = targets.shape
        return F.cross_entropy(outputs.reshape(k * n, -1), targets.reshape(-1), reduction="none").view(k, n).mean(1)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = self.loss_per_task(outputs, targets)
        if self.loss == "mse":
            return {"loss": losses, "mse": losses}
        return {"loss": losses, "accuracy": (outputs.argmax(-1) == targets).to(outputs.dtype).mean(1)}

    def task_losses(self, task_params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of each task with its own parameters: [k]."""
        return self.loss_per_task(self.predict(task_params, x), y)

    # -- the inner loop ------------------------------------------------------------------------
    def fast_weights(self, task_params: Params) -> Params:
        """The per-task tensors the inner loop changes (MAML: all network weights)."""
        return {name: task_params[name] for name in self.network_names}

    def network_view(self, task_params: Params, fast: Params) -> Params:
        """What ``predict`` takes, given the meta-parameter copies and the current fast weights."""
        return fast

    def penalty_anchor(self, task_params: Params) -> Params:
        """θ for the penalty: the copies are all equal to θ, so their mean is θ (with its graph)."""
        return {name: task_params[name].mean(0) for name in self.network_names}

    def adapt(self, task_params: Params, x: torch.Tensor, y: torch.Tensor, create_graph: bool,
              anchor: Params | None = None, with_penalty: bool = True) -> Params:
        """``inner_steps`` optimiser steps on each task's support set, all tasks at once."""
        fast = self.fast_weights(task_params)
        names, values = list(fast), list(fast.values())
        penalty = self.penalty if with_penalty else None
        if penalty is not None and anchor is None:
            anchor = self.penalty_anchor(task_params)
        at_adapted = penalty is not None and getattr(penalty, "at", "inner") == "adapted"
        state: dict = {}
        penalty_state: dict = {}  # the penalty step of ``at: adapted`` keeps its own Adam moments
        for step in range(self.inner_steps):
            current = dict(zip(names, values))
            objective = self.task_losses(self.network_view(task_params, current), x, y).sum()
            if penalty is not None and not at_adapted:
                objective = objective + penalty(anchor, current, step).sum()
            grads = torch.autograd.grad(objective, values, create_graph=create_graph)
            values = self.inner_update(task_params, names, values, list(grads), step, state)
            if at_adapted:
                # Not in the paper (nash_penalty.py, ``at``): a second step on the penalty alone,
                # taken at the parameters the plain step reached, so it acts from the first step.
                adapted = dict(zip(names, values))
                pull = penalty(anchor, adapted, step, where="adapted").sum()
                grads = torch.autograd.grad(pull, values, create_graph=create_graph)
                values = self.inner_update(task_params, names, values, list(grads), step, penalty_state)
        return self.network_view(task_params, dict(zip(names, values)))

    def inner_update(self, task_params: Params, names: list[str], values: list[torch.Tensor],
                     grads: list[torch.Tensor], step: int, state: dict) -> list[torch.Tensor]:
        if self.inner_optimizer == "sgd":
            return list(torch._foreach_add(values, grads, alpha=-self.inner_lr))
        return self._adam_step(values, grads, state, step + 1)

    def _adam_step(self, params, grads, state: dict, step: int):
        """Differentiable Adam (bias-corrected), all tensors per operation; ``state`` keeps the moments."""
        beta1, beta2 = self.adam_betas
        if "first" not in state:
            state["first"] = [torch.zeros_like(p) for p in params]
            state["second"] = [torch.zeros_like(p) for p in params]
        first = torch._foreach_add(torch._foreach_mul(state["first"], beta1), grads, alpha=1 - beta1)
        second = torch._foreach_addcmul(torch._foreach_mul(state["second"], beta2), grads, grads, value=1 - beta2)
        state["first"], state["second"] = first, second
        m_hat = torch._foreach_div(first, 1 - beta1 ** step)
        v_hat = torch._foreach_div(second, 1 - beta2 ** step)
        denominator = torch._foreach_add(torch._foreach_sqrt(torch._foreach_add(v_hat, 1e-16)), self.adam_eps)
        # (not _foreach_addcdiv: its double backward indexes out of range in torch 2.14)
        return list(torch._foreach_add(params, torch._foreach_div(m_hat, denominator), alpha=-self.inner_lr))

    def query_outputs(self, task_params: Params, batch: TaskBatch, create_graph: bool,
                      anchor: Params | None = None, with_penalty: bool = True) -> torch.Tensor:
        """Network outputs on the query sets after adaptation on the support sets: [k, n_query, out]."""
        adapted = self.adapt(task_params, batch.support_x, batch.support_y, create_graph, anchor, with_penalty)
        return self.predict(adapted, batch.query_x)

    # -- what the training loop and the evaluation call ----------------------------------------
    @property
    def couples_tasks(self) -> bool:
        """Whether a task's meta-gradient depends on the other tasks' copies (penalty + second order)."""
        return (self.penalty is not None and not self.first_order and self.inner_steps > 0
                and self.penalty_gradients == "jacobian")

    def chunk_size(self, batch: TaskBatch) -> int | None:
        """Tasks per graph for this batch: the explicit ``task_chunk``, or under ``auto`` one task per
        graph for a convolutional network on the CPU and the whole meta-batch otherwise (always the
        whole meta-batch when a penalty couples the tasks); one task per graph for a ragged batch."""
        if batch.ragged:  # support sets of different sizes: one task per graph, each cut to its own
            if self.penalty is not None:
                raise ValueError("learner.penalty: a penalty couples the tasks of a meta-batch, whose support sets "
                                 "here differ in size (any-shot episodes); use no penalty")
            return 1
        if not self.auto_task_chunk:
            return self.task_chunk
        if self.penalty is not None or batch.support_x.device.type != "cpu" or not self._convolutional:
            return None
        return 1

    def meta_gradients(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-adaptation query losses [k] and per-task meta-gradients [k, d] (both detached)."""
        parts = [self.meta_gradients_of_chunk(part) for part in batch.chunks(self.chunk_size(batch))]
        return torch.cat([losses for losses, _ in parts]), torch.cat([grads for _, grads in parts])

    def meta_gradients_of_chunk(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.couples_tasks:
            return self._coupled_meta_gradients(batch)
        k = batch.num_tasks
        copies = self.per_task_copies(self.meta_parameters(), k)
        outputs = self.query_outputs(copies, batch, create_graph=not self.first_order)
        losses = self.loss_per_task(outputs, batch.query_y)
        # A meta-parameter the query loss does not reach (Meta-SGD's rates with 0 inner steps) has
        # meta-gradient 0.
        grads = torch.autograd.grad(losses.sum(), list(copies.values()), allow_unused=True, materialize_grads=True)
        return losses.detach(), torch.cat([g.reshape(k, -1) for g in grads], dim=1)

    def _coupled_meta_gradients(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task meta-gradients when the penalty couples the tasks: rows of the Jacobian dL/dθ."""
        shared, losses = self._coupled_query_losses(batch)
        rows = jacobian_rows(losses, list(shared.values()))
        return losses.detach(), torch.cat([r.reshape(batch.num_tasks, -1) for r in rows], dim=1)

    def _coupled_query_losses(self, batch: TaskBatch) -> tuple[Params, torch.Tensor]:
        """One shared θ (a leaf) and the query losses [k] of the Nash game's adapted tasks, with the graph."""
        k = batch.num_tasks
        shared = {name: p.detach().requires_grad_() for name, p in self.meta_parameters().items()}
        copies = {name: p.expand(k, *p.shape) for name, p in shared.items()}
        outputs = self.query_outputs(copies, batch, create_graph=True, anchor=self.anchor_of(shared))
        return shared, self.loss_per_task(outputs, batch.query_y)

    def weighted_meta_gradient(self, batch: TaskBatch, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query losses [k] and Σ_i weights_i · dL_i/dθ [d] (both detached), for weights known before the
        gradients (TR-MAML's p). Where the penalty couples the tasks, one backward pass of the weighted loss
        instead of the Jacobian's k rows: the same direction by linearity, at about the cost of a MAML step.
        Otherwise (or where a subclass has its own meta-gradient: Reptile) the weighted sum of the rows."""
        if not (self.couples_tasks and self.descends_query_losses):
            losses, grads = self.meta_gradients(batch)
            return losses, weights.to(grads) @ grads
        shared, losses = self._coupled_query_losses(batch)
        grads = torch.autograd.grad((weights.to(losses) * losses).sum(), list(shared.values()), allow_unused=True,
                                    materialize_grads=True)
        return losses.detach(), torch.cat([g.reshape(-1) for g in grads])

    def anchor_of(self, meta: Params) -> Params:
        """The penalty's anchor from the (unbatched) meta-parameters: θ, the network weights."""
        return {name: meta[name] for name in self.network_names}

    def _outputs_without_meta_graph(self, batch: TaskBatch, params: Params, with_penalty: bool) -> torch.Tensor:
        with torch.enable_grad():
            copies = self.per_task_copies(params, batch.num_tasks)
            adapted = self.adapt(copies, batch.support_x, batch.support_y, create_graph=False,
                                 with_penalty=with_penalty)
        with torch.no_grad():
            return self.predict({n: p.detach() for n, p in adapted.items()}, batch.query_x)

    def evaluate_tasks(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Per-task metrics after adaptation from the current meta-parameters: ``loss`` plus ``mse``
        (regression) or ``accuracy`` (classification), each [k]."""
        parts = []
        for part in batch.chunks(self.chunk_size(batch)):
            outputs = self._outputs_without_meta_graph(part, self.meta_parameters(), self.evaluate_with_penalty)
            parts.append({name: value.detach() for name, value in self.metrics(outputs, part.query_y).items()})
        return {name: torch.cat([metrics[name] for metrics in parts]) for name in parts[0]}

    def adapted_query_losses(self, batch: TaskBatch, flat_params: torch.Tensor | None = None) -> torch.Tensor:
        """Query losses [k] after adaptation from the given (default: current) meta-parameters; no meta-graph."""
        params = self.meta_parameters() if flat_params is None else self.unflatten(flat_params)
        losses = []
        for part in batch.chunks(self.chunk_size(batch)):
            outputs = self._outputs_without_meta_graph(part, params, with_penalty=True)
            with torch.no_grad():
                losses.append(self.loss_per_task(outputs, part.query_y))
        return torch.cat(losses)
