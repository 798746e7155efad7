"""The one training loop: sample a meta-batch → adapt → weight → step.

Every method runs through ``train``: the learner gives per-task losses and
meta-gradients, the weighting turns them into one direction, and the outer
optimiser steps along it. Runs are deterministic for a given seed: the order in
which training tasks are visited and every random draw of a weighting derive from
(seed, iteration), and the resume state holds everything else, so a run killed and
resumed ends with the same numbers as one that was never interrupted.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .data import family_module
from .io import atomic_path, write_json
from .learners import TaskBatch, learner_for
from .models import build_model
from .weighting import TaskGradients, build_weighting

from .artifacts import CURVE as CURVE_FILE
from .artifacts import FINAL as FINAL_FILE
from .artifacts import RESUME as RESUME_FILE
from .artifacts import TRAIN_SUMMARY as SUMMARY_FILE


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def task_order(seed: int, pool_size: int, needed: int) -> torch.Tensor:
    """Indices of the training tasks in visiting order: passes over the pool, each a fresh
    permutation, so every task is seen once before any is seen twice (SIMOL's 160,000 tasks
    are exactly one pass of 10,000 × 16)."""
    generator = torch.Generator().manual_seed(seed)
    passes = math.ceil(needed / pool_size)
    return torch.cat([torch.randperm(pool_size, generator=generator) for _ in range(passes)])[:needed]


def step_generator(seed: int, iteration: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration)


@dataclass
class Curve:
    """Thinned training curve: one row every ``every`` iterations (and at 0 and the end)."""

    every: int
    rows: list[dict] = field(default_factory=list)
    window: list[dict] = field(default_factory=list)

    def add_step(self, values: dict) -> None:
        self.window.append(values)

    def close_window(self, iteration: int, evaluations: dict) -> dict:
        row = {"iteration": iteration}
        if self.window:
            keys = self.window[0].keys()
            row.update({key: float(np.mean([w[key] for w in self.window])) for key in keys})
        row.update(evaluations)
        self.rows.append(row)
        self.window = []
        return row

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class Run:
    """One training run: model, learner, weighting and optimiser built from a resolved experiment."""

    def __init__(self, experiment: dict, seed: int, split_path: Path, device: torch.device):
        self.experiment, self.seed, self.device = experiment, seed, device
        data, outer = experiment["data"], experiment["outer"]
        seed_everything(seed)
        self.tasks = family_module(data["family"]).Tasks(split_path)
        self.model = build_model(experiment["model"], self.tasks.io_dims).to(device)
        self.learner = learner_for(experiment, self.model)
        self.num_params = sum(p.numel() for p in self.learner.parameters())
        weighting_options = {k: v for k, v in experiment["weighting"].items() if k != "name"}
        self.weighting = build_weighting(experiment["weighting"]["name"], self.num_params,
                                         self.tasks.feature_dim, seed, **weighting_options)
        if outer.get("optimizer", "adam") != "adam":
            raise ValueError(f"outer.optimizer: only 'adam' is supported, got {outer['optimizer']!r}")
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=outer["lr"])
        self.iterations, self.meta_batch = outer["iterations"], outer["meta_batch"]
        self.order = task_order(seed, self.tasks.num_tasks("train"), self.iterations * self.meta_batch)
        self.curve = Curve(every=experiment["evaluation"]["curve_every"])
        # A family with its own curve metrics (per-task accuracies of the binary image tasks) evaluates
        # in chunks itself; the others hand over their whole val/test batches once.
        self.curve_hook = getattr(self.tasks, "curve_metrics", None)
        self.eval_batches = {} if self.curve_hook else {
            split: self.tasks.batch(split).to(device) for split in ("val", "test")}
        self.iteration = 0

    # -- one outer step -------------------------------------------------------------------------
    def task_gradients(self, batch, iteration: int, indices: torch.Tensor) -> TaskGradients:
        losses, grads = self.learner.meta_gradients(batch)
        task_ids, pool = self.pool_ids(indices)
        return TaskGradients(losses=losses, grads=grads, features=batch.features,
                             params=self.learner.flat_meta_parameters(), iteration=iteration,
                             generator=step_generator(self.seed, iteration),
                             losses_at=lambda flat: self.learner.adapted_query_losses(batch, flat),
                             task_ids=task_ids, num_pool_tasks=pool, learner=self.learner,
                             upcoming=lambda n: self.upcoming_batches(iteration, n), optimizer=self.optimizer)

    def upcoming_batches(self, iteration: int, n: int) -> list:
        """The training batches of iterations ``iteration`` … ``iteration + n − 1`` (cut at the last one)."""
        stop = min(iteration + n, self.iterations)
        return [self.training_batch(it)[1] for it in range(iteration, stop)]

    def training_batch(self, iteration: int) -> tuple[torch.Tensor, TaskBatch]:
        """The pool indices of iteration ``iteration``'s meta-batch and its TaskBatch on the device."""
        indices = self.order[iteration * self.meta_batch:(iteration + 1) * self.meta_batch]
        return indices, self.tasks.batch("train", indices).to(self.device)

    def pool_ids(self, indices: torch.Tensor) -> tuple[torch.Tensor, int]:
        """What a distribution over training tasks lives on: the task itself, or its group when the
        family groups training tasks (the skewed sinusoid's 100 amplitude bins, where TR-MAML keeps p)."""
        if hasattr(self.tasks, "train_groups"):
            return self.tasks.train_groups[indices], int(self.tasks.num_train_groups)
        return indices, self.tasks.num_tasks("train")

    def step(self) -> dict:
        it = self.iteration
        indices, batch = self.training_batch(it)
        tasks = self.task_gradients(batch, it, indices)
        combined = self.weighting.combine(tasks)
        self.apply_direction(combined.direction)
        stats = dict(combined.stats)
        if self.weighting.needs_gradients_after_step:
            stats.update(self.weighting.after_step(self.task_gradients(batch, it, indices)))
        self.iteration += 1
        return {"train_loss": tasks.losses.mean().item(), **stats}

    def apply_direction(self, direction: torch.Tensor) -> None:
        for param, grad in zip(self.learner.parameters(), self.learner.unflatten(direction).values()):
            param.grad = grad.detach().clone()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate_mean_mse(self) -> dict:
        if self.curve_hook:
            return self.curve_hook(self.learner, self.device)
        return {f"{split}_mse": self.learner.adapted_query_losses(batch).mean().item()
                for split, batch in self.eval_batches.items()}

    # -- resume state -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"iteration": self.iteration, "learner": self.learner.state_dict(),
                "optimizer": self.optimizer.state_dict(), "weighting": self.weighting.state_dict(),
                "curve_rows": self.curve.rows, "curve_window": self.curve.window,
                "experiment": self.experiment, "seed": self.seed}

    def load_state(self, state: dict) -> None:
        if state["experiment"] != self.experiment or state["seed"] != self.seed:
            raise ValueError("resume state belongs to a different experiment or seed; delete it to start over")
        self.iteration = state["iteration"]
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])
        self.curve.rows, self.curve.window = state["curve_rows"], state["curve_window"]


