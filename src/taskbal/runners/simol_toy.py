"""Runner for SIMOL's Figure 1: full MGDA, mini-batch MGDA and SIMOL on the two-objective toy
(Yu et al., ICLR 2023, §3 and Appendix A; the problem is in taskbal/data/simol_toy.py).

The toy's "tasks" are its two objectives and its meta-parameters are the point x ∈ R² (no inner
loop: f_τ(x) is evaluated directly). Each iteration samples a mini-batch of ``problem.batch_size``
objectives (all of them when it equals 2 — "full" MGDA — otherwise drawn with
``problem.task_probabilities``, 2/3 and 1/3 in the paper), hands their values and exact gradients to
a weighting of taskbal.weighting (the same code the meta-learning runner uses: ``mgda`` gives full
or mini-batch MGDA; any registered weighting works), and steps x along the combined direction.

``weighting.name: simol`` is the one toy-specific path: the paper says "the meta-learner and the
re-weighting network are represented by learnable vectors", so r_θ(τ) = θ_τ² with one learnable
entry per objective (θ₀ = ``init_theta``, 1 by default) instead of weighting/simol.py's MLP on task
features. Everything else — the direction (1/k) Σ_τ r_θ(τ) ∇f_τ with r detached, and the ascent on
K̃_B(θ) = −‖(1/k) Σ r g‖²/(2λ̂') − λ̂''((1/k) Σ r − 1)²/2 — is weighting/simol.py's SIMOL code.

Experiment section ``problem`` (defaults in brackets):
    start               initial point x₀                                            [required]
    iterations          number of steps                                             [required]
    batch_size          objectives per step: 2 = full, 1 = the paper's mini-batch     [required]
    task_probabilities  sampling probabilities of f₁, f₂ when batch_size < 2         [[2/3, 1/3]]
    lr                  step size of x (paper: 0.01 for every method)                [0.01]
    optimizer           sgd (plain steps x ← x − lr·d) or adam                       [sgd]
    curve_every         iterations between rows of curve.csv                        [100]

Choices where the paper is silent: the starting points are CAGrad's
(−8.5, 7.5), (−8.5, −5), (9, 9); plain gradient steps (the paper gives only learning rates; CAGrad's
toy uses Adam, available as ``optimizer: adam``); the number of iterations is the config's; a
mini-batch of one objective is drawn independently each step from the run's seed. A run whose x
turns non-finite (plain steps through the log-valleys, where gradients reach 1/5e−6) stops at its
last finite point; train.json then records ``diverged_at`` (and has no such key when the run never
diverged: a figure names every seed whose train.json has one as diverged, taskbal.divergence).

Outputs: curve.csv (iteration, x1, x2, f1, f2, distance_to_front, distance_to_pareto_set, the
weights given to f₁ and f₂ in the step, and SIMOL's r statistics), train.json, final.pt; evaluate
writes eval.csv (one row per objective: its final value) and eval.json (distance_to_front: Euclidean
distance of (f₁, f₂)(x_T) to the analytic front; distance_to_pareto_set in x-space; f1, f2;
min_norm: ‖Σ γ_i ∇f_i(x_T)‖ at the MGDA weights γ, the Pareto-stationarity gap) and, from the
curve points of the trajectory's tail (its last ``TAIL`` of the iterations run), tail_mean_distance_to_front
and tail_spread: √(var f₁ + var f₂) over the tail. The end point alone cannot tell a run that settles
from one that keeps wandering along the front: x a distance δ off the Pareto set is only O(δ²) off the
front (at a Pareto-stationary point the front's normal is orthogonal to the first-order change of f),
so both end ~1e-6 from it; the tail's spread tells them apart (SIMOL §3: mini-batch MGDA "cannot
converge to the Pareto front").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import EVAL as EVAL_FILE
from ..artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..data.simol_toy import Tasks, check_data
from ..io import atomic_path, write_json
from ..loop import fit, step_generator
from ..options import check_options, options_of, section_settings
from ..weighting import REGISTRY, TaskGradients
from ..weighting.mgda import min_norm_weights
from ..weighting.simol import SIMOL, ThetaAscent

REQUIRED = ("start", "iterations", "batch_size")
DEFAULTS = {"task_probabilities": [2.0 / 3.0, 1.0 / 3.0], "lr": 0.01, "optimizer": "sgd", "curve_every": 100}
NUM_OBJECTIVES = 2
TAIL = 0.1  # the trajectory's tail: its curve points in the last tenth of the iterations run


class VectorReweighting(torch.nn.Module):
    """r_θ(τ) = θ_τ², one learnable entry per objective (SIMOL Appendix A: "learnable vectors")."""

    def __init__(self, num_tasks: int, init_theta: float):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.full((num_tasks,), float(init_theta), dtype=torch.float64))

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        return self.theta[task_ids] ** 2


class ToySIMOL(SIMOL):
    """weighting/simol.py's SIMOL with the toy's vector re-weighting in place of the MLP."""

    reads = SIMOL.reads | {"task_ids"}

    def __init__(self, num_params: int, feature_dim: int, seed: int, *, lambda_grad: float = 1.0,
                 lambda_mean: float = 1.0, theta_lr: float = 0.1, theta_optimizer: str = "sgd",
                 init_theta: float = 1.0):
        super().__init__(num_params, feature_dim, seed, lambda_grad=lambda_grad, lambda_mean=lambda_mean,
                         theta_lr=theta_lr, theta_optimizer=theta_optimizer)
        self.net = VectorReweighting(NUM_OBJECTIVES, init_theta)
        self.theta = self.net.theta.detach()  # the same storage: the ascent moves the vector in place
        self.ascent = ThetaAscent(self.theta, theta_optimizer, theta_lr)

    def weights(self, tasks: TaskGradients) -> torch.Tensor:
        return self.net(tasks.task_ids).to(tasks.grads.dtype)

    def network_inputs(self, tasks: TaskGradients) -> torch.Tensor:
        return tasks.task_ids

    def theta_gradients(self, tasks: TaskGradients) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K̃_B(θ), ∇_θ K̃_B(θ) and r_θ by autograd of ``objective``: SIMOL's closed-form backward
        is written for its Linear/ReLU network, not for this vector."""
        with torch.enable_grad():
            r = self.weights(tasks)
            objective = self.objective(r, tasks.grads @ tasks.grads.T)
            (gradient,) = torch.autograd.grad(objective, [self.net.theta])
        return objective.detach(), gradient, r.detach()


