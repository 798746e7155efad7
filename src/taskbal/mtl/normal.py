"""NORMAL: learned task positions in a heavy-ball neural ODE after the shared encoder.

Thesis (Ye 2024) Chapter 5 (from Ye, Wang, Zhang & Tsang, IJCAI 2023), Eq. 5.5–5.11, Algorithm 4.
The shared encoder output is the initial state z(0) = f_θ(x) of the second-order ODE

    dz/dt = −q(t),    dq/dt = −γ q(t) + g(z(t), t) + ξ z(t),    q(0) = u(z(0)),    γ = sigmoid(ω)  (5.5, 5.7–5.9)

and task i's head reads z(p_i), the state at its learned "position" (time) p_i. u and g are
FC → LeakyReLU → FC maps of the feature width (thesis). The positions are learned with the
manual gradient (5.11)

    d_{p_i} = dL_i/dt |_{t = p_i} = ⟨∂L_i/∂z(p_i), dz/dt(p_i)⟩ = −⟨∂L_i/∂z(p_i), q(p_i)⟩,
    p_i ← p_i − η d_{p_i}                                                     (Alg. 4 line 7)

(summed over the batch and the features; L_i is the batch mean), while θ, φ = {u, g, ω} and the
heads follow the usual update (Alg. 4 line 6) — here the single-level loop's step, whose shared
gradients go through the weighting registry (``combiner``, default ``mean`` = the thesis' EW loss).

Options (the thesis leaves all of these open):
  * ``ode_steps`` 10: fixed-step explicit Euler (the thesis' solver) with h = p_i / ode_steps, so a
    negative p_i integrates backwards and no positivity constraint is needed.
  * ``init_position`` 1.0 (the ablation's constant), or one position per task (Table 5.4's "constant
    but different" positions); ``position_lr`` η = 1e-3, SGD.
  * ``position_form``: 'linear' (p_i is the parameter, the thesis) or 'exp' (p_i = e^{v_i} with v_i the
    parameter, Table 5.4's "different form" ablation; the manual gradient is d_{p_i} · e^{v_i}).
  * ``xi`` 0.0 (a tuned hyper-parameter in the thesis), ``damping_init`` ω = 0 (γ = 0.5).
  * ``time_input`` false: g sees z only; true concatenates t to its input ("time-aware").
  * ``position_gradient``: 'manual' (Eq. 5.11, default) or 'autograd' (exact derivative of the
    discretised Euler map; the two agree as ode_steps grows — the tests check it).
  * ``learn_positions`` false keeps p fixed (Table 5.4's "constant" ablations); ``order`` 1 uses a
    first-order NODE dz/dt = g(z, t) (Table 5.4's "first-order NODE" ablation).
  * ``ode_hidden``: width of u's and g's hidden layer (default: the feature width, as the thesis).
The adjoint method of the thesis is a memory device; with a few Euler steps plain back-propagation
through the solver computes the same gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from .weighted import WeightedMTL

POSITION_GRADIENTS = ("manual", "autograd")
NECK_OPTIONS = ("ode_steps", "init_position", "position_form", "xi", "damping_init", "time_input", "order",
                "ode_hidden")
POSITION_FORMS = ("linear", "exp")
NORMAL_OPTIONS = ("combiner", "combiner_options", "position_lr", "position_gradient", "learn_positions")


def two_layer(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.LeakyReLU(), nn.Linear(hidden, width_out))


class HeavyBallODE(nn.Module):
    """Euler integration of the (heavy-ball or first-order) NODE from t = 0 to t = position."""

    def __init__(self, dim: int, *, ode_steps: int = 10, xi: float = 0.0, damping_init: float = 0.0,
                 time_input: bool = False, order: int = 2, ode_hidden: int | None = None,
                 velocity: nn.Module | None = None, field: nn.Module | None = None):
        super().__init__()
        if not isinstance(ode_steps, int) or ode_steps < 1:
            raise ValueError(f"weighting.ode_steps: must be an integer >= 1, got {ode_steps!r}")
        if order not in (1, 2):
            raise ValueError(f"weighting.order: must be 1 or 2, got {order!r}")
        hidden = ode_hidden or dim
        self.steps, self.xi, self.time_input, self.order = ode_steps, float(xi), bool(time_input), order
        self.velocity = velocity if velocity is not None else two_layer(dim, hidden, dim)  # u
        self.field = field if field is not None else two_layer(dim + int(self.time_input), hidden, dim)  # g
        self.damping_logit = nn.Parameter(torch.tensor(float(damping_init)))  # γ = sigmoid(ω)

    def g(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.time_input:
            z = torch.cat([z, t.expand(*z.shape[:-1], 1)], -1)
        return self.field(z)

    def forward(self, z0: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z(p), dz/dt at p)."""
        h = position / self.steps
        z, t = z0, torch.zeros((), dtype=z0.dtype, device=z0.device)
        if self.order == 1:
            for _ in range(self.steps):
                z, t = z + h * self.g(z, t), t + h
            return z, self.g(z, t)
        gamma = torch.sigmoid(self.damping_logit)
        q = self.velocity(z0)
        for _ in range(self.steps):
            dz = -q
            dq = -gamma * q + self.g(z, t) + self.xi * z
            z, q, t = z + h * dz, q + h * dq, t + h
        return z, -q


