"""The Gaussian MLP policy of ProMP (Rothfuss et al. 2018), which SIMOL §5.3 follows: two hidden layers of 64
tanh units give the mean action, a learned state-independent log standard deviation (initial std 1) the spread.

The parameters are a list of tensors ``[W₁, b₁, …, W_L, b_L, log_std]`` and every function here is a pure
function of them, so MAML can evaluate the policy at a task's adapted parameters and differentiate through
the adaptation. Weights start Xavier-uniform and biases zero (ProMP's initialisers)."""
from __future__ import annotations

import math

import torch


def init_policy(obs_dim: int, act_dim: int, hidden: list[int], init_std: float,
                generator: torch.Generator) -> list[torch.Tensor]:
    params, width = [], obs_dim
    for size in [*hidden, act_dim]:
        bound = math.sqrt(6.0 / (width + size))
        params.append((torch.rand(size, width, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
        params.append(torch.zeros(size, dtype=torch.float64))
        width = size
    params.append(torch.full((act_dim,), math.log(init_std), dtype=torch.float64))
    return [p.requires_grad_() for p in params]


def policy_mean(params: list[torch.Tensor], observations: torch.Tensor) -> torch.Tensor:
    """Mean action [..., act_dim] of observations [..., obs_dim]."""
    layers = params[:-1]
    hidden = observations
    for i in range(0, len(layers) - 2, 2):
        hidden = torch.tanh(torch.nn.functional.linear(hidden, layers[i], layers[i + 1]))
    return torch.nn.functional.linear(hidden, layers[-2], layers[-1])


def log_likelihood(params: list[torch.Tensor], observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a | s) of each (observation, action), summed over the action's coordinates."""
    log_std = params[-1]
    z = (actions - policy_mean(params, observations)) * torch.exp(-log_std)
    return -(0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)


def flatten(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])
