"""One single-level multi-task step for every registered weighting (EW = ``mean``, ``mgda``, …).

Thesis Ch. 2 (Eq. 2.1–2.3): the shared parameters θ receive a combination of the per-task
gradients ∇_θ L_i; each head φ_i receives its own task's gradient. Per iteration:

    L_i = task i's loss on its mini-batch (its objective's: cross-entropy, or a dense loss) [m]
    g_i = ∇_θ L_i                                                          (per-task gradients [m, d])
    (d, w) = weighting.combine(L, g)          the SAME registry and code as meta-learning
    θ.grad = s·d,    φ_i.grad = s·w_i ∇_{φ_i} L_i   (heads: weighted)   or   ∇_{φ_i} L_i   (heads: unit)

with s = 1 (``scale: mean``: ``mean`` gives the gradient of the average loss (1/m) Σ L_i, the
thesis' EW, Eq. 2.1) or s = m (``scale: sum``: the gradient of Σ L_i, LibMTL's EW). With
``heads: weighted`` and a linear weighting the whole update is the gradient of Σ_i w_i L_i;
``heads: unit`` is LibMTL's convention (heads always get their own unweighted gradient).

EW (``mean``) needs only the mean of the shared gradients: its step takes one backward pass of the summed
loss (``summed_terms``). Every other weighting gets per-task gradients, one task at a time, one backward
pass each: each task with its own
input batch (the "multi-input" setting of the thesis' hyper-cleaning and Office experiments), or,
when the tasks share their inputs (CelebA's attributes), through one encoder pass that every task's
backward pass reuses. ``losses_at`` evaluates the same batches at other shared parameters (for weightings that
probe the losses, e.g. the improvement function). Weightings that need the gradients after the
step (``needs_gradients_after_step``) get them on the same batches, as in taskbal.train.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..loop import step_generator
from ..weighting import build_weighting
from ..weighting.base import Combined, TaskGradients
from ..weighting.mean import Mean
from .data import MultiTaskData, TaskBatch
from .model import MultiTaskNet

SCALES = ("mean", "sum")
HEADS = ("weighted", "unit")
OPTIMIZERS = ("adam", "sgd")


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A classification task's loss (every task's loss is its objective's: taskbal/mtl/objectives.py)."""
    return F.cross_entropy(logits, labels)