def weighting_class(name: str):
    if name == "simol":
        return ToySIMOL
    if name not in REGISTRY:
        raise ValueError(f"weighting.name: unknown method {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def settings(experiment: dict) -> dict:
    conf = section_settings(experiment, "problem", "simol_toy", REQUIRED, DEFAULTS,
                            positive_integers=("iterations", "curve_every"))
    start = conf["start"]
    if not (isinstance(start, (list, tuple)) and len(start) == 2 and all(isinstance(v, (int, float)) for v in start)):
        raise ValueError(f"problem.start: expected two numbers [x1, x2], got {start!r}")
    if conf["batch_size"] not in (1, 2):
        raise ValueError(f"problem.batch_size: must be 1 or 2 (the toy has two objectives), got {conf['batch_size']!r}")
    probabilities = np.asarray(conf["task_probabilities"], dtype=np.float64)
    if probabilities.shape != (NUM_OBJECTIVES,) or np.any(probabilities < 0) or abs(probabilities.sum() - 1) > 1e-9:
        raise ValueError(f"problem.task_probabilities: expected two non-negative numbers summing to 1, "
                         f"got {conf['task_probabilities']!r}")
    if conf["lr"] <= 0:
        raise ValueError(f"problem.lr: must be > 0, got {conf['lr']}")
    if conf["optimizer"] not in ("sgd", "adam"):
        raise ValueError(f"problem.optimizer: expected 'sgd' or 'adam', got {conf['optimizer']!r}")
    return conf


def check_experiment(experiment: dict) -> None:
    check_data(experiment["data"])
    settings(experiment)
    options = {k: v for k, v in experiment["weighting"].items() if k != "name"}
    check_options("weighting", weighting_class(experiment["weighting"]["name"]), options, skip=3)


def sample_batch(rng: np.random.Generator, batch_size: int, probabilities: list[float]) -> np.ndarray:
    """Indices of the objectives in this step's mini-batch (all of them for a full batch)."""
    if batch_size >= NUM_OBJECTIVES:
        return np.arange(NUM_OBJECTIVES)
    return np.sort(rng.choice(NUM_OBJECTIVES, size=batch_size, replace=False, p=probabilities))


def mgda_min_norm(grads: np.ndarray) -> tuple[float, np.ndarray]:
    """‖Σ γ_i g_i‖ at the min-norm weights γ of all objectives' gradients (Pareto-stationarity gap)."""
    gamma = min_norm_weights(grads @ grads.T)
    return float(np.linalg.norm(gamma @ grads)), gamma


def tail_summary(points: np.ndarray) -> dict:
    """Where the trajectory's tail lies and how much it still moves. ``points`` [n, 4]: (iteration, f1, f2,
    distance to the front) of every curve point; the tail is the points of the last ``TAIL`` of the
    iterations run (a run stopped early included)."""
    points = np.asarray(points, dtype=np.float64)
    tail = points[points[:, 0] >= (1.0 - TAIL) * points[-1, 0]]
    return {"tail_mean_distance_to_front": float(tail[:, 3].mean()),
            "tail_spread": float(np.sqrt(tail[:, 1].var() + tail[:, 2].var()))}


def record(problem, x: np.ndarray, iteration: int, extra: dict) -> dict:
    values, _ = problem.values_and_gradients(x)
    row = {"iteration": iteration, "x1": float(x[0]), "x2": float(x[1]), "f1": float(values[0]),
           "f2": float(values[1]), "distance_to_front": problem.distance_to_front(values),
           "distance_to_pareto_set": problem.distance_to_pareto_set(x)}
    row.update(extra)
    return row


class ToyRun:
    """One method from one start on the two-objective toy, a trainable of taskbal.loop. A step to a
    non-finite point is undone and ends the run there (``stopped``)."""

    def __init__(self, experiment: dict, seed: int, split_path: Path):
        self.conf, self.name = settings(experiment), experiment["weighting"]["name"]
        self.iterations, self.curve_every = self.conf["iterations"], self.conf["curve_every"]
        self.problem = Tasks(split_path)
        options = {k: v for k, v in experiment["weighting"].items() if k != "name"}
        with options_of("weighting"):
            self.weighting = weighting_class(experiment["weighting"]["name"])(2, NUM_OBJECTIVES, seed, **options)
        self.x = torch.tensor(self.conf["start"], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.SGD if self.conf["optimizer"] == "sgd" else torch.optim.Adam
        self.optimizer = optimizer([self.x], lr=self.conf["lr"])
        self.rng = np.random.default_rng([seed, 1])
        self.seed = seed
        self.one_hot = torch.eye(NUM_OBJECTIVES, dtype=torch.float64)
        self.diverged_at: int | None = None
        self.trajectory: list[list[float]] = []  # (iteration, f1, f2, distance) per curve point: the tail's source

    @property
    def stopped(self) -> bool:
        return self.diverged_at is not None

    def step(self, iteration: int) -> dict:
        batch = sample_batch(self.rng, self.conf["batch_size"], self.conf["task_probabilities"])
        values, grads = self.problem.values_and_gradients(self.x.detach().numpy())
        ids = torch.as_tensor(batch)
        tasks = TaskGradients(losses=torch.as_tensor(values[batch]), grads=torch.as_tensor(grads[batch]),
                              features=self.one_hot[ids], params=self.x.detach().clone(), iteration=iteration,
                              generator=step_generator(self.seed, iteration), task_ids=ids,
                              num_pool_tasks=NUM_OBJECTIVES)
        combined = self.weighting.combine(tasks.only(self.weighting.reads))
        previous = self.x.detach().clone()
        self.optimizer.zero_grad()
        self.x.grad = combined.direction.detach().clone()
        self.optimizer.step()
        if not torch.all(torch.isfinite(self.x)):  # a diverging run stops at its last finite point
            with torch.no_grad():
                self.x.copy_(previous)
            self.diverged_at = iteration
        step_weights = np.zeros(NUM_OBJECTIVES)
        step_weights[batch] = combined.weights.detach().numpy()
        return {"weight_f1": step_weights[0], "weight_f2": step_weights[1], **combined.stats}

    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        # Averages over the steps since the last row: which objective was drawn, with what weight.
        means = {key: float(np.mean([w.get(key, np.nan) for w in window])) for key in window[0]} if window else {}
        row = record(self.problem, self.x.detach().numpy(), iteration, means)
        self.trajectory.append([iteration, row["f1"], row["f2"], row["distance_to_front"]])
        return row

    def state_dict(self) -> dict:
        return {"x": self.x.detach().clone(), "optimizer": self.optimizer.state_dict(),
                "weighting": self.weighting.state_dict(), "rng": self.rng.bit_generator.state,
                "diverged_at": self.diverged_at, "trajectory": [list(point) for point in self.trajectory]}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.x.copy_(state["x"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])
        self.rng.bit_generator.state = state["rng"]
        self.diverged_at = state["diverged_at"]
        self.trajectory = [list(point) for point in state["trajectory"]]

    def final_state(self) -> dict:
        return {"x": self.x.detach().numpy().copy(), "weighting": self.weighting.state_dict(),
                "trajectory": np.asarray(self.trajectory, dtype=np.float64)}

    def final_line(self, summary: dict) -> str:
        return (f"{self.name} (batch {self.conf['batch_size']}) from {self.conf['start']}: distance to the front "
                f"{summary['final_distance_to_front']:.4g} after {self.iterations} steps")

    def summary(self, rows: list[dict]) -> dict:
        stopped = {} if self.diverged_at is None else {"diverged_at": self.diverged_at}
        return {"final_distance_to_front": rows[-1]["distance_to_front"], **stopped,
                "f1": rows[-1]["f1"], "f2": rows[-1]["f2"]}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run one method from one start through taskbal.loop; ``device`` is unused (the toy runs on the CPU)."""
    check_experiment(experiment)
    return fit(lambda: ToyRun(experiment, seed, Path(split_path)), experiment, seed, out_dir,
                  checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress)


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    final = torch.load(final_path, map_location="cpu", weights_only=False)
    problem = Tasks(split_path)
    x = np.asarray(final["x"], dtype=np.float64)
    values, grads = problem.values_and_gradients(x)
    min_norm, gamma = mgda_min_norm(grads)
    out_dir = Path(out_dir)
    frame = pd.DataFrame({"objective": ["f1", "f2"], "value": values})
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        frame.to_csv(tmp, index=False)
    summary = {"distance_to_front": problem.distance_to_front(values),
               "distance_to_pareto_set": problem.distance_to_pareto_set(x),
               "f1": float(values[0]), "f2": float(values[1]), "x1": float(x[0]), "x2": float(x[1]),
               "min_norm": min_norm, "mgda_weight_f1": float(gamma[0]), **tail_summary(final["trajectory"])}
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
