"""The multi-task network: a shared encoder, an optional shared neck, one head per task.

Hard parameter sharing (HPS, thesis Ch. 2): inputs are flattened, the encoder is an MLP
Linear → ReLU per entry of ``hidden`` (the thesis' hyper-cleaning model is [512, 256]: "Linear(784→512)
+ReLU → Linear(512→256)+ReLU"), and each task has a Linear head on the last hidden layer. NORMAL
(Ch. 5) inserts its time-aware neural ODE as the ``neck`` between encoder and heads; the neck sees the
task index, because each task reads the ODE at its own position.

Parameter groups the loop needs: ``shared_parameters`` (encoder + the neck's shared part: the ones
whose per-task gradients are combined by a weighting), ``head_parameters(i)``, and the neck's
task-specific parameters (NORMAL's positions), which have their own update rule.
"""
from __future__ import annotations

import torch
from torch import nn


class MultiTaskNet(nn.Module):
    def __init__(self, input_dim: int, hidden: list[int], num_classes: list[int], neck: nn.Module | None = None):
        super().__init__()
        if not hidden or any((not isinstance(h, int)) or h < 1 for h in hidden):
            raise ValueError(f"mtl.hidden: expected a non-empty list of positive integers, got {hidden!r}")
        layers, width = [nn.Flatten()], input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.encoder = nn.Sequential(*layers)
        self.neck = neck
        self.heads = nn.ModuleList(nn.Linear(width, classes) for classes in num_classes)
        self.feature_dim = width

    def forward(self, x: torch.Tensor, task: int, return_state: bool = False):
        """Logits of ``task``; with ``return_state`` also the neck's output z and its time derivative."""
        features = self.encoder(x)
        z, velocity = (features, None) if self.neck is None else self.neck(features, task)
        logits = self.heads[task](z)
        return (logits, z, velocity) if return_state else logits

    def task_specific_names(self) -> set[str]:
        names = set()
        if self.neck is not None and hasattr(self.neck, "task_specific_parameter_names"):
            names |= {f"neck.{name}" for name in self.neck.task_specific_parameter_names()}
        return names

    def shared_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        skip = self.task_specific_names()
        return [(name, p) for name, p in self.named_parameters()
                if not name.startswith("heads.") and name not in skip]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.shared_named_parameters()]

    def head_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.heads[task].parameters())
