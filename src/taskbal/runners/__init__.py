"""Experiment runners: how one run of a table cell is trained and evaluated.

``meta`` is episodic meta-learning (``taskbal.train`` / ``taskbal.evaluate``), which every
meta-learning table uses. Experiments that are not episodic meta-learning — toy problems, synthetic
multi-objective benchmarks, multi-task learning — name their own runner in ``experiment.runner``.
A runner is a module with

    train(experiment, seed, split_path, out_dir, *, device, checkpoint_every, stop_after, progress) -> dict
        builds its trainable and hands it to the one resumable loop (taskbal.loop), which writes
        out_dir/final.pt, curve.csv and train.json and resumes from resume.pt
    evaluate(final_path, split_path, out_dir, *, device) -> dict
        writes out_dir/eval.csv (one row per evaluated unit) and eval.json
    check_experiment(experiment)   (optional) names and options, before anything runs

so the Snakemake rules and the ``taskbal train | evaluate`` commands are the same for all, and the
file names are taskbal.artifacts'.
"""
from __future__ import annotations

import importlib
import math

# name → module path (imported on first use, so one runner's imports never slow another's).
RUNNERS: dict[str, str] = {
    "meta": "taskbal.runners.meta",
    "blackbox_moo": "taskbal.runners.blackbox_moo",
    "simol_toy": "taskbal.runners.simol_toy",
    "moblo_synthetic": "taskbal.runners.moblo_synthetic",
    "mtl": "taskbal.runners.mtl",
    "meta_rl": "taskbal.runners.meta_rl",
    "prompt_tuning": "taskbal.runners.prompt_tuning",
}


def runner_module(name: str):
    if name not in RUNNERS:
        raise ValueError(f"experiment.runner: unknown runner {name!r}; known: {sorted(RUNNERS)}")
    return importlib.import_module(RUNNERS[name])


def runner_of(experiment: dict):
    return runner_module(experiment.get("runner", "meta"))


def check_finite(value, field: str = "") -> None:
    """No option may be infinite or NaN (YAML's ``.inf`` and ``.nan``): a learning rate of ``.inf``
    trains to NaN and would be reported as a result."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_finite(item, f"{field}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{field}: must be a finite number, got {value}")


def check_experiment(experiment: dict) -> None:
    """A resolved experiment against the code, before anything runs: its task family's ``check_data``
    and its runner's ``check_experiment`` (which families, learners, weightings and runners exist, which
    options each takes, and the values the code defines). The JSON schema checks only the shape of an
    experiment; every option's values are checked in one place, by the code that uses it."""
    from ..data import family_module
    from ..divergence import rule_of

    check_finite(experiment)
    rule_of(experiment)
    runner = runner_of(experiment)
    family_module(experiment["data"]["family"]).check_data(experiment["data"])
    runner.check_experiment(experiment)
