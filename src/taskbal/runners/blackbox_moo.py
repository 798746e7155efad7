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
    last finite state is kept for the remaining rows, and train.json records ``diverged_at`` (−1: never).
  * log10_distance uses max(E, 1e-12): E is exactly 0 inside the l1 problem's Pareto box.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..blackbox import OPTIMIZERS, build_optimizer
from ..config import check_options, section_settings
from ..data.blackbox_moo import Tasks, check_data
from ..io import atomic_path, write_json

from ..artifacts import CURVE as CURVE_FILE, EVAL as EVAL_FILE, EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..artifacts import FINAL as FINAL_FILE, RESUME as RESUME_FILE
from ..artifacts import TRAIN_SUMMARY as SUMMARY_FILE
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
    """Called by taskbal.config.check_experiment before anything runs."""
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


def save_resume(path: Path, optimizer, rows: list[dict], diverged_at, seconds: float) -> None:
    with atomic_path(path) as tmp:
        torch.save({"optimizer": optimizer.state_dict(), "rows": rows, "diverged_at": diverged_at,
                    "seconds": seconds}, tmp)


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run one optimiser on one problem; ``device`` is unused (NumPy on the CPU)."""
    check_experiment(experiment)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problem = Tasks(split_path)
    conf, optimizer = build(experiment, seed, problem)
    resume_path = out_dir / RESUME_FILE
    rows, diverged_at, seconds = [], None, 0.0
    if resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        rows, diverged_at, seconds = state["rows"], state["diverged_at"], state["seconds"]
    else:
        rows.append(curve_row(problem, optimizer, {}))
    started = time.perf_counter() - seconds
    stats: dict = {}
    while optimizer.iteration < conf["iterations"]:
        if diverged_at is None:
            before = optimizer.state_dict()
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging baseline overflows; caught below
                stats = optimizer.step(problem)
                finite = np.all(np.isfinite(optimizer.mean)) and np.isfinite(problem.distance(optimizer.mean))
            if not finite:
                optimizer.load_state_dict(before)
                diverged_at = before["iteration"]
        if diverged_at is not None:
            optimizer.iteration += 1  # frozen at the last finite state
        done = optimizer.iteration
        if done % conf["curve_every"] == 0 or done == conf["iterations"]:
            rows.append(curve_row(problem, optimizer, stats))
        if checkpoint_every and done % checkpoint_every == 0 and done < conf["iterations"]:
            save_resume(resume_path, optimizer, rows, diverged_at, time.perf_counter() - started)
        if stop_after is not None and done >= stop_after:
            save_resume(resume_path, optimizer, rows, diverged_at, time.perf_counter() - started)
            return {"stopped_at": done}
    seconds = time.perf_counter() - started
    with atomic_path(out_dir / CURVE_FILE) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    with atomic_path(out_dir / FINAL_FILE) as tmp:
        torch.save({"experiment": experiment, "seed": seed, "optimizer": optimizer.state_dict(),
                    "mean": optimizer.mean.copy()}, tmp)
    # Numbers only: the summary is logged as MLflow metrics. diverged_at = −1: the run never diverged.
    summary = {"final_distance": rows[-1]["distance"], "iterations": optimizer.iteration,
               "evaluations": optimizer.evaluations, "diverged_at": -1 if diverged_at is None else diverged_at,
               "seconds": seconds, "dim": problem.dim, "population": conf["population"]}
    write_json(out_dir / SUMMARY_FILE, summary)
    if resume_path.exists():
        resume_path.unlink()
    if progress:
        print(f"{optimizer.name} on {problem.problem} (d={problem.dim}, N={conf['population']}): "
              f"E = {summary['final_distance']:.3e} after {optimizer.iteration} iterations")
    return summary


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
