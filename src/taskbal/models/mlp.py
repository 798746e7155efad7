"""Fully connected networks: the sinusoid regressor, SIMOL's re-weighting network, CAVIA's regressor.

Config (``model:``): ``{name: mlp, hidden: [h1, h2, ...], context: 0}``.

- ``hidden``: widths of the hidden layers. SIMOL's "2 fully-connected layers (each of size 32)" is
  ``[32, 32]`` (learn2learn's SineModel); Finn et al.'s sinusoid network is ``[40, 40]``; Table 5's
  "#layers" of SIMOL is ``len(hidden)``.
- ``context``: number of CAVIA context parameters (Zintgraf et al. 2019, Sec. 4.1: the context vector
  is concatenated to the input, so the first layer has ``in_dim + context`` inputs). 0 = none.
  A network built with context but called without one sees the zero context (CAVIA's φ_0), so
  MAML on such a network is well defined.
- ``activation``: ``relu`` (default) or ``tanh`` (DA-MAML's "two-layer, tanh-activated neural
  network").

Image inputs (io_dims = ((C, H, W), n_way)) are flattened.
"""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": (nn.ReLU, torch.relu), "tanh": (nn.Tanh, torch.tanh)}


class MLP(nn.Sequential):
    """in_dim (+ context) → hidden[0] → act → … → hidden[-1] → act → out_dim (act: ReLU or tanh)."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, context: int = 0, activation: str = "relu"):
        layers: list[nn.Module] = []
        width = in_dim + context
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation][0]()]
            width = size
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.num_context = context
        self.activation = ACTIVATIONS[activation][1]

    def _with_context(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Concatenate the context vector to every input row (``h`` is [..., n, in_dim])."""
        if self.num_context == 0:
            return h
        if context is None:
            context = h.new_zeros(*h.shape[:-2], self.num_context)
        return torch.cat([h, context.unsqueeze(-2).expand(*h.shape[:-1], self.num_context)], dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """One task: x is [n, in_dim] (or [n, C, H, W], flattened), context [num_context]."""
        h = self._with_context(x.flatten(1), context)
        for layer in self:
            h = layer(h)
        return h

    # ``batched_forward`` can report every linear layer's input and pre-activation output (``record``):
    # TOW's closed-form Gauss–Newton diagonal asks for that capability.
    records_linear_layers = True

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        context: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
        """Forward of k networks on k inputs: params[name] is [k, *shape], x is [k, n, in_dim],
        context [k, num_context]. ``record``, if given, receives (layer index, input h, output z) of
        every linear layer z = W h + b, in order.

        The learners use this instead of ``vmap(functional_call)`` because one
        ``baddbmm`` per layer is faster on the CPU for networks this small
        (benchmarks/bench_maml.py measures both).
        """
        h = self._with_context(x.flatten(2), context)
        linear_layers = [i for i, layer in enumerate(self) if isinstance(layer, nn.Linear)]
        for position, index in enumerate(linear_layers):
            weight, bias = params[f"{index}.weight"], params[f"{index}.bias"]
            z = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if record is not None:
                record.append((index, h, z))
            h = self.activation(z) if position < len(linear_layers) - 1 else z
        return h

def build(io_dims, hidden: list[int] | None = None, context: int = 0, activation: str = "relu") -> MLP:
    """The MLP of a ``model:`` section; ``io_dims`` = (input size or shape, output size)."""
    if hidden is None:
        raise ValueError("model.hidden: required by model 'mlp' (list of hidden widths, e.g. [40, 40])")
    if not isinstance(hidden, (list, tuple)) or not hidden or any(
            not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
        raise ValueError(f"model.hidden: expected a non-empty list of positive integers, got {hidden!r}")
    if not isinstance(context, int) or isinstance(context, bool) or context < 0:
        raise ValueError(f"model.context: expected an integer >= 0, got {context!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"model.activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    inputs, outputs = io_dims
    in_dim = inputs if isinstance(inputs, int) else math.prod(inputs)
    return MLP(in_dim, list(hidden), outputs, context=context, activation=activation)
