"""Multi-task MOBLO problems on a network: multi-task data hyper-cleaning and task weighting.

Both take ω = all network parameters, flattened (the network is evaluated with
torch.func.functional_call, so the unrolled LL steps of MOML stay differentiable in α), and both
read mini-batches from taskbal.mtl.data (one LL and one UL batch per UL iteration, per task).

Hyper-cleaning (thesis §3.7.1, Table 3.2): α holds one logit per training sample of every task,

    f(α, ω) = Σ_i (1/|B_i|) Σ_{j ∈ B_i} σ(α_ij) ℓ(ω; x_ij, ỹ_ij)      (ỹ: the corrupted training labels)
    F_i(α, ω) = (1/|V_i|) Σ_{j ∈ V_i} ℓ(ω; x_ij, y_ij)                (clean validation data of task i)

with ℓ the cross-entropy, B_i a mini-batch of task i's training split and V_i one of its UL split
(``mtl.upper_split``, "val" = the thesis' first validation set). The thesis writes the mean over all
N_i samples; a mini-batch gives an unbiased estimate of it (our reading: the thesis does not say how the
α-gradients are mini-batched). α starts at ``alpha_init`` (0: σ = 0.5, our choice; the thesis
does not say).

``lower_batches``: 'iteration' (default) draws one LL batch per UL iteration and reuses it for
all T LL steps (the official FORUM/MOML code); 'step' draws a fresh LL batch for every LL step
(batch index iteration·T + t, so the T steps walk through the training data like plain SGD epochs)
— the thesis' "T = 64 SGD steps, batch 100" for hyper-cleaning reads naturally either way.

Task weighting (thesis §3.3 Eq. 3.2, §3.7.2): α = m logits, the task weights softmax(α) (the
official code's parameterisation, initialised at 1/m), f = Σ_i softmax(α)_i L_i^tr(ω), F_i = L_i on
the UL split ("val" as Eq. 3.2; "train" = a second, independent training batch, as the official
MTL code does).
"""
from __future__ import annotations

import torch

from .bilevel import MOBLOProblem, StepBatches
from .data import MultiTaskData
from .model import MultiTaskNet

LOWER_BATCHES = ("iteration", "step")


class NetworkProblem(MOBLOProblem):
    """Shared plumbing: flat ω ↔ the network's parameters, and the batch streams."""

    def __init__(self, model: MultiTaskNet, data: MultiTaskData, seed: int, *, batch_size: int,
                 upper_batch_size: int, upper_split: str, lower_batches: str = "iteration",
                 steps_per_iteration: int = 1):
        if not data.has_split(upper_split):
            raise ValueError(f"mtl.upper_split: the family has no split {upper_split!r}")
        if lower_batches not in LOWER_BATCHES:
            raise ValueError(f"mtl.lower_batches: unknown {lower_batches!r}; known: {list(LOWER_BATCHES)}")
        self.lower_batches, self.steps_per_iteration = lower_batches, max(int(steps_per_iteration), 1)
        self.model, self.data, self.seed = model, data, seed
        self.batch_size, self.upper_batch_size, self.upper_split = batch_size, upper_batch_size, upper_split
        self.num_objectives = data.num_tasks
        self.objective_names = tuple(data.names)
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]

    def initial_omega(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def parameters_of(self, omega: torch.Tensor) -> dict[str, torch.Tensor]:
        # torch.split, not one slice per parameter: a slice's backward writes a zero tensor the size of
        # ω for every parameter (quadratic in the layer count), split's backward concatenates once.
        sizes = [int(torch.Size(shape).numel()) for shape in self.shapes]
        return {name: piece.view(shape) for name, shape, piece in zip(self.names, self.shapes, omega.split(sizes))}

    def logits(self, omega: torch.Tensor, x: torch.Tensor, task: int) -> torch.Tensor:
        return torch.func.functional_call(self.model, self.parameters_of(omega), (x, task))

    def lower_batch(self, iteration: int):
        if self.lower_batches == "step":
            first = iteration * self.steps_per_iteration
            return StepBatches(lambda t: self.data.batch("train", first + t, self.seed, self.batch_size, "lower"))
        return self.data.batch("train", iteration, self.seed, self.batch_size, "lower")

    def upper_batch(self, iteration: int):
        return self.data.batch(self.upper_split, iteration, self.seed, self.upper_batch_size, "upper")

    def upper_objectives(self, alpha, omega, batch=None):
        return torch.stack([self.data.objectives[i].loss(self.logits(omega, b.x, i), b.y) for i, b in enumerate(batch)])


class HyperCleaning(NetworkProblem):
    def __init__(self, model, data, seed, *, alpha_init: float = 0.0, **options):
        super().__init__(model, data, seed, **options)
        self.offsets = [0]
        for task in range(data.num_tasks):
            self.offsets.append(self.offsets[-1] + data.size("train", task))
        self.alpha_init = float(alpha_init)

    def initial_alpha(self) -> torch.Tensor:
        return torch.full((self.offsets[-1],), self.alpha_init, device=self.data.device)

    def sample_weights(self, alpha: torch.Tensor, task: int) -> torch.Tensor:
        return torch.sigmoid(alpha[self.offsets[task]:self.offsets[task + 1]])

    def lower_objective(self, alpha, omega, batch=None):
        total = 0.0
        for i, b in enumerate(batch):
            per_sample = torch.nn.functional.cross_entropy(self.logits(omega, b.x, i), b.y, reduction="none")
            weights = torch.sigmoid(alpha[self.offsets[i] + b.indices])
            total = total + torch.mean(weights * per_sample)
        return total


class TaskWeighting(NetworkProblem):
    def initial_alpha(self) -> torch.Tensor:
        return torch.full((self.data.num_tasks,), 1.0 / self.data.num_tasks, device=self.data.device)

    def lower_objective(self, alpha, omega, batch=None):
        weights = torch.softmax(alpha, 0)
        return sum(weights[i] * self.data.objectives[i].loss(self.logits(omega, b.x, i), b.y)
                   for i, b in enumerate(batch))


PROBLEMS = {"hyper_cleaning": HyperCleaning, "task_weighting": TaskWeighting}
