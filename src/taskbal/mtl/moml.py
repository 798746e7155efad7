"""MOML: multi-objective meta-learning = one hypergradient per upper-level objective, combined by MGDA.

Thesis (Ye 2024) §3.4, Algorithm 1 (from Ye, Lin et al., NeurIPS 2021 / AIJ 2024). Per UL iteration k:

    ω_0^k                      LL start (see ``lower_init``)
    ω_{j}^k = ω_{j-1}^k − μ ∇_ω f(ω_{j-1}^k, α_k),   j = 1..T                       (lines 4–6)
    h_i = ∇_α F_i(ω_T^k(α_k), α_k),   i = 1..m      (back-propagated through the T steps, line 7)
    d   = Σ_i γ_i h_i,   γ = argmin_{γ ∈ Δ} ‖Σ_i γ_i h_i‖²                   (MGDA, Eq. 2.3, line 8)
    α_{k+1} = α_k − ν d                                                              (line 9)

The combination goes through the project's weighting registry: ``combiner: mgda`` is the
thesis' MOML and reuses weighting/mgda.py's min-norm solver; ``combiner: moco`` gives the
thesis' "MoCo" baseline (same ITD hypergradients, MoCo's tracked combination, mtl/moco.py);
any other registered weighting (``mean`` = equal weights, ``pcgrad`` …) also works.
``combiner_options`` are passed to the combiner's constructor.

Options and the choices behind their defaults:
  * ``lower_steps`` T and ``lower_lr`` μ: the thesis' values are per experiment (synthetic
    T = 50, μ = 0.05; hyper-cleaning T = 64, μ = 0.3; MTL tables T = 1).
  * ``alpha_lr`` ν and ``alpha_optimizer`` ('sgd' = the plain step of line 9; 'adam' as the MTL
    tables' code does).
  * ``lower_init``: Algorithm 1 line 3 says only "initialize ω_0^k(α_k)". 'warm' (default)
    starts from the previous iteration's ω_T (chosen for hyper-cleaning: the
    model keeps training across UL iterations); 'fixed' restarts from the initial ω_0 every
    iteration (the literal reading, under which the synthetic problem's ω_0 of Fig. A.1 is
    MOML's LL start).
  * ``hypergradient``: 'unrolled' (default) is the thesis' ITD; 'implicit' (not in the thesis)
    runs the T steps without a graph and applies the implicit-function theorem at ω_T with
    ``cg_steps`` conjugate-gradient steps — exact at the LL minimiser instead of exact for the
    truncated trajectory.

The UL variable α is unconstrained here (the thesis' task-weighting instance keeps it on the
simplex through a softmax parameterisation inside the problem; hyper-cleaning uses per-sample
sigmoid logits), so no projection is needed after the step.
"""
from __future__ import annotations

import torch

from ..loop import step_generator
from ..options import check_options, options_of
from ..weighting import REGISTRY as WEIGHTINGS
from ..weighting.base import TaskGradients, Weighting
from .bilevel import MOBLOProblem, implicit_hypergradients, lower_descent, unrolled_hypergradients
from .moco import MoCo

LOWER_INITS = ("warm", "fixed")
HYPERGRADIENTS = ("unrolled", "implicit")
OPTIMIZERS = ("sgd", "adam")


def combiner_class(name: str) -> type[Weighting]:
    """A registered weighting, or MoCo (kept here until it is registered project-wide)."""
    if name == "moco":
        return MoCo
    if name not in WEIGHTINGS:
        raise ValueError(f"weighting.combiner: unknown {name!r}; known: {sorted([*WEIGHTINGS, 'moco'])}")
    return WEIGHTINGS[name]


def check_combiner(name: str, options: dict | None) -> type[Weighting]:
    """The combiner's class, after checking its name and options (errors name the config field)."""
    cls = combiner_class(name)
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"weighting.combiner_options: expected a mapping, got {options!r}")
    check_options("weighting.combiner_options", cls, dict(options or {}), skip=3)
    return cls


def build_combiner(name: str, num_params: int, num_objectives: int, seed: int, options: dict | None) -> Weighting:
    cls = check_combiner(name, options)
    with options_of("weighting.combiner_options"):
        return cls(num_params, num_objectives, seed, **dict(options or {}))


def make_optimizer(name: str, tensor: torch.Tensor, lr: float, field: str) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"{field}: unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")
    return (torch.optim.SGD if name == "sgd" else torch.optim.Adam)([tensor], lr=lr)


def objective_stats(prefix: str, names, values: torch.Tensor) -> dict[str, float]:
    return {f"{prefix}_{name}": float(v) for name, v in zip(names, values.detach().cpu().tolist())}


def objective_names(problem: MOBLOProblem) -> tuple[str, ...]:
    names = tuple(problem.objective_names)
    return names if len(names) == problem.num_objectives else tuple(f"F{i + 1}" for i in range(problem.num_objectives))