def save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, stop_after: int | None = None, progress: bool = True) -> dict:
    """Train one run into ``out_dir``; resumes from ``out_dir/resume.pt`` if a killed run left one.

    ``stop_after`` ends the process's work after that many iterations (for tests of resume)
    without writing the final outputs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(experiment, seed, Path(split_path), pick_device(device))
    resume_path = out_dir / RESUME_FILE
    if resume_path.exists():
        run.load_state(torch.load(resume_path, map_location=run.device, weights_only=False))
    if run.iteration == 0 and not run.curve.rows:
        run.curve.close_window(0, run.evaluate_mean_mse())
    started, start_iteration = time.perf_counter(), run.iteration
    bar = tqdm(total=run.iterations, initial=run.iteration, desc=f"train seed {seed}", unit="it",
               mininterval=5.0, disable=not progress, dynamic_ncols=False, ascii=True)
    while run.iteration < run.iterations:
        run.curve.add_step(run.step())
        bar.update(1)
        if run.iteration % run.curve.every == 0 or run.iteration == run.iterations:
            row = run.curve.close_window(run.iteration, run.evaluate_mean_mse())
            bar.set_postfix({key: f"{row[key]:.3f}" for key in ("test_mse", "test_accuracy_mean") if key in row})
        if run.iteration % checkpoint_every == 0 and run.iteration < run.iterations:
            save_atomic(run.state(), resume_path)
        if stop_after is not None and run.iteration - start_iteration >= stop_after:
            save_atomic(run.state(), resume_path)
            bar.close()
            return {"stopped_at": run.iteration}
    bar.close()
    seconds = time.perf_counter() - started
    summary = {"iterations": run.iterations, "seconds": seconds,
               "iterations_per_second": (run.iterations - start_iteration) / max(seconds, 1e-9),
               "resumed_from": start_iteration, "num_params": run.num_params,
               **{f"final_{k}": v for k, v in run.curve.rows[-1].items() if k != "iteration"}}
    with atomic_path(out_dir / CURVE_FILE) as tmp:
        run.curve.frame().to_csv(tmp, index=False)
    save_atomic({"learner": run.learner.state_dict(), "weighting": run.weighting.state_dict(),
                 "experiment": experiment, "seed": seed}, out_dir / FINAL_FILE)
    write_json(out_dir / SUMMARY_FILE, summary)
    resume_path.unlink(missing_ok=True)
    return summary