def initial_positions(init_position, num_tasks: int) -> torch.Tensor:
    values = init_position if isinstance(init_position, (list, tuple)) else [init_position] * num_tasks
    if len(values) != num_tasks or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"weighting.init_position: a number or one number per task ({num_tasks}), got "
                         f"{init_position!r}")
    return torch.tensor([float(v) for v in values])


class NormalNeck(nn.Module):
    """The shared ODE block plus one learnable position per task (stored as p, or as v with p = e^v)."""

    def __init__(self, dim: int, num_tasks: int, *, init_position: float | list = 1.0, position_form: str = "linear",
                 **ode_options):
        super().__init__()
        if position_form not in POSITION_FORMS:
            raise ValueError(f"weighting.position_form: unknown {position_form!r}; known: {list(POSITION_FORMS)}")
        self.ode = HeavyBallODE(dim, **ode_options)
        self.position_form = position_form
        start = initial_positions(init_position, num_tasks)
        if position_form == "exp":
            if not bool((start > 0).all()):
                raise ValueError(f"weighting.init_position: p = e^v needs positive positions, got {init_position!r}")
            start = torch.log(start)
        self.positions = nn.Parameter(start)

    def task_specific_parameter_names(self) -> list[str]:
        return ["positions"]

    def effective_positions(self) -> torch.Tensor:
        """p_i, whatever the parameterisation."""
        return torch.exp(self.positions) if self.position_form == "exp" else self.positions

    def forward(self, features: torch.Tensor, task: int):
        return self.ode(features, self.effective_positions()[task])


def split_options(options: dict) -> tuple[dict, dict]:
    """(neck options, training options) of the ``weighting`` section of a NORMAL run."""
    neck = {k: v for k, v in options.items() if k in NECK_OPTIONS}
    return neck, {k: v for k, v in options.items() if k not in NECK_OPTIONS}


class NORMAL(WeightedMTL):
    """Algorithm 4: the single-level step plus the positions' own update with the gradient (5.11)."""

    name = "normal"
    options_section = "weighting.combiner_options"

    def __init__(self, model, data, seed, *, combiner: str = "mean", combiner_options: dict | None = None,
                 position_lr: float = 1e-3, position_gradient: str = "manual", learn_positions: bool = True,
                 **loop_options):
        if model.neck is None or not isinstance(model.neck, NormalNeck):
            raise ValueError("weighting.name: normal needs the model built with a NormalNeck")
        if position_gradient not in POSITION_GRADIENTS:
            raise ValueError(f"weighting.position_gradient: unknown {position_gradient!r}; "
                             f"known: {list(POSITION_GRADIENTS)}")
        if not position_lr > 0:
            raise ValueError(f"weighting.position_lr: must be > 0, got {position_lr}")
        super().__init__(model, data, seed, combiner, combiner_options, **loop_options)
        self.position_gradient, self.learn_positions = position_gradient, bool(learn_positions)
        self.position_optimizer = torch.optim.SGD([model.neck.positions], lr=position_lr)

    def extra_grad_inputs(self, task: int, z: torch.Tensor) -> list[torch.Tensor]:
        return [z] if self.position_gradient == "manual" else [self.model.neck.positions]

    def position_gradients(self, extras: list) -> torch.Tensor:
        """d_p [m]: Eq. 5.11 from ∂L_i/∂z(p_i) and dz/dt(p_i), or autograd through the Euler map."""
        rows = []
        for task, (grads, _z, velocity) in enumerate(extras):
            if self.position_gradient == "manual":
                rows.append(torch.sum(grads[0] * velocity))
            else:
                rows.append(grads[0][task])
        gradients = torch.stack(rows).detach()
        if self.position_gradient == "manual" and self.model.neck.position_form == "exp":
            gradients = gradients * torch.exp(self.model.neck.positions.detach())  # dL/dv = dL/dp · e^v
        return gradients

    def after_combine(self, extras: list, iteration: int) -> dict[str, float]:
        gradients = self.position_gradients(extras)
        if self.learn_positions:
            positions = self.model.neck.positions
            positions.grad = gradients.to(positions.dtype).clone()
            self.position_optimizer.step()
            positions.grad = None
        positions = self.model.neck.effective_positions().detach()
        stats = {f"position_{name}": float(p) for name, p in zip(self.data.names, positions)}
        stats["damping"] = float(torch.sigmoid(self.model.neck.ode.damping_logit.detach()))
        return stats

    def state_dict(self) -> dict:
        return {**super().state_dict(), "position_optimizer": self.position_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.position_optimizer.load_state_dict(state["position_optimizer"])
