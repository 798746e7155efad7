"""Runner for the thesis' synthetic MOBLO problem (Ye 2024, Appendix A.1.4, problem (A.32), Figure A.1).

One run = one method (``weighting.name``: ``moml`` or ``forum``, options = the rest of the
``weighting`` section, see taskbal/mtl/moml.py and forum.py; the thesis' MoCo is ``moml`` with
``combiner: moco``) from one initialisation, for ``problem.iterations`` UL iterations.

Experiment section ``problem`` (defaults in brackets):
    alpha0       α₀, the UL start (the figure: 0 or 2)                          [required]
    omega0       ω₀ = [ω₁, ω₂] (the figure: (0, 3) or (3, 3))                    [required]
    iterations   K, UL iterations (the thesis does not state it)                 [required]
    curve_every  iterations between rows of curve.csv                           [1]

ω₀ is FORUM's initial LL block of z₀ = (α₀, ω₀) and MOML's LL start (with ``lower_init: fixed``
every iteration restarts from it, the literal Algorithm 1; ``warm`` only starts there).

Outputs: curve.csv, one row per recorded iteration k with the point z_k = (α_k, ω_k) the method
holds (FORUM: its iterate; MOML/MoCo: α_k with the LL solution ω_T(α_k) it computes), its
objectives F1.., ``distance`` = E = dist(z_k, P) (the figure's optimality gap), ``constraint`` =
q(z_k) = f(z_k) − f*(α_k) with the exact value function f* = 0, and the step's statistics
(weights, and ``stationarity``: FORUM's K(z_k) = ‖Σ λ̃_i ∇F_i + ν ∇q‖² of Thm 3.7; MOML/MoCo's
squared norm of the combined hypergradient); train.json; final.pt. evaluate writes eval.csv (one row
per objective: its value at z_K) and eval.json (distance, log10_distance, constraint, stationarity of
the last step, the objectives and z_K).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch

from ..artifacts import EVAL as EVAL_FILE
from ..artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..data.moblo_synthetic import Tasks, check_data
from ..io import atomic_path, write_json
from ..loop import fit
from ..mtl.forum import FORUM
from ..mtl.moml import MOML, check_combiner
from ..options import check_options, section_settings

METHODS = {"moml": MOML, "forum": FORUM}
REQUIRED = ("alpha0", "omega0", "iterations")
DEFAULTS = {"curve_every": 1}
LOG_FLOOR = 1e-300


def settings(experiment: dict) -> dict:
    conf = section_settings(experiment, "problem", "moblo_synthetic", REQUIRED, DEFAULTS,
                            positive_integers=("iterations", "curve_every"))
    if not isinstance(conf["alpha0"], (int, float)) or isinstance(conf["alpha0"], bool):
        raise ValueError(f"problem.alpha0: expected a number, got {conf['alpha0']!r}")
    omega0 = conf["omega0"]
    if not (isinstance(omega0, (list, tuple)) and len(omega0) == 2
            and all(isinstance(v, (int, float)) for v in omega0)):
        raise ValueError(f"problem.omega0: expected two numbers [ω1, ω2], got {omega0!r}")
    return conf


def method_and_options(experiment: dict) -> tuple[type, dict]:
    options = dict(experiment["weighting"])
    name = options.pop("name")
    if name not in METHODS:
        raise ValueError(f"weighting.name: the moblo_synthetic runner runs {sorted(METHODS)}, got {name!r}")
    return METHODS[name], options


def check_experiment(experiment: dict) -> None:
    """Called by taskbal.runners.check_experiment before anything runs."""
    check_data(experiment["data"])
    settings(experiment)
    cls, options = method_and_options(experiment)
    check_options("weighting", cls, options, skip=4)  # problem, alpha, omega, seed come from the runner
    if cls is MOML:
        check_combiner(options.get("combiner", "mgda"), options.get("combiner_options"))


def build_method(experiment: dict, seed: int, problem: Tasks):
    conf = settings(experiment)
    cls, options = method_and_options(experiment)
    alpha0 = torch.tensor([float(conf["alpha0"])], dtype=torch.float64)
    omega0 = torch.tensor([float(v) for v in conf["omega0"]], dtype=torch.float64)
    return cls(problem, alpha0, omega0, seed, **options)


def describe_point(problem: Tasks, alpha: torch.Tensor, omega: torch.Tensor) -> dict[str, float]:
    values = problem.upper_objectives(alpha, omega).tolist()
    row = {"alpha": float(alpha[0]), "omega1": float(omega[0]), "omega2": float(omega[1]),
           "distance": problem.distance(alpha, omega), "constraint": problem.constraint(alpha, omega)}
    row.update({name: float(v) for name, v in zip(problem.objective_names, values)})
    return row


class MOBLORun:
    """MOML or FORUM from one start, a trainable of taskbal.loop. A step's statistics (the stationarity
    K(z_k) of the hypergradient, …) describe the point z_k it starts from, so they join row k."""

    stats_at_row_point = True

    def __init__(self, experiment: dict, seed: int, split_path: Path):
        self.conf, self.name = settings(experiment), experiment["weighting"]["name"]
        self.iterations, self.curve_every = self.conf["iterations"], self.conf["curve_every"]
        self.problem = Tasks(split_path)
        self.method = build_method(experiment, seed, self.problem)
        self.last_stats: dict = {}

    def step(self, iteration: int) -> dict:
        self.last_stats = self.method.step(iteration)
        return self.last_stats

    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        return {"iteration": iteration, **describe_point(self.problem, *self.method.point(iteration))}

    def state_dict(self) -> dict:
        return {"method": self.method.state_dict(), "last_stats": self.last_stats}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.last_stats = state["last_stats"]

    def final_state(self) -> dict:
        alpha, omega = self.method.point(self.iterations)
        return {"alpha": alpha, "omega": omega, "method": self.method.state_dict(), "last_stats": self.last_stats}

    def final_line(self, summary: dict) -> str:
        return (f"{self.name} from α0={self.conf['alpha0']}, ω0={self.conf['omega0']}: "
                f"E = {summary['final_distance']:.3g}, q = {summary['final_constraint']:.3g} "
                f"after {self.iterations} iterations")

    def summary(self, rows: list[dict]) -> dict:
        return {"final_distance": rows[-1]["distance"], "final_constraint": rows[-1]["constraint"]}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, stop_after: int | None = None, progress: bool = True) -> dict:
    """Run one method from one start through taskbal.loop; ``device`` is unused (the CPU)."""
    check_experiment(experiment)
    return fit(lambda: MOBLORun(experiment, seed, Path(split_path)), experiment, seed, out_dir,
                  checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress)


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    final = torch.load(final_path, map_location="cpu", weights_only=False)
    problem = Tasks(split_path)
    point = describe_point(problem, final["alpha"], final["omega"])
    out_dir = Path(out_dir)
    frame = pd.DataFrame({"objective": list(problem.objective_names),
                          "value": [point[name] for name in problem.objective_names]})
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        frame.to_csv(tmp, index=False)
    stationarity = float(final["last_stats"].get("stationarity", float("nan")))
    summary = {**point, "log10_distance": math.log10(max(point["distance"], LOG_FLOOR)),
               "log10_constraint": math.log10(max(point["constraint"], LOG_FLOOR)),
               "stationarity": stationarity}
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
