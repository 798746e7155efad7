"""Experiment runners: how one run of a table cell is trained and evaluated.

``meta`` is the episodic meta-learning loop (``taskbal.train`` / ``taskbal.evaluate``) that
every meta-learning table uses. Experiments that are not episodic meta-learning — toy
problems, synthetic multi-objective benchmarks, multi-task learning — name their own runner
in ``experiment.runner``. A runner is a module with

    train(experiment, seed, split_path, out_dir, *, device, checkpoint_every, progress) -> dict
        writes out_dir/final.pt, curve.csv and train.json
    evaluate(final_path, split_path, out_dir, *, device) -> dict
        writes out_dir/eval.csv (one row per evaluated unit) and eval.json

so the Snakemake rules and the ``taskbal train | evaluate`` commands are the same for all.
"""
from __future__ import annotations

import importlib

# name → module path (imported on first use, so one runner's imports never slow another's).
RUNNERS: dict[str, str] = {
    "meta": "taskbal.runners.meta",
    "blackbox_moo": "taskbal.runners.blackbox_moo",
    "simol_toy": "taskbal.runners.simol_toy",
    "moblo_synthetic": "taskbal.runners.moblo_synthetic",
    "mtl": "taskbal.runners.mtl",
}


def runner_module(name: str):
    if name not in RUNNERS:
        raise ValueError(f"experiment.runner: unknown runner {name!r}; known: {sorted(RUNNERS)}")
    return importlib.import_module(RUNNERS[name])


def runner_of(experiment: dict):
    return runner_module(experiment.get("runner", "meta"))
