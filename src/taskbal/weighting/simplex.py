"""Euclidean projection onto the probability simplex, shared by TR-MAML and DA-MAML.

Π_Δ(q) = argmin_{p ≥ 0, Σp = 1} ‖p − q‖₂ by sorting (Held, Wolfe & Crowder 1974; Duchi et al.
2008; Wang & Carreira-Perpiñán 2013): with u = q sorted in decreasing order,
ρ = max{j : u_j + (1 − Σ_{r≤j} u_r)/j > 0}, λ = (1 − Σ_{r≤ρ} u_r)/ρ and p = max(q + λ, 0).
"""
from __future__ import annotations

import torch


def project_to_simplex(q: torch.Tensor) -> torch.Tensor:
    """Project each row of ``q`` (shape [..., m], m ≥ 1) onto the probability simplex; O(m log m)."""
    if q.dim() == 0 or q.shape[-1] == 0:
        raise ValueError(f"project_to_simplex: expected a non-empty last dimension, got shape {tuple(q.shape)}")
    if not torch.isfinite(q).all():
        raise ValueError("project_to_simplex: input contains NaN or infinite values")
    u, _ = torch.sort(q, dim=-1, descending=True)
    cumulative = torch.cumsum(u, dim=-1)
    j = torch.arange(1, q.shape[-1] + 1, dtype=q.dtype, device=q.device)
    positive = u + (1.0 - cumulative) / j > 0  # true exactly for j = 1..ρ (j = 1 always holds)
    rho = positive.to(torch.int64).cumprod(dim=-1).sum(dim=-1, keepdim=True)
    lam = (1.0 - cumulative.gather(-1, rho - 1)) / rho.to(q.dtype)
    return torch.clamp(q + lam, min=0.0)
