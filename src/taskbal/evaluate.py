"""Meta-test evaluation: adapt to every meta-test task and save its error.

The per-task table (one line per meta-test task, with the task's parameters) is the
input of every summary: overall mean, worst-10 %, confidence intervals and paired
tests are computed from it by ``stats`` and ``tables``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .artifacts import EVAL as EVAL_FILE
from .artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from .data import family_module
from .io import atomic_path, write_json
from .learners import learner_for
from .models import build_model
from .stats import summarise
from .train import evaluation_chunk, pick_device


def load_trained(final_path: Path, split_path: Path, device: torch.device):
    checkpoint = torch.load(final_path, map_location=device, weights_only=False)
    experiment = checkpoint["experiment"]
    tasks = family_module(experiment["data"]["family"]).Tasks(split_path)
    model = build_model(experiment["model"], tasks.io_dims).to(device)
    learner = learner_for(experiment, model)
    try:
        learner.load_state_dict(checkpoint["learner"])
    except RuntimeError as error:  # another split's tasks (evaluate_on) of another shape
        raise ValueError(f"{split_path}: its tasks (inputs, outputs: {tasks.io_dims}) do not fit the model trained "
                         f"in {final_path}: {str(error).splitlines()[0]}") from None
    return checkpoint, tasks, learner


def per_task_metrics(learner, tasks, split: str, device: torch.device,
                     chunk: int | None = None) -> dict[str, np.ndarray]:
    """Post-adaptation metrics (loss, and mse or accuracy) of every task of ``split``, in chunks of
    ``chunk`` tasks (default: ``evaluation_chunk``, the training curve's chunks)."""
    chunk = evaluation_chunk(learner, tasks) if chunk is None else chunk
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, tasks.num_tasks(split), chunk):
        indices = torch.arange(start, min(start + chunk, tasks.num_tasks(split)))
        for name, values in learner.evaluate_tasks(tasks.batch(split, indices).to(device)).items():
            parts.setdefault(name, []).append(values.detach().cpu().numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    out_dir = Path(out_dir)
    device_ = pick_device(device)
    checkpoint, tasks, learner = load_trained(Path(final_path), Path(split_path), device_)
    metrics = per_task_metrics(learner, tasks, "test", device_)
    count = len(next(iter(metrics.values())))
    frame = pd.DataFrame({"task": np.arange(count), **metrics, **tasks.task_table("test")})
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        frame.to_csv(tmp, index=False)
    summary = {"test_tasks": count, "seed": checkpoint["seed"]}
    for name, values in metrics.items():
        lower = name != "accuracy"
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_worst10"] = summarise({0: values}, "worst10", lower).mean
    if hasattr(tasks, "groups"):  # tasks grouped (amplitude bins, the binary image tasks): per-group means
        groups = tasks.groups("test").numpy()
        for name, values in metrics.items():
            means = pd.Series(values).groupby(groups).mean()
            summary[f"{name}_group_mean"] = float(means.mean())
            summary[f"{name}_worst_group"] = float(means.min() if name == "accuracy" else means.max())
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
