"""The mini-batch improvement function picks the subgradient of H_B."""
from __future__ import annotations

import torch

from taskbal.weighting import TaskGradients, build_weighting


def make(losses, params, losses_at):
    k = len(losses)
    return TaskGradients(losses=torch.tensor(losses), grads=torch.eye(k) * 3.0, features=torch.zeros(k, 1),
                         params=torch.tensor(params), iteration=0, generator=torch.Generator(),
                         losses_at=losses_at)


def test_first_step_uses_the_highest_loss_then_the_largest_increase():
    method = build_weighting("improvement", 3, 1, seed=0)
    first = method.combine(make([1.0, 5.0, 2.0], [0.0, 0.0, 0.0], None))
    torch.testing.assert_close(first.direction, torch.tensor([0.0, 3.0, 0.0]))
    seen = {}

    def losses_at(previous):
        seen["previous"] = previous.clone()
        return torch.tensor([0.5, 4.9, 0.1])  # improvements: 0.5, 0.1, 1.9 → task 2

    second = method.combine(make([1.0, 5.0, 2.0], [1.0, 1.0, 1.0], losses_at))
    torch.testing.assert_close(seen["previous"], torch.zeros(3))  # evaluated at w^{s-1}
    torch.testing.assert_close(second.direction, torch.tensor([0.0, 0.0, 3.0]))
    torch.testing.assert_close(second.weights, torch.tensor([0.0, 0.0, 1.0]))


def test_highest_loss_variant_ignores_the_previous_iterate():
    method = build_weighting("improvement", 3, 1, seed=0, variant="highest_loss")
    method.combine(make([1.0, 5.0, 2.0], [0.0, 0.0, 0.0], None))
    out = method.combine(make([1.0, 5.0, 2.0], [1.0, 1.0, 1.0], lambda p: torch.tensor([0.5, 4.9, 0.1])))
    torch.testing.assert_close(out.direction, torch.tensor([0.0, 3.0, 0.0]))
