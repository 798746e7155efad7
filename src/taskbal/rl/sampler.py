"""Rollouts of many environments at once: ``tasks × rollouts`` environments step together, and each task's
policy acts for its own rollouts in one batched forward pass.

Paths are stored padded to the horizon: ``mask`` is 1 for the steps an episode lived (the walker ends when it
falls). As in ProMP's samplers, the environment receives the action clipped to its bounds and the
log-likelihood is taken of the action the policy drew."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .policy import policy_mean


@dataclass
class Paths:
    observations: torch.Tensor  # [tasks, rollouts, horizon, obs_dim]
    actions: torch.Tensor       # [tasks, rollouts, horizon, act_dim]
    rewards: torch.Tensor       # [tasks, rollouts, horizon]
    mask: torch.Tensor          # [tasks, rollouts, horizon], 1 while the episode lives

    def returns(self) -> torch.Tensor:
        """Undiscounted return of every path [tasks, rollouts]."""
        return (self.rewards * self.mask).sum(-1)


def sample(envs: list, params_per_task: list[list[torch.Tensor]], rollouts: int, horizon: int,
           seeds: np.ndarray, generator: torch.Generator) -> Paths:
    """Run ``rollouts`` episodes of ``horizon`` steps per task; ``envs[t * rollouts + r]`` is task t's r-th
    environment (already pointed in the task's direction), reset with ``seeds`` (one per environment)."""
    tasks = len(params_per_task)
    count = tasks * rollouts
    first = envs[0]
    low, high = first.action_space.low, first.action_space.high
    obs_dim, act_dim = first.observation_space.shape[0], first.action_space.shape[0]
    observations = torch.zeros(count, horizon, obs_dim, dtype=torch.float64)
    actions = torch.zeros(count, horizon, act_dim, dtype=torch.float64)
    rewards = torch.zeros(count, horizon, dtype=torch.float64)
    mask = torch.zeros(count, horizon, dtype=torch.float64)
    current = np.stack([env.reset(seed=int(seed))[0] for env, seed in zip(envs[:count], seeds)])
    alive = np.ones(count, dtype=bool)
    with torch.no_grad():
        for t in range(horizon):
            obs = torch.from_numpy(current)
            means = torch.cat([policy_mean(params, obs[i * rollouts:(i + 1) * rollouts])
                               for i, params in enumerate(params_per_task)])
            stds = torch.cat([params[-1].exp().expand(rollouts, act_dim) for params in params_per_task])
            drawn = means + stds * torch.randn(means.shape, generator=generator, dtype=torch.float64)
            observations[:, t], actions[:, t], mask[:, t] = obs, drawn, torch.from_numpy(alive.astype(np.float64))
            clipped = np.clip(drawn.numpy(), low, high)
            for j in np.flatnonzero(alive):
                next_obs, reward, terminated, _, _ = envs[j].step(clipped[j])
                rewards[j, t] = reward
                current[j] = next_obs
                if terminated:
                    alive[j] = False
            if not alive.any():
                break
    shape = (tasks, rollouts, horizon)
    return Paths(observations.view(*shape, obs_dim), actions.view(*shape, act_dim), rewards.view(shape),
                 mask.view(shape))
