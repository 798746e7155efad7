"""Prototypical networks (Snell, Swersky and Zemel, 2017), batched over the tasks of a meta-batch.

No inner loop. For each task, the prototype of class c is the mean embedding of its support examples,
c_c = (1/|S_c|) Σ_{x∈S_c} f_θ(x) (Snell et al., Eq. 1), and a query x gets logits −d(f_θ(x), c_c)
with d the squared Euclidean distance (Eq. 2 and Sec. 2.4); the task loss is the mean query
cross-entropy. The meta-parameters are the embedding network's weights θ; per-task copies give the
per-task gradients ∇_θ L_i in one backward, so SIMOL's Algorithm 3 ("SIMOL for PN") is the ``simol``
weighting on top of this learner, and every other weighting combines them the same way.

Deliberate choices:
- The embedding network is the model's ``embedding`` sub-module when it has one (conv4, resnet12,
  resnet10: the backbone, flattened, without the linear head — the head would get no gradient); a
  model without one (the MLP) is used whole. ``parameters()``, the flat gradient and the state dict
  cover the embedding only.
- Support and query examples of a task go through the network in one forward (Snell et al.'s and
  learn2learn's code concatenate them), so BatchNorm's batch statistics are over the whole episode.
- ``distance``: ``squared_euclidean`` (Snell et al.; learn2learn's ``PrototypicalClassifier``) or
  ``euclidean`` (the non-squared ``torch.cdist`` of TOW's code; TOW's paper says only "Euclidean distances").
- ``task_chunk``: as for MAML (groups of tasks per backward; same results; ``auto``: one task per graph
  for a conv embedding on the CPU).
- Labels are 0 … n_way−1 within each task (the number of classes is the largest support label + 1).
- SIMOL's Algorithm 3 normalises the prototype by N_C, a typo for |S_c|; the mean is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .maml import MAML, Params, TaskBatch

DISTANCES = ("squared_euclidean", "euclidean")


class ProtoNet(MAML):
    def __init__(self, model: nn.Module, distance: str = "squared_euclidean", loss: str = "cross_entropy",
                 task_chunk: int | str | None = "auto"):
        if loss != "cross_entropy":
            raise ValueError(f"learner.loss: ProtoNet classifies by distance to prototypes; "
                             f"only 'cross_entropy' is possible, got {loss!r}")
        if distance not in DISTANCES:
            raise ValueError(f"learner.distance: expected one of {list(DISTANCES)}, got {distance!r}")
        embedding = getattr(model, "embedding", None)
        super().__init__(model if embedding is None else embedding, inner_steps=0, loss="cross_entropy",
                         task_chunk=task_chunk)
        self.distance = distance

    def prototypes(self, support: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Class means of the support embeddings: [k, n_support, e] → [k, n_way, e]."""
        one_hot = F.one_hot(labels, int(labels.max()) + 1).to(support.dtype)  # [k, n, C]
        sums = one_hot.transpose(1, 2) @ support
        return sums / one_hot.sum(1).clamp_min(1).unsqueeze(-1)

    def logits(self, query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """−distance of every query embedding to every prototype: [k, n_query, n_way]."""
        if self.distance == "euclidean":
            return -torch.cdist(query, prototypes)
        squared = (query.pow(2).sum(-1, keepdim=True) - 2 * query @ prototypes.transpose(1, 2)
                   + prototypes.pow(2).sum(-1).unsqueeze(1))
        return -squared

    def query_outputs(self, task_params: Params, batch: TaskBatch, create_graph: bool = True,
                      anchor: Params | None = None, with_penalty: bool = True) -> torch.Tensor:
        n_support = batch.support_x.shape[1]
        embeddings = self.predict(task_params, torch.cat([batch.support_x, batch.query_x], dim=1))
        support, query = embeddings[:, :n_support], embeddings[:, n_support:]
        return self.logits(query, self.prototypes(support, batch.support_y))

    def _outputs_without_meta_graph(self, batch: TaskBatch, params: Params, with_penalty: bool) -> torch.Tensor:
        k = batch.num_tasks
        with torch.no_grad():
            shared = {name: p.detach().expand(k, *p.shape) for name, p in params.items()}
            return self.query_outputs(shared, batch)
