"""The outer optimiser's step as TOW's dynamics x_{t+1} = f(x_t, u_t): x moves along the direction
g = J_tᵀ u_t; ``scale`` is the D-vector s of F_x = I − diag(s) H_w and F_u = −diag(s) J_tᵀ (App. G)."""
from __future__ import annotations

import torch


class SGDDynamics:
    """x' = x − α g."""

    def __init__(self, lr: float):
        self.lr = lr

    def initial_state(self, x: torch.Tensor):
        return None

    def step(self, x, state, direction):
        return x - self.lr * direction, None

    def scale(self, state, direction) -> torch.Tensor:
        return torch.full_like(direction, self.lr)


class AdamDynamics:
    """torch.optim.Adam's update (no weight decay, no amsgrad); state = (m, v, step)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, tuple(betas), eps

    def initial_state(self, x: torch.Tensor):
        return torch.zeros_like(x), torch.zeros_like(x), 0

    def moments(self, state, direction):
        m, v, step = state
        beta1, beta2 = self.betas
        return m + (1 - beta1) * (direction - m), beta2 * v + (1 - beta2) * direction * direction, step + 1

    def step(self, x, state, direction):
        m, v, step = self.moments(state, direction)
        beta1, beta2 = self.betas
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        den = v.sqrt() / bias2 ** 0.5 + self.eps
        return x - (self.lr / bias1) * m / den, (m, v, step)

    def scale(self, state, direction) -> torch.Tensor:
        """s with F_x = I − diag(s) H, F_u = −diag(s) Jᵀ (m_{t−1}, v_{t−1} held constant, App. G)."""
        m, v, step = self.moments(state, direction)
        beta1, beta2 = self.betas
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        den = v.sqrt() / bias2 ** 0.5 + self.eps
        root = (bias2 * v).sqrt()
        # d den / d g = (1 − β₂) g / √(b₂ v); where v = 0 the gradient is 0 and so is this term
        safe_root = root.clamp_min(torch.finfo(root.dtype).tiny)
        quotient = torch.where(root > 0, m * (1 - beta2) * direction / (den * den * safe_root), torch.zeros_like(m))
        return (self.lr / bias1) * ((1 - beta1) / den - quotient)
