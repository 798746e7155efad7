"""Episodic meta-learning: sample a meta-batch → adapt → weight → step.

Every meta-learning method runs through ``Run``: the learner gives per-task losses and
meta-gradients, the weighting turns them into one direction, and the outer optimiser steps along
it. ``train`` hands a Run to the one resumable loop (taskbal.loop). Runs are deterministic for a
given seed: the order in which training tasks are visited and every random draw of a weighting
derive from (seed, iteration), and the resume state holds everything else, so a run killed and
resumed ends with the same numbers as one that was never interrupted.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .artifacts import FINAL as FINAL_FILE
from .artifacts import RESUME as RESUME_FILE
from .data import family_module
from .learners import TaskBatch, learner_for
from .loop import fit, seed_everything, step_generator
from .models import build_model
from .options import section_settings
from .stats import group_statistic
from .weighting import TaskGradients, build_weighting
from .weighting.base import Planning

__all__ = ["EVAL_CHUNK", "FINAL_FILE", "RESUME_FILE", "Run", "check_device", "evaluation_chunk", "pick_device",
           "step_generator", "task_order", "train"]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(name: str) -> None:
    """A ``cuda`` device that this machine does not have is an error naming the setting, before any job."""
    if not name.startswith("cuda"):
        return
    index = int(name.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for, but torch sees no CUDA device on this machine "
                         f"(torch {torch.__version__}); use device: auto or cpu")
    if index >= torch.cuda.device_count():
        raise ValueError(f"device: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")


# clip_grad_norm: not in any of the papers, off by default; an option because MAML's meta-gradient can
# explode (Antoniou et al., 2019, "How to train your MAML") and its smoothness grows with the
# meta-gradient's norm, which suggests clipped steps (Fallah et al., 2021).
OUTER_DEFAULTS = {"optimizer": "adam", "clip_grad_norm": None}


def meta_settings(experiment: dict) -> tuple[dict, dict]:
    """The ``outer`` and ``evaluation`` sections of a meta-learning run, checked (errors name the field)."""
    for section in ("model", "learner", "outer", "evaluation"):
        if section not in experiment:
            raise ValueError(f"experiment.{section}: required by the meta-learning runner")
    outer = section_settings(experiment, "outer", "meta-learning", ("lr", "meta_batch", "iterations"), OUTER_DEFAULTS,
                             positive_integers=("meta_batch", "iterations"))
    if outer["optimizer"] != "adam":
        raise ValueError(f"outer.optimizer: only 'adam' is supported, got {outer['optimizer']!r}")
    if isinstance(outer["lr"], bool) or not isinstance(outer["lr"], (int, float)) or not outer["lr"] > 0:
        raise ValueError(f"outer.lr: must be a number > 0, got {outer['lr']!r}")
    clip = outer["clip_grad_norm"]
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise ValueError(f"outer.clip_grad_norm: must be null (no clipping) or a number > 0, got {clip!r}")
    evaluation = section_settings(experiment, "evaluation", "meta-learning", ("curve_every",),
                                  positive_integers=("curve_every",))
    return outer, evaluation


def task_order(seed: int, pool_size: int, needed: int) -> torch.Tensor:
    """Indices of the training tasks in visiting order: passes over the pool, each a fresh
    permutation, so every task is seen once before any is seen twice (SIMOL's 160,000 tasks
    are exactly one pass of 10,000 × 16)."""
    generator = torch.Generator().manual_seed(seed)
    passes = math.ceil(needed / pool_size)
    return torch.cat([torch.randperm(pool_size, generator=generator) for _ in range(passes)])[:needed]


EVAL_CHUNK = 1000  # tasks adapted at once at evaluation, for a family without its own ``eval_chunk``


def evaluation_chunk(learner, tasks) -> int:
    """Tasks adapted at once when evaluating a split, by the training curve and by the evaluation job
    alike: the family's ``eval_chunk`` (default 1,000), rounded down to whole Nash games when the
    learner's penalty plays games of ``game_size`` consecutive tasks, so that no chunk cuts a game in
    two (at least one game per chunk). With ``game_size`` null a game is every task adapted at once, so
    each chunk is one game, in the curve as in eval.csv. Chunks bound memory: the skewed sinusoid's
    5,000 test tasks of 1,000 query points peak at 3.4 GB in one batch and 1.3 GB in chunks of 1,000
    (MLP 40-40), at about the same CPU time."""
    chunk = getattr(tasks, "eval_chunk", EVAL_CHUNK)
    game_size = getattr(getattr(learner, "penalty", None), "game_size", None)
    return chunk if game_size is None else max(game_size, chunk - chunk % game_size)


def group_curve_statistics(losses: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    """The worst group and the std over groups of the test tasks' errors, for a family that groups its
    test tasks (the skewed sinusoid's 490 amplitude bins): Nash-GBML's Figs. 2, 11, 12 plot them along
    training. Computed as the tables compute them from eval.csv (stats.group_statistic), so the curve's
    last point is the table's value for that seed."""
    values, bins = losses.detach().cpu().numpy(), groups.cpu().numpy()
    return {"test_mse_worst_group": group_statistic(values, bins, "worst_group", True),
            "test_mse_std_group": group_statistic(values, bins, "std_group", True)}


class Run:
    """One meta-learning run: model, learner, weighting and optimiser built from a resolved experiment;
    a trainable of taskbal.loop."""

    def __init__(self, experiment: dict, seed: int, split_path: Path, device: torch.device):
        self.experiment, self.seed, self.device = experiment, seed, device
        data = experiment["data"]
        outer, evaluation = meta_settings(experiment)
        seed_everything(seed)  # the loop seeds too; tests and benchmarks build a Run on its own
        self.tasks = family_module(data["family"]).Tasks(split_path)
        self.model = build_model(experiment["model"], self.tasks.io_dims).to(device)
        self.learner = learner_for(experiment, self.model)
        self.num_params = sum(p.numel() for p in self.learner.parameters())
        weighting_options = {k: v for k, v in experiment["weighting"].items() if k != "name"}
        self.weighting = build_weighting(experiment["weighting"]["name"], self.num_params,
                                         self.tasks.feature_dim, seed, **weighting_options)
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=outer["lr"])
        if self.weighting.plans_ahead:
            self.weighting.attach(Planning(self.learner, self.optimizer, self.upcoming_batches))
        self.iterations, self.meta_batch = outer["iterations"], outer["meta_batch"]
        self.clip_grad_norm = outer["clip_grad_norm"]
        self.order = task_order(seed, self.tasks.num_tasks("train"), self.iterations * self.meta_batch)
        self.curve_every = evaluation["curve_every"]
        # A family with its own curve metrics (per-task accuracies of the binary image tasks) evaluates
        # in chunks itself; for the others the whole val/test batches stay on the device, adapted in the
        # evaluation job's chunks (evaluation_chunk: the same Nash games, so the same per-task losses).
        self.curve_hook = getattr(self.tasks, "curve_metrics", None)
        self.eval_batches = {} if self.curve_hook else {
            split: self.tasks.batch(split).to(device) for split in ("val", "test")}
        self.eval_chunk = evaluation_chunk(self.learner, self.tasks)
        self.monitored = self.monitored_windows(device)
        self.iteration = 0
        self.nonfinite_at: int | None = None  # the curve row that found a meta-parameter NaN or infinite

    def monitored_windows(self, device: torch.device) -> dict[str, list[TaskBatch]]:
        """The family's monitored windows (``data.monitor``), whose weights the weighting plans at every curve
        point without training on them (TOW's Figures 4–5); a weighting that plans nothing cannot have them."""
        windows = self.tasks.monitor_windows() if hasattr(self.tasks, "monitor_windows") else {}
        if windows and not hasattr(self.weighting, "probe"):
            raise ValueError(f"data.monitor: weighting {self.experiment['weighting']['name']!r} plans no weights "
                             "for tasks it does not train on; monitored windows need weighting tow")
        return {name: [batch.to(device) for batch in batches] for name, batches in windows.items()}

    def monitored_weights(self) -> dict[str, float]:
        """Per monitored window: the weight planned for its first task (the paper plots "the weight of a single
        task") and the sum of the weights of its first meta-batch."""
        row, x = {}, self.learner.flat_meta_parameters().detach()
        for name, batches in self.monitored.items():
            us = self.weighting.probe(batches, x)
            row[f"monitor_weight_{name}"] = us[0, 0].item()
            row[f"monitor_weight_sum_{name}"] = us[0].sum().item()
        return row

    # -- one outer step -------------------------------------------------------------------------
    def task_gradients(self, batch, iteration: int, indices: torch.Tensor) -> TaskGradients:
        losses, grads = self.learner.meta_gradients(batch)
        task_ids, pool = self.pool_ids(indices)
        return TaskGradients(losses=losses, grads=grads, features=batch.features,
                             params=self.learner.flat_meta_parameters(), iteration=iteration,
                             generator=step_generator(self.seed, iteration),
                             losses_at=lambda flat: self.learner.adapted_query_losses(batch, flat),
                             task_ids=task_ids, num_pool_tasks=pool)

    def weighted_in_one_pass(self, batch, iteration: int, indices: torch.Tensor):
        """Where the learner couples the tasks and the weighting knows the weights before the gradients
        (TR-MAML + a Nash penalty): the direction from one backward pass of the weighted loss, and the tasks
        without rows; (None, None) otherwise."""
        if not self.learner.couples_tasks or self.weighting.needs_gradients_after_step:
            return None, None
        task_ids, pool = self.pool_ids(indices)
        tasks = TaskGradients(losses=None, grads=None, features=batch.features,
                              params=self.learner.flat_meta_parameters(), iteration=iteration,
                              generator=step_generator(self.seed, iteration), task_ids=task_ids, num_pool_tasks=pool)
        reads = self.weighting.reads - {"grads"}
        weights = self.weighting.weights_before_gradients(tasks.only(reads))
        if weights is None:
            return None, None
        tasks.losses, direction = self.learner.weighted_meta_gradient(batch, weights)
        weights = weights.to(direction)
        return tasks, self.weighting.combine_weighted(tasks.only(reads), weights, direction)

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

    def step(self, iteration: int | None = None) -> dict:
        it = self.iteration if iteration is None else iteration
        indices, batch = self.training_batch(it)
        tasks, combined = self.weighted_in_one_pass(batch, it, indices)
        if combined is None:
            tasks = self.task_gradients(batch, it, indices)
            combined = self.weighting.combine(tasks.only(self.weighting.reads))
        self.apply_direction(combined.direction)
        stats = dict(combined.stats)
        if self.weighting.needs_gradients_after_step:
            after = self.task_gradients(batch, it, indices)
            stats.update(self.weighting.after_step(after.only(self.weighting.reads)))
        self.iteration = it + 1
        return {"train_loss": tasks.losses.mean().item(), **stats}

    def apply_direction(self, direction: torch.Tensor) -> None:
        """The outer optimiser's step along ``direction`` (rescaled to norm ``clip_grad_norm`` when longer)."""
        for param, grad in zip(self.learner.parameters(), self.learner.unflatten(direction).values()):
            param.grad = grad.detach().clone()
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.learner.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def adapted_losses(self, batch: TaskBatch) -> torch.Tensor:
        """Query losses [k] of ``batch``'s tasks after adaptation, in chunks of ``eval_chunk`` tasks."""
        return torch.cat([self.learner.adapted_query_losses(part) for part in batch.chunks(self.eval_chunk)])

    def evaluate_mean_mse(self) -> dict:
        if self.curve_hook:
            return self.curve_hook(self.learner, self.device)
        row = {}
        for split, batch in self.eval_batches.items():
            losses = self.adapted_losses(batch)
            row[f"{split}_mse"] = losses.mean().item()
            if split == "test" and hasattr(self.tasks, "groups"):
                row.update(group_curve_statistics(losses, self.tasks.groups("test")))
        return row

    # -- curve, resume state and outputs (the loop's trainable) -----------------------------------
    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        """The means of the step statistics since the last row, then the meta-validation / test errors."""
        row = {"iteration": iteration}
        if window:
            row.update({key: float(np.mean([w[key] for w in window])) for key in window[0]})
        row.update(self.evaluate_mean_mse())
        row.update(self.monitored_weights())
        if self.nonfinite_at is None and not torch.isfinite(self.learner.flat_meta_parameters()).all():
            self.nonfinite_at = iteration
        return row

    @property
    def stopped(self) -> bool:
        """A NaN or infinite meta-parameter stays so under every outer step (p - lr·g, Adam, clipping), so
        every later row would evaluate the same broken model (NaN losses): the loop ends the run at the row
        that found it (``nonfinite_at`` in train.json) instead. Checked at curve rows only, where the row's
        evaluation has synchronised the device anyway."""
        return self.nonfinite_at is not None

    def progress_line(self, row: dict) -> str:
        shown = ("test_mse", "test_accuracy_mean", "val_accuracy")
        return " ".join(f"{key}={row[key]:.3f}" for key in shown if key in row)

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "learner": self.learner.state_dict(),
                "optimizer": self.optimizer.state_dict(), "weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = state["iteration"]
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])

    def final_state(self) -> dict:
        return {"learner": self.learner.state_dict(), "weighting": self.weighting.state_dict()}

    def summary(self, rows: list[dict]) -> dict:
        stopped = {} if self.nonfinite_at is None else {"nonfinite_at": self.nonfinite_at}
        return {"num_params": self.num_params, **stopped,
                **{f"final_{k}": v for k, v in rows[-1].items() if k != "iteration"}}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, stop_after: int | None = None, progress: bool = True) -> dict:
    """Train one run into ``out_dir`` through taskbal.loop; resumes from ``out_dir/resume.pt`` if a killed
    run left one. ``stop_after`` ends the process's work after that many iterations (for tests of resume)
    without writing the final outputs."""
    target = pick_device(device)
    return fit(lambda: Run(experiment, seed, Path(split_path), target), experiment, seed, out_dir,
               checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress, map_location=target)