class MOML:
    """Algorithm 1 on any MOBLOProblem; the iterate is (alpha, omega) with omega the last ω_T."""

    name = "moml"
    updates_omega_directly = False  # ω moves only through the LL steps

    def __init__(self, problem: MOBLOProblem, alpha: torch.Tensor, omega: torch.Tensor, seed: int, *,
                 lower_steps: int = 50, lower_lr: float = 0.05, alpha_lr: float = 0.3, alpha_optimizer: str = "sgd",
                 combiner: str = "mgda", combiner_options: dict | None = None, lower_init: str = "warm",
                 hypergradient: str = "unrolled", cg_steps: int = 50):
        if not isinstance(lower_steps, int) or lower_steps < 0:
            raise ValueError(f"weighting.lower_steps: must be an integer >= 0, got {lower_steps!r}")
        for field, value in (("lower_lr", lower_lr), ("alpha_lr", alpha_lr)):
            if not value > 0:
                raise ValueError(f"weighting.{field}: must be > 0, got {value}")
        if lower_init not in LOWER_INITS:
            raise ValueError(f"weighting.lower_init: unknown {lower_init!r}; known: {list(LOWER_INITS)}")
        if hypergradient not in HYPERGRADIENTS:
            raise ValueError(f"weighting.hypergradient: unknown {hypergradient!r}; known: {list(HYPERGRADIENTS)}")
        if not isinstance(cg_steps, int) or cg_steps < 1:
            raise ValueError(f"weighting.cg_steps: must be an integer >= 1, got {cg_steps!r}")
        self.problem, self.seed = problem, seed
        self.lower_steps, self.lower_lr = lower_steps, float(lower_lr)
        self.lower_init, self.hypergradient, self.cg_steps = lower_init, hypergradient, cg_steps
        self.alpha = alpha.detach().clone().requires_grad_(True)  # a leaf the optimiser steps
        self.omega = omega.detach().clone()
        self.omega_init = omega.detach().clone()
        self.optimizer = make_optimizer(alpha_optimizer, self.alpha, alpha_lr, "weighting.alpha_optimizer")
        self.combiner = build_combiner(combiner, self.alpha.numel(), problem.num_objectives, seed, combiner_options)
        self.names = objective_names(problem)

    def lower_start(self) -> torch.Tensor:
        return self.omega if self.lower_init == "warm" else self.omega_init

    def hypergradients(self, iteration: int):
        lower_batch, upper_batch = self.problem.lower_batch(iteration), self.problem.upper_batch(iteration)
        if self.hypergradient == "unrolled":
            return unrolled_hypergradients(self.problem, self.alpha, self.lower_start(), lower_batch, upper_batch,
                                           self.lower_steps, self.lower_lr)
        omega_T = lower_descent(self.problem, self.alpha, self.lower_start(), lower_batch, self.lower_steps,
                                self.lower_lr, differentiable=False)
        values, grads = implicit_hypergradients(self.problem, self.alpha, omega_T, lower_batch, upper_batch,
                                                self.cg_steps)
        return values, grads, omega_T

    def step(self, iteration: int) -> dict[str, float]:
        """One UL iteration; the returned stats describe the point (α_k, ω_T^k) before the α step."""
        values, grads, omega_T = self.hypergradients(iteration)
        m = self.problem.num_objectives
        tasks = TaskGradients(losses=values, grads=grads, features=torch.eye(m, dtype=grads.dtype),
                              params=self.alpha.detach().clone(), iteration=iteration,
                              generator=step_generator(self.seed, iteration), task_ids=torch.arange(m),
                              num_pool_tasks=m)
        combined = self.combiner.combine(tasks.only(self.combiner.reads))
        self.optimizer.zero_grad()
        self.alpha.grad = combined.direction.detach().to(self.alpha.dtype).clone()
        self.optimizer.step()
        self.alpha.grad = None
        self.omega = omega_T
        if not (torch.all(torch.isfinite(self.alpha)) and torch.all(torch.isfinite(self.omega))):
            raise FloatingPointError(f"moml: the iterate became non-finite at UL iteration {iteration}; "
                                     "lower weighting.alpha_lr or weighting.lower_lr")
        stats = {**objective_stats("upper", self.names, values),
                 **objective_stats("weight", self.names, combined.weights),
                 "direction_norm": float(combined.direction.norm()),
                 # ‖Σ_i γ_i h_i‖²: MOML's Pareto-stationarity measure of the surrogate φ_T at α_k
                 "stationarity": float(combined.direction.norm() ** 2)}
        stats.update({key: float(value) for key, value in combined.stats.items()})
        return stats

    def point(self, iteration: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(α, ω_T(α)): the LL solution the next iteration would reach for the current α."""
        omega = lower_descent(self.problem, self.alpha, self.lower_start(), self.problem.lower_batch(iteration),
                              self.lower_steps, self.lower_lr, differentiable=False)
        return self.alpha.detach().clone(), omega

    def model_parameters(self) -> torch.Tensor:
        """The LL parameters a model evaluation should use (the last ω_T)."""
        return self.omega.detach().clone()

    def state_dict(self) -> dict:
        return {"alpha": self.alpha.detach().clone(), "omega": self.omega.detach().clone(),
                "optimizer": self.optimizer.state_dict(), "combiner": self.combiner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self.omega = state["omega"].detach().clone()
        self.optimizer.load_state_dict(state["optimizer"])
        self.combiner.load_state_dict(state["combiner"])
