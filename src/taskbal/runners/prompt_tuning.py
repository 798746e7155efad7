"""Runner for black-box multi-task prompt tuning of CLIP (thesis Ye 2024, §4.6.2, Table 4.1).

One run = one black-box optimiser (``weighting.name``: asmg, asmg_ew, es, bes, cmaes_pycma, mmes, with
its options; or ``zero_shot``, CLIP with the handcrafted prompt and nothing to optimise) searching the
prompt vector v ∈ R^d of taskbal/blackbox/prompt_tuning.py on the tasks of an ``image_domains`` split
(Office-31 / Office-Home, one task per domain). Experiment sections (defaults in brackets):

    clip:    model [RN50-quickgelu], weights (an OpenCLIP checkpoint file; null: random, which the
             table page says) [null],
             tokens (prompt length) [4], dim (d) [required], batch_size (per task) [64],
             architecture (overrides of OpenCLIP's model config, for a small test model) [null],
             eval_split [test]
    problem: population (N) [required], iterations [required], curve_every [10],
             init_sigma (Σ₀ = init_sigma² I) [1]

μ₀ = 0 for every method (thesis). Each iteration draws one mini-batch per task (taskbal/blackbox/
prompt_tuning.py: one permutation per epoch), and every population member of that iteration is scored on
those batches. curve.csv: iteration, evaluations, F_<task> (the objectives at μ_t on that iteration's
batches), the optimiser's scalars, and val_accuracy_<task> / val_mean_accuracy of μ_t. evaluate →
eval.csv, one row per task of ``clip.eval_split`` (test) with its accuracy (%) at μ_T; eval.json:
mean_accuracy and accuracy_<task>.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import EVAL as EVAL_FILE
from ..artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..blackbox import OPTIMIZERS, build_optimizer
from ..io import atomic_path, write_json
from ..loop import fit
from ..options import check_options, section_settings
from ..train import pick_device

ZERO_SHOT = "zero_shot"
CLIP_DEFAULTS = {"model": "RN50-quickgelu", "weights": None, "tokens": 4, "batch_size": 64, "architecture": None,
                 "eval_split": "test"}
PROBLEM_DEFAULTS = {"curve_every": 10, "init_sigma": 1.0}


def clip_settings(experiment: dict) -> dict:
    conf = section_settings(experiment, "clip", "prompt_tuning", ("dim",), CLIP_DEFAULTS,
                            positive_integers=("tokens", "dim", "batch_size"))
    if conf["weights"] is not None and not isinstance(conf["weights"], str):
        raise ValueError(f"clip.weights: a checkpoint file or null, got {conf['weights']!r}")
    architecture = conf["architecture"]
    if architecture is not None and (not isinstance(architecture, dict)
                                     or set(architecture) - {"embed_dim", "vision_cfg", "text_cfg"}):
        raise ValueError(f"clip.architecture: overrides of OpenCLIP's model config (embed_dim, vision_cfg, "
                         f"text_cfg) or null, got {architecture!r}")
    return conf


def problem_settings(experiment: dict) -> dict:
    conf = section_settings(experiment, "problem", "prompt_tuning", ("population", "iterations"), PROBLEM_DEFAULTS,
                            positive_integers=("population", "iterations", "curve_every"))
    if conf["population"] < 2:
        raise ValueError(f"problem.population: must be >= 2, got {conf['population']}")
    if not conf["init_sigma"] > 0:
        raise ValueError(f"problem.init_sigma: must be > 0, got {conf['init_sigma']}")
    return conf


def optimizer_options(experiment: dict) -> tuple[str, dict]:
    options = dict(experiment["weighting"])
    return options.pop("name"), options


def check_experiment(experiment: dict) -> None:
    """Called by taskbal.runners.check_experiment before anything runs."""
    if experiment["data"]["family"] != "image_domains":
        raise ValueError(f"data.family: the prompt_tuning runner reads an image_domains split, got "
                         f"{experiment['data']['family']!r}")
    clip_settings(experiment)
    problem_settings(experiment)
    name, options = optimizer_options(experiment)
    if name == ZERO_SHOT:
        if options:
            raise ValueError(f"weighting.{sorted(options)[0]}: zero_shot takes no options")
        return
    if name not in OPTIMIZERS:
        raise ValueError(f"weighting.name: unknown black-box optimiser {name!r}; known: "
                         f"{sorted(OPTIMIZERS) + [ZERO_SHOT]}")
    check_options("weighting", OPTIMIZERS[name], options, skip=5)


def build_problem(experiment: dict, seed: int, split_path: Path, device: torch.device):
    from ..blackbox.prompt_tuning import PromptTuning
    from ..data import family_module

    conf = clip_settings(experiment)
    tasks = family_module(experiment["data"]["family"]).Tasks(split_path)
    # A's draw depends on the seed: each run is one draw of the thesis' random projection.
    return conf, PromptTuning(tasks, model=conf["model"], weights=conf["weights"], tokens=conf["tokens"],
                              dim=conf["dim"], batch_size=conf["batch_size"], seed=seed,
                              architecture=conf["architecture"], device=device)


class PromptTuningRun:
    """One optimiser searching the prompt vector, a trainable of taskbal.loop."""

    def __init__(self, experiment: dict, seed: int, split_path: Path, device: torch.device):
        self.clip_conf, self.problem = build_problem(experiment, seed, split_path, device)
        self.conf = problem_settings(experiment)
        self.iterations, self.curve_every = self.conf["iterations"], self.conf["curve_every"]
        self.name, options = optimizer_options(experiment)
        self.optimizer = None
        if self.name != ZERO_SHOT:
            self.optimizer = build_optimizer(self.name, self.clip_conf["dim"], self.problem.num_objectives,
                                             self.conf["population"], np.zeros(self.clip_conf["dim"]),
                                             np.random.default_rng([seed, 1]), init_sigma=self.conf["init_sigma"],
                                             **options)

    def step(self, iteration: int) -> dict:
        if self.optimizer is None:
            return {}
        return self.optimizer.step(lambda points: self.problem.objectives(points, iteration))

    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        """The objectives at μ_t on the last iteration's batches, and the validation accuracy of μ_t (what a
        grid search selects on: BES's step in Table 4.1)."""
        row = {"iteration": iteration}
        mean = None if self.optimizer is None else self.optimizer.mean
        if mean is not None:
            values = self.problem.objectives(mean[None], max(iteration - 1, 0))[0]
            row.update(evaluations=self.optimizer.evaluations,
                       **{f"F_{name}": float(v) for name, v in zip(self.problem.names, values)})
            row.update(window[-1] if window else {})
        accuracies = self.problem.accuracies(mean, "val")
        row.update({f"val_accuracy_{name}": a for name, a in zip(self.problem.names, accuracies)})
        row["val_mean_accuracy"] = float(np.mean(accuracies))
        return row

    def progress_line(self, row: dict) -> str:
        return " ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("F_") or k == "val_mean_accuracy")

    def state_dict(self) -> dict:
        return {"optimizer": None if self.optimizer is None else self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def final_state(self) -> dict:
        return {"mean": None if self.optimizer is None else self.optimizer.mean.copy(),
                "evaluations": 0 if self.optimizer is None else self.optimizer.evaluations}

    def summary(self, rows: list[dict]) -> dict:
        weights = self.clip_conf["weights"]
        return {"evaluations": 0 if self.optimizer is None else self.optimizer.evaluations,
                "pretrained_weights": weights or "none: random initialisation, not CLIP's pretrained weights"}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, progress: bool = True, stop_after: int | None = None) -> dict:
    check_experiment(experiment)
    where = pick_device(device)
    return fit(lambda: PromptTuningRun(experiment, seed, Path(split_path), where), experiment, seed, out_dir,
               checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress, map_location=where)


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    final = torch.load(final_path, map_location="cpu", weights_only=False)
    experiment = final["experiment"]
    where = pick_device(device)
    conf, problem = build_problem(experiment, int(final["seed"]), Path(split_path), where)
    mean = final["mean"]
    accuracies = problem.accuracies(None if mean is None else np.asarray(mean), conf["eval_split"])
    out_dir = Path(out_dir)
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        pd.DataFrame({"task": problem.names, "accuracy": accuracies}).to_csv(tmp, index=False)
    summary = {"mean_accuracy": float(np.mean(accuracies)), "evaluations": int(final["evaluations"]),
               **{f"accuracy_{name}": value for name, value in zip(problem.names, accuracies)}}
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
