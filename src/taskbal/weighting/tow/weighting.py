"""The TOW weighting: at the first iteration of a window it plans the weights of the next T meta-batches
by iLQR (``problem.MetaProblem``), then returns the planned weights' combination of the loop's own
meta-gradients at every iteration of the window."""
from __future__ import annotations

import torch

from ...options import OptionError
from ..base import Combined, Planning, TaskGradients, Weighting
from .dynamics import AdamDynamics, SGDDynamics
from .ilqr import ilqr
from .problem import MetaProblem, evaluate_learner

# ``value: full`` keeps two D×D matrices at a time (V_{t+1} and Q_xx); at this size 6.4 GB each in float32.
# mini-ImageNet's conv4 MAML (D = 32,645) is the largest network TOW ran with an exact V_t (App. B, Fig. 3b).
MAX_FULL_PARAMS = 40_000


class TOW(Weighting):
    name = "tow"
    reads = frozenset({"grads", "losses", "params", "iteration"})
    plans_ahead = True

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, horizon: int = 5, iterations: int = 2,
                 prior_precision: float = 10.0, prior_mean: float | None = None, value: str = "diagonal",
                 curvature: str = "diagonal", dynamics: str = "adam", theta: str = "inverse",
                 line_search: str = "paper", min_step: float = 2.0 ** -10, final_pass: str = "simulated",
                 gauss_newton: str = "adapted", batch_statistics: str = "held"):
        super().__init__(num_params, feature_dim, seed)
        for field, val, allowed in (("value", value, ("diagonal", "full")),
                                    ("curvature", curvature, ("diagonal", "full")),
                                    ("dynamics", dynamics, ("adam", "sgd")),
                                    ("theta", theta, ("inverse", "printed")),
                                    ("line_search", line_search, ("paper", "none")),
                                    ("final_pass", final_pass, ("simulated", "live")),
                                    ("gauss_newton", gauss_newton, ("adapted", "meta")),
                                    ("batch_statistics", batch_statistics, ("held", "coupled"))):
            if val not in allowed:
                raise OptionError(field, f"expected one of {list(allowed)}, got {val!r}")
        for field, val in (("horizon", horizon), ("iterations", iterations)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise OptionError(field, f"expected an integer >= 1, got {val!r}")
        if prior_mean is not None and (isinstance(prior_mean, bool) or not isinstance(prior_mean, (int, float))):
            raise OptionError("prior_mean", f"expected a number or null (1/M), got {prior_mean!r}")
        if not prior_precision > 0:
            raise OptionError("prior_precision", f"must be > 0, got {prior_precision!r}")
        if not 0 < min_step <= 1:
            raise OptionError("min_step", f"must be in (0, 1], got {min_step!r}")
        if (value == "full" or curvature == "full") and num_params > MAX_FULL_PARAMS:
            field = "value" if value == "full" else "curvature"
            raise OptionError(field, f"'full' keeps D×D matrices per stage; D = {num_params} exceeds "
                             f"{MAX_FULL_PARAMS} (use 'diagonal')")
        self.horizon, self.iterations = horizon, iterations
        self.prior_precision, self.prior_mean = prior_precision, prior_mean
        self.value, self.curvature, self.dynamics = value, curvature, dynamics
        self.theta, self.line_search, self.min_step, self.final_pass = theta, line_search, min_step, final_pass
        self.gauss_newton, self.batch_statistics = gauss_newton, batch_statistics
        self.plan: dict | None = None  # the current window: start iteration, weights or gains
        self.planning: Planning | None = None

    def attach(self, planning: Planning) -> None:
        """The learner, outer optimiser and upcoming meta-batches the plans are made with."""
        self.planning = planning

    # -- planning ----------------------------------------------------------------------------------
    def outer_dynamics(self, optimizer, x: torch.Tensor):
        group = optimizer.param_groups[0]
        if self.dynamics == "sgd":
            if not isinstance(optimizer, torch.optim.SGD) or group.get("momentum", 0):
                raise OptionError("dynamics", "'sgd' plans plain SGD steps but the outer optimiser is "
                                 f"{type(optimizer).__name__}; use dynamics: adam")
            return SGDDynamics(group["lr"]), None
        if not isinstance(optimizer, torch.optim.Adam) or group.get("weight_decay", 0) or group.get("amsgrad"):
            raise OptionError("dynamics", f"'adam' needs a plain torch Adam outer optimiser, got {optimizer!r}")
        dyn = AdamDynamics(group["lr"], group["betas"], group["eps"])
        params = [p for g in optimizer.param_groups for p in g["params"]]
        states = [optimizer.state.get(p, {}) for p in params]
        if not states[0]:
            return dyn, dyn.initial_state(x)
        m = torch.cat([s["exp_avg"].reshape(-1) for s in states]).to(x.dtype)
        v = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states]).to(x.dtype)
        return dyn, (m, v, int(states[0]["step"]))

    def make_plan(self, tasks: TaskGradients) -> None:
        if self.planning is None:
            raise ValueError("weighting tow plans with the learner, the outer optimiser and the upcoming "
                             "meta-batches (Weighting.attach(Planning(...))); run it through taskbal.train")
        learner = self.planning.learner
        if not getattr(learner, "descends_query_losses", False):
            raise ValueError(f"weighting tow: learner {type(learner).__name__} does not descend the gradient of its "
                             "query losses (TOW's dynamics); use maml, metasgd, cavia or protonet")
        if learner.couples_tasks or learner.task_chunk:
            raise ValueError("weighting tow: learners with a coupling penalty or task_chunk are not supported")
        batches = self.planning.upcoming(tasks.iteration, self.horizon)
        trajectory, log, last = self.solve(batches, tasks.params, known=(tasks.losses, tasks.grads),
                                           live=self.final_pass == "live")
        self.plan = {"start": tasks.iteration, "length": len(batches), "us": torch.stack(trajectory.us),
                     "xs": torch.stack(trajectory.xs), "log": log}
        if last is not None:
            self.plan["gains"], self.plan["offsets"] = torch.stack(last[0]), torch.stack(last[1])

    def solve(self, batches: list, x1: torch.Tensor, known: tuple | None = None, live: bool = False):
        """iLQR on the window of meta-batches ``batches`` from the meta-parameters x1 and the outer optimiser's
        current state (``known``: batch 1's losses and meta-gradients at x1, if already evaluated)."""
        learner = self.planning.learner
        dynamics, state1 = self.outer_dynamics(self.planning.optimizer, x1)
        options = {"curvature": self.curvature, "through": self.gauss_newton, "statistics": self.batch_statistics}
        problem = MetaProblem(lambda t, x: evaluate_learner(learner, batches[t], x, **options),
                              len(batches), batches[0].num_tasks, dynamics, self.prior_precision, self.prior_mean,
                              evaluate_final=lambda t, x: evaluate_learner(learner, batches[t], x, **options,
                                                                           defer_grads=True))
        problem.bind(x1)
        first = evaluate_learner(learner, batches[0], x1, **options, known=known) if known else None
        return ilqr(problem, x1, state1, self.iterations, self.value, self.theta, self.line_search, self.min_step,
                    last_backward_only=live, first_eval=first)

    def probe(self, batches: list, x1: torch.Tensor) -> torch.Tensor:
        """The weights [T, M] TOW would plan for the window ``batches`` from x1 and the outer optimiser's
        current state, without training on them (TOW's Figures 4–5 monitor pre-defined tasks this way);
        nothing of the run changes."""
        trajectory, _, _ = self.solve(batches, x1)
        return torch.stack(trajectory.us)

    def combine(self, tasks: TaskGradients) -> Combined:
        plan = self.plan
        if plan is None or not plan["start"] <= tasks.iteration < plan["start"] + plan["length"]:
            self.make_plan(tasks)
            plan = self.plan
        j = tasks.iteration - plan["start"]
        u = plan["us"][j].to(tasks.grads.dtype)
        if "gains" in plan:  # live final pass: the loop's x_t is the forward pass's state
            u = (u + plan["gains"][j] @ (tasks.params - plan["xs"][j]) + plan["offsets"][j]).clamp_min(0)
        stats = {"tow_weight_sum": u.sum().item(), "tow_weight_min": u.min().item(),
                 "tow_weight_max": u.max().item()}
        stats.update({f"tow_{key}": float(val) for key, val in plan["log"].items()})  # the window's planning
        return Combined(direction=u @ tasks.grads, weights=u, stats=stats)

    def state_dict(self) -> dict:
        return {"plan": self.plan}

    def load_state_dict(self, state: dict) -> None:
        self.plan = state.get("plan")
