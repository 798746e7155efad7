"""The linear feature baseline of rllab / ProMP (``LinearFeatureBaseline``), SIMOL §5.3's critic: a linear
state-value function of [s, s², t, t², t³, 1] (s clipped to ±10, t = step / 100), fit by regularised least
squares to the discounted returns of the paths it then predicts for (one fit per task)."""
from __future__ import annotations

import torch


def features(observations: torch.Tensor) -> torch.Tensor:
    """[..., horizon, obs_dim] → [..., horizon, 2·obs_dim + 4]."""
    clipped = observations.clamp(-10.0, 10.0)
    horizon = observations.shape[-2]
    t = (torch.arange(horizon, dtype=observations.dtype) / 100.0).expand(*observations.shape[:-1]).unsqueeze(-1)
    return torch.cat([clipped, clipped.pow(2), t, t.pow(2), t.pow(3), torch.ones_like(t)], dim=-1)


def fit_predict(observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                reg: float = 1e-5) -> torch.Tensor:
    """Values [..., horizon] of a least-squares fit on the live steps (``mask``) of these paths; the
    regulariser grows tenfold, up to five times, while the solution is not finite (rllab's rule)."""
    phi = features(observations)
    live = mask.reshape(-1) > 0
    design, target = phi.reshape(-1, phi.shape[-1])[live], returns.reshape(-1)[live]
    gram, moment = design.T @ design, design.T @ target
    for _ in range(5):
        coefficients = torch.linalg.lstsq(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype),
                                          moment.unsqueeze(1)).solution.squeeze(1)
        if torch.isfinite(coefficients).all():
            break
        reg *= 10
    return phi @ coefficients
