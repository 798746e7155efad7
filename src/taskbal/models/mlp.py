"""Fully connected networks: the sinusoid regressor and SIMOL's re-weighting network."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """in_dim → hidden[0] → ReLU → … → hidden[-1] → ReLU → out_dim.

    SIMOL's "2 fully-connected layers (each of size 32)" is ``hidden=[32, 32]``
    (learn2learn's SineModel); Table 5's "#layers" is ``len(hidden)``.
    """

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Forward of k networks on k inputs: params[name] is [k, *shape], x is [k, n, in_dim].

        The learners use this instead of ``vmap(functional_call)`` because one
        ``baddbmm`` per layer is about 1.8x faster on the CPU for networks this small
        (benchmarks/bench_maml.py measures both).
        """
        h = x
        linear_layers = [i for i, layer in enumerate(self) if isinstance(layer, nn.Linear)]
        for position, index in enumerate(linear_layers):
            weight, bias = params[f"{index}.weight"], params[f"{index}.bias"]
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if position < len(linear_layers) - 1:
                h = torch.relu(h)
        return h
