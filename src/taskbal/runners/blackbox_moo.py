"""Runner for the thesis' synthetic black-box MOO benchmarks (Ye, thesis §4.6.1, Figs. 4.1–4.4).

One run = one optimiser (``weighting.name``: asmg, asmg_ew, es, bes, cmaes, mmes; its options are the
rest of the ``weighting`` section) on one problem (``data``: family blackbox_moo, problem, dim), for
``problem.iterations`` iterations of ``problem.population`` samples each. Experiment section
``problem`` (runner settings; defaults in brackets):

    population   N, samples per iteration (the thesis' N ∈ {10, 50, 100})         [required]
    iterations   T, iterations to run (the thesis does not state it)              [required]
    curve_every  iterations between rows of curve.csv                            [10]
    init_low, init_high   μ₀ ~ U[init_low, init_high]^d (thesis: U[0, 1]^d)       [0, 1]
    init_sigma   Σ₀ = init_sigma² I for every method (thesis: I)                  [1]

Outputs: curve.csv (iteration, evaluations = objective-vector queries so far, distance = E =
dist(μ_t, P) as the thesis defines it, F1, F2 at μ_t, and the optimiser's scalars such as
sigma_mean and ASMG's weights), train.json, final.pt; evaluate writes eval.csv (one row per
objective: its value at the final μ_T, with the run's distance) and eval.json (distance,
log10_distance, F1, F2, evaluations).

Deliberate choices:
  * The evaluated point is the mean of each method's search distribution (the thesis does not say;
    this is our choice). Monitoring F(μ_t) for the curve is not counted as evaluations.
  * μ₀ depends only on the seed (NumPy stream [seed, 0]); the optimiser draws from [seed, 1]. All
    methods of one seed start at the same point, so seeds pair the methods.
  * A run whose mean (or its distance E) turns non-finite (a diverging fixed-step baseline) is stopped there: the
    last finite state is kept for the remaining rows, and train.json records ``diverged_at`` (no such key
    when the run never diverged: taskbal.divergence reads any ``diverged_at`` as a divergence).
  * log10_distance uses max(E, 1e-12): E is exactly 0 inside the l1 problem's Pareto box.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import EVAL as EVAL_FILE
from ..artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..blackbox import OPTIMIZERS, build_optimizer
from ..data.blackbox_moo import Tasks, check_data
from ..io import atomic_path, write_json
from ..loop import fit
from ..options import check_options, section_settings

PROBLEM_DEFAULTS = {"curve_every": 10, "init_low": 0.0, "init_high": 1.0, "init_sigma": 1.0}
DISTANCE_FLOOR = 1e-12


def settings(experiment: dict) -> dict:
    """The ``problem`` section with defaults filled in, checked."""
    resolved = section_settings(experiment, "problem", "blackbox_moo", ("population", "iterations"), PROBLEM_DEFAULTS,
                                positive_integers=("population", "iterations", "curve_every"))
    if resolved["population"] < 2:
        raise ValueError(f"problem.population: must be >= 2, got {resolved['population']}")
    if not resolved["init_low"] < resolved["init_high"]:
        raise ValueError(f"problem.init_low: must be < problem.init_high, got {resolved['init_low']} "
                         f"and {resolved['init_high']}")
    if resolved["init_sigma"] <= 0:
        raise ValueError(f"problem.init_sigma: must be > 0, got {resolved['init_sigma']}")
    return resolved


def optimizer_options(experiment: dict) -> tuple[str, dict]:
    weighting = dict(experiment["weighting"])
    name = weighting.pop("name")
    return name, weighting


def check_experiment(experiment: dict) -> None:
    """Called by taskbal.runners.check_experiment before anything runs."""
    check_data(experiment["data"])
    settings(experiment)
    name, options = optimizer_options(experiment)
    if name not in OPTIMIZERS:
        raise ValueError(f"weighting.name: unknown black-box optimiser {name!r}; known: {sorted(OPTIMIZERS)}")
    if "init_sigma" in options:
        raise ValueError("weighting.init_sigma: set problem.init_sigma instead (Σ₀ is shared by all methods)")
    # dim, num_objectives, population, mean, rng are supplied by the runner.
    check_options("weighting", OPTIMIZERS[name], options, skip=5)


def initial_mean(seed: int, dim: int, low: float, high: float) -> np.ndarray:
    return np.random.default_rng([seed, 0]).uniform(low, high, size=dim)


def build(experiment: dict, seed: int, problem) -> tuple:
    conf = settings(experiment)
    name, options = optimizer_options(experiment)
    mean = initial_mean(seed, problem.dim, conf["init_low"], conf["init_high"])
    optimizer = build_optimizer(name, problem.dim, problem.num_objectives, conf["population"], mean,
                                np.random.default_rng([seed, 1]), init_sigma=conf["init_sigma"], **options)
    return conf, optimizer


def curve_row(problem, optimizer, stats: dict) -> dict:
    values = problem(optimizer.mean[None])[0]
    row = {"iteration": optimizer.iteration, "evaluations": optimizer.evaluations,
           "distance": problem.distance(optimizer.mean)}
    row.update({f"F{i + 1}": float(v) for i, v in enumerate(values)})
    row.update(stats)
    return row


class BlackBoxRun:
    """One optimiser on one problem, a trainable of taskbal.loop. A step whose mean is not finite is
    undone: the run stays frozen at its last finite state for the remaining iterations."""

    def __init__(self, experiment: dict, seed: int, split_path: Path):
        self.problem = Tasks(split_path)
        self.conf, self.optimizer = build(experiment, seed, self.problem)
        self.iterations, self.curve_every = self.conf["iterations"], self.conf["curve_every"]
        self.diverged_at: int | None = None
        self.last_stats: dict = {}

    def step(self, iteration: int) -> dict:
        if self.diverged_at is None:
            before = self.optimizer.state_dict()
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging baseline overflows; caught below
                stats = self.optimizer.step(self.problem)
                mean = self.optimizer.mean
                finite = np.all(np.isfinite(mean)) and np.isfinite(self.problem.distance(mean))
            if finite:
                self.last_stats = stats
            else:
                self.optimizer.load_state_dict(before)
                self.diverged_at = before["iteration"]
        if self.diverged_at is not None:
            self.optimizer.iteration += 1  # frozen at the last finite state
        return self.last_stats

    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        return curve_row(self.problem, self.optimizer, window[-1] if window else {})

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "diverged_at": self.diverged_at,
                "last_stats": self.last_stats}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.diverged_at, self.last_stats = state["diverged_at"], state["last_stats"]

    def final_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "mean": self.optimizer.mean.copy()}

    def final_line(self, summary: dict) -> str:
        return (f"{self.optimizer.name} on {self.problem.problem} (d={self.problem.dim}, "
                f"N={self.conf['population']}): E = {summary['final_distance']:.3e} "
                f"after {self.optimizer.iteration} iterations")

    def summary(self, rows: list[dict]) -> dict:
        # Numbers only: the summary is logged as MLflow metrics. ``diverged_at`` only for a run that diverged.
        stopped = {} if self.diverged_at is None else {"diverged_at": self.diverged_at}
        return {"final_distance": rows[-1]["distance"], "evaluations": self.optimizer.evaluations, **stopped,
                "dim": self.problem.dim, "population": self.conf["population"]}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run one optimiser on one problem through taskbal.loop; ``device`` is unused (NumPy on the CPU)."""
    check_experiment(experiment)
    return fit(lambda: BlackBoxRun(experiment, seed, Path(split_path)), experiment, seed, out_dir,
                  checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress)


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    final = torch.load(final_path, map_location="cpu", weights_only=False)
    problem = Tasks(split_path)
    mean = np.asarray(final["mean"], dtype=np.float64)
    values = problem(mean[None])[0]
    distance = problem.distance(mean)
    out_dir = Path(out_dir)
    frame = pd.DataFrame({"objective": [f"F{i + 1}" for i in range(len(values))], "value": values,
                          "distance": distance})
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        frame.to_csv(tmp, index=False)
    state = final["optimizer"]
    summary = {"distance": distance, "log10_distance": float(np.log10(max(distance, DISTANCE_FLOOR))),
               "evaluations": int(state["evaluations"]), "iterations": int(state["iteration"])}
    summary.update({f"F{i + 1}": float(v) for i, v in enumerate(values)})
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