def flat(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The tensors as one flat vector (empty under STL, where no parameter is shared)."""
    if not tensors:
        return like.new_zeros(0)
    return torch.cat([t.reshape(-1) for t in tensors])


class WeightedMTL:
    """Single-level MTL with a weighting of the per-task shared gradients."""

    name = "weighted"
    options_section = "weighting"  # where the weighting's options sit in the config

    def __init__(self, model: MultiTaskNet, data: MultiTaskData, seed: int, weighting: str,
                 weighting_options: dict | None, *, batch_size: int, optimizer: str = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, scale: str = "mean", heads: str = "weighted"):
        if scale not in SCALES:
            raise ValueError(f"mtl.scale: unknown {scale!r}; known: {list(SCALES)}")
        if heads not in HEADS:
            raise ValueError(f"mtl.heads: unknown {heads!r}; known: {list(HEADS)}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"mtl.optimizer: unknown {optimizer!r}; known: {list(OPTIMIZERS)}")
        self.model, self.data, self.seed = model, data, seed
        self.batch_size, self.scale, self.heads = batch_size, scale, heads
        self.shared_named = model.shared_named_parameters()
        self.shared = [p for _, p in self.shared_named]
        self.num_shared = sum(p.numel() for p in self.shared)
        m = data.num_tasks
        self.weighting = build_weighting(weighting, self.num_shared, m, seed, section=self.options_section,
                                         **(weighting_options or {}))
        task_specific = {id(p) for name, p in model.named_parameters() if name in model.task_specific_names()}
        trained = [p for p in model.parameters() if id(p) not in task_specific]
        cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        self.optimizer = cls(trained, lr=lr, weight_decay=weight_decay)

    # -- hooks for methods that also need gradients w.r.t. the neck's state (NORMAL) -------------
    def extra_grad_inputs(self, task: int, z: torch.Tensor) -> list[torch.Tensor]:
        return []

    def after_combine(self, extras: list, iteration: int) -> dict[str, float]:
        return {}

    # -- one step ---------------------------------------------------------------------------------
    def forward(self, batches: list[TaskBatch]) -> list[tuple]:
        """Per task (loss, z, velocity, its head's and extra gradient inputs); tasks that share their inputs
        take one encoder pass."""
        one_pass = self.data.shared_inputs and self.model.sharing == "hard"
        features = self.model.encode(batches[0].x, 0) if one_pass else None
        out = []
        for task, batch in enumerate(batches):
            if one_pass:
                logits, z, velocity = self.model.from_features(features, task, return_state=True,
                                                               size=batch.x.shape[-2:])
            else:
                logits, z, velocity = self.model(batch.x, task, return_state=True)
            loss = self.data.objectives[task].loss(logits, batch.y)
            out.append((loss, z, velocity, self.model.head_parameters(task), self.extra_grad_inputs(task, z)))
        return out

    def task_terms(self, batches: list[TaskBatch]):
        """(losses [m], shared gradients [m, d], head gradients per task, extras per task): one backward pass
        per task (through the one encoder pass of shared inputs)."""
        losses, shared_rows, head_grads, extras = [], [], [], []
        passes = self.forward(batches)
        for task, (loss, z, velocity, head, extra) in enumerate(passes):
            inputs = [*self.shared, *head, *extra]
            grads = torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=task < len(passes) - 1)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, inputs)]
            n_shared, n_head = len(self.shared), len(head)
            shared_rows.append(flat(grads[:n_shared], loss))
            head_grads.append(grads[n_shared:n_shared + n_head])
            extras.append((grads[n_shared + n_head:], z.detach(), None if velocity is None else velocity.detach()))
            losses.append(loss.detach())
        return torch.stack(losses), torch.stack(shared_rows).detach(), head_grads, extras

    def summed_terms(self, batches: list[TaskBatch]):
        """EW's step needs no task's own shared gradient, only their mean: one backward pass of Σ_i L_i gives
        Σ_i ∇_θ L_i, each head's (and each task's extra input's: z_i, p_i) own task's gradient, since nothing
        else depends on them. (losses [m], mean shared gradient [d], head gradients, extras)."""
        passes = self.forward(batches)
        inputs, where = list(self.shared), []
        for _, _, _, head, extra in passes:
            spans = []
            for group in (head, extra):
                spans.append([])
                for tensor in group:
                    found = next((i for i, known in enumerate(inputs) if known is tensor), None)
                    if found is None:
                        inputs.append(tensor)
                        found = len(inputs) - 1
                    spans[-1].append(found)
            where.append(spans)
        total = torch.stack([loss for loss, *_ in passes]).sum()
        grads = torch.autograd.grad(total, inputs, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, inputs)]
        head_grads = [[grads[i] for i in head] for head, _ in where]
        extras = [([grads[i] for i in extra], z.detach(), None if velocity is None else velocity.detach())
                  for (_, extra), (_, z, velocity, _, _) in zip(where, passes)]
        losses = torch.stack([loss.detach() for loss, *_ in passes])
        mean = flat(grads[:len(self.shared)], total).detach() / len(passes)
        return losses, mean, head_grads, extras

    def flat_shared(self) -> torch.Tensor:
        return flat([p.detach() for p in self.shared], next(self.model.parameters()))

    def losses_at(self, batches: list[TaskBatch], flat: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, p in self.shared_named:
            params[name] = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        with torch.no_grad():
            return torch.stack([objective.loss(torch.func.functional_call(self.model, params, (b.x, i)), b.y)
                                for i, (objective, b) in enumerate(zip(self.data.objectives, batches))])

    def task_gradients(self, batches, iteration: int):
        losses, grads, head_grads, extras = self.task_terms(batches)
        m = len(batches)
        tasks = TaskGradients(losses=losses, grads=grads, features=torch.eye(m, device=grads.device),
                              params=self.flat_shared(), iteration=iteration,
                              generator=step_generator(self.seed, iteration),
                              losses_at=lambda flat: self.losses_at(batches, flat),
                              task_ids=torch.arange(m), num_pool_tasks=m)
        return tasks, head_grads, extras

    def apply(self, combined: Combined, head_grads) -> None:
        factor = float(self.data.num_tasks) if self.scale == "sum" else 1.0
        direction = combined.direction.detach() * factor
        offset = 0
        for p in self.shared:
            p.grad = direction[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        for task, grads in enumerate(head_grads):
            weight = factor * float(combined.weights[task]) if self.heads == "weighted" else 1.0
            for p, g in zip(self.model.head_parameters(task), grads):
                p.grad = weight * g.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, iteration: int) -> dict[str, float]:
        batches = self.data.batch("train", iteration, self.seed, self.batch_size, "train")
        if type(self.weighting) is Mean:  # EW: the mean direction from one backward pass (summed_terms)
            losses, direction, head_grads, extras = self.summed_terms(batches)
            m = len(batches)
            combined = Combined(direction=direction, weights=torch.full((m,), 1.0 / m, dtype=direction.dtype))
        else:
            tasks, head_grads, extras = self.task_gradients(batches, iteration)
            combined = self.weighting.combine(tasks.only(self.weighting.reads))
            losses = tasks.losses
        extra_stats = self.after_combine(extras, iteration)
        self.apply(combined, head_grads)
        stats = {f"train_loss_{name}": float(v) for name, v in zip(self.data.names, losses)}
        stats.update({f"weight_{name}": float(w) for name, w in zip(self.data.names, combined.weights)})
        stats.update({key: float(value) for key, value in combined.stats.items()})
        stats.update(extra_stats)
        if self.weighting.needs_gradients_after_step:
            after, _, _ = self.task_gradients(batches, iteration)
            stats.update(self.weighting.after_step(after.only(self.weighting.reads)))
        return stats

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])
