"""Shared fixtures: small generated task files, repository paths."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    """Environment for subprocesses: the interpreter's bin directory first on PATH (taskbal, snakemake)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="session")
def small_split(tmp_path_factory) -> Path:
    from taskbal.data.sinusoid import write_splits

    path = tmp_path_factory.mktemp("splits") / "sinusoid-5shot.npz"
    write_splits(path, dict(shots=5, query=5, train_tasks=320, val_tasks=20, test_tasks=40, split_seed=7))
    return path


def small_experiment(weighting: dict | None = None, iterations: int = 12) -> dict:
    return {
        "data": {"family": "sinusoid", "shots": 5, "query": 5, "train_tasks": 320, "val_tasks": 20,
                 "test_tasks": 40, "split_seed": 7},
        "model": {"hidden": [16, 16]},
        "learner": {"name": "maml", "inner_steps": 3, "inner_lr": 0.01, "inner_optimizer": "sgd",
                    "first_order": False},
        "weighting": weighting or {"name": "mean"},
        "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 8, "iterations": iterations},
        "evaluation": {"curve_every": 4},
    }
