"""MAML with vanilla policy gradient (Finn et al. 2017 §5.3; ProMP's VPG-MAML with the log-likelihood inner
objective), the meta-learner of SIMOL Figure 3. For one task with pre-update paths D (drawn with π_θ) and
post-update paths D' (drawn with π_θ')::

    L(θ; D)   = −mean_{(s,a) ∈ D} log π_θ(a | s) · Â(s, a)          (the VPG surrogate; Â normalised)
    θ'        = θ − α ∇_θ L(θ; D)                                     (one inner step)
    meta-loss = L(θ'; D'),   meta-gradient ∇_θ L(θ'(θ); D')          (through the inner step)

with Â = discounted return − the linear baseline (GAE with λ = 1), normalised over the task's live steps. As in
Finn et al. and ProMP's VPG-MAML, the meta-gradient does not include the dependence of D's distribution on θ.
"""
from __future__ import annotations

import torch

from .baseline import fit_predict
from .policy import log_likelihood
from .sampler import Paths


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """R_t = Σ_{l ≥ 0} γ^l r_{t+l} over the live steps, for paths [..., horizon]."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + discount * running) * mask[..., t]
        returns[..., t] = running
    return returns


def task_advantages(paths: Paths, task: int, discount: float, normalize: bool) -> torch.Tensor:
    """Â of one task's paths [rollouts, horizon]: returns minus the task's own baseline fit, normalised over
    its live steps (ProMP's ``normalize_adv``); 0 on dead steps."""
    observations, mask = paths.observations[task], paths.mask[task]
    returns = discounted_returns(paths.rewards[task], mask, discount)
    advantages = (returns - fit_predict(observations, returns, mask)) * mask
    if normalize:
        live = advantages[mask > 0]
        advantages = (advantages - live.mean()) / (live.std(unbiased=False) + 1e-8) * mask
    return advantages


def surrogate_loss(params: list[torch.Tensor], paths: Paths, task: int, advantages: torch.Tensor) -> torch.Tensor:
    """L(params; the task's paths): −mean over live steps of log π(a | s) · Â."""
    mask = paths.mask[task]
    logp = log_likelihood(params, paths.observations[task], paths.actions[task])
    return -(logp * advantages * mask).sum() / mask.sum()


def adapt(params: list[torch.Tensor], paths: Paths, task: int, advantages: torch.Tensor, inner_lr: float,
          create_graph: bool) -> list[torch.Tensor]:
    """θ' = θ − α ∇_θ L(θ; D): with ``create_graph`` the result stays a function of θ (second order)."""
    loss = surrogate_loss(params, paths, task, advantages)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return [p - inner_lr * g for p, g in zip(params, grads)]


def task_features(paths: Paths, task: int) -> torch.Tensor:
    """A fixed-size description of a task from its pre-update paths, for SIMOL's re-weighting network: the
    mean observation, mean action and mean reward over the live steps (the RL reading of "the support set")."""
    mask = paths.mask[task]
    live = mask.sum()
    mean = lambda x: (x * mask.unsqueeze(-1)).sum((0, 1)) / live  # noqa: E731
    return torch.cat([mean(paths.observations[task]), mean(paths.actions[task]),
                      ((paths.rewards[task] * mask).sum() / live).reshape(1)])
