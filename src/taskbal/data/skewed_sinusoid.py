"""Skewed-amplitude sinusoid: the task-robust protocol of Collins et al. (TR-MAML), used by Nash-GBML §4.1.

A task is y = a·sin(x + b), b ~ U[0, π], x ~ U[−5, 5] (Nash-GBML's phase convention; the TR-MAML
code's ``sin(x − b)`` is the same family). The amplitude range is cut into bins of width 0.01:

- meta-training: 100 bins (the "training tasks" of TR-MAML), bins 0–94 = [0.10 + 0.01·b, 0.11 + 0.01·b]
  covering [0.1, 1.05] and bins 95–99 = [4.95 + 0.01·(b − 95), 4.96 + 0.01·(b − 95)] covering
  [4.95, 5.0]. A training task draws its bin uniformly (with replacement) and its amplitude
  uniformly inside the bin — i.e. the amplitude is uniform on [0.1, 1.05] ∪ [4.95, 5.0], so only 5 %
  of the training tasks have large amplitudes (the skew).
- meta-testing: 490 bins [0.10 + 0.01·b, 0.11 + 0.01·b] covering [0.1, 5.0]; each test task gets a
  bin and an amplitude uniform inside it. Mean, worst bin and std over bins are taken over the bins'
  mean MSEs (``task_table`` has the bin as ``group``).

Sizes follow Nash-GBML App. F / the TR-MAML code: K = ``shots`` support
points; training query = ``query`` fresh points of the same task (default K, as the code's 2K
points); evaluation query = ``eval_query`` fresh points (default 1000); 5,000 test tasks.

Splits are data: the split rule draws every task once — bin, amplitude, phase and the exact inputs
of the support and query sets of the train, val and test splits — and writes them to one ``.npz``
with a JSON sidecar (seed, sizes, SHA-256). Each split has its own random stream, so changing the
size of one split leaves the others unchanged, and the training and test draws are independent.

The training pool and TR-MAML's bins. ``batch("train", idx)`` takes indices into the pool of
``train_tasks`` pre-drawn tasks; the training loop visits the pool in random passes. TR-MAML's task
distribution p lives on the 100 training bins, not on the pool: ``Tasks.train_groups`` (int64
[train_tasks]) maps a pool index to its bin and ``Tasks.num_train_groups`` is 100. A weighting that
keeps a distribution over training tasks therefore needs, per meta-batch, ``train_groups[task_ids]``
and ``num_train_groups`` (``groups(split)`` / ``num_groups(split)`` give the same for any split).

Deliberate choices:
- Training data are a finite pre-drawn pool, where the code draws fresh tasks at every iteration.
  With ``train_tasks = iterations × meta_batch`` (the paper scale's 70,000 × 25) every visited task
  is new, which is the code's sampling exactly; a smaller pool repeats tasks.
- ``eval_assignment``: ``random`` (default; the code: each test task's bin is uniform over the 490,
  so bins get ≈ 10 tasks each and a few may get none) or ``balanced`` (bins get ⌊n/490⌋ or ⌈n/490⌉
  tasks, in random order; with n ≥ 490 every bin is covered — less noise in the worst bin).
- Validation tasks (not in the paper) are drawn like the test tasks, from their own stream.
- The code's per-bin average divides by (count + 1); this family only assigns bins — averages are
  plain means, computed downstream.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import write_arrays
from .checks import data_settings
from .sinusoid import SinusoidTasks

SPLITS = ("train", "val", "test")
BIN_WIDTH = 0.01
PHASE_RANGE = (0.0, np.pi)
INPUT_RANGE = (-5.0, 5.0)
ASSIGNMENTS = ("random", "balanced")

REQUIRED_KEYS = ("shots", "query", "train_tasks", "val_tasks", "test_tasks", "split_seed")
DEFAULTS = {"eval_query": 1000, "eval_assignment": "random"}
INTEGERS = {"shots": 1, "query": 1, "eval_query": 1, "train_tasks": 1, "val_tasks": 1, "test_tasks": 1,
            "split_seed": 0}


def training_bin_edges() -> np.ndarray:
    """[100, 2] amplitude intervals of the training bins (in hundredths, then scaled: exact edges)."""
    hundredths = np.concatenate([10 + np.arange(95), 495 + np.arange(5)])
    return np.stack([hundredths, hundredths + 1], axis=1) / 100.0


def evaluation_bin_edges() -> np.ndarray:
    """[490, 2] amplitude intervals of the evaluation bins, covering [0.1, 5.0]."""
    hundredths = 10 + np.arange(490)
    return np.stack([hundredths, hundredths + 1], axis=1) / 100.0


def bin_edges(split: str) -> np.ndarray:
    return training_bin_edges() if split == "train" else evaluation_bin_edges()


def assign_bins(rng: np.random.Generator, num_tasks: int, num_bins: int, assignment: str) -> np.ndarray:
    if assignment == "random":
        return rng.integers(0, num_bins, size=num_tasks)
    return rng.permutation(np.arange(num_tasks) % num_bins)


def generate_split(rng: np.random.Generator, edges: np.ndarray, num_tasks: int, shots: int, query: int,
                   assignment: str) -> dict[str, np.ndarray]:
    bins = assign_bins(rng, num_tasks, len(edges), assignment)
    amplitude = edges[bins, 0] + BIN_WIDTH * rng.uniform(size=num_tasks)
    return {
        "bin": bins.astype(np.int16),
        "amplitude": amplitude.astype(np.float32),
        "phase": rng.uniform(*PHASE_RANGE, size=num_tasks).astype(np.float32),
        "x_support": rng.uniform(*INPUT_RANGE, size=(num_tasks, shots)).astype(np.float32),
        "x_query": rng.uniform(*INPUT_RANGE, size=(num_tasks, query)).astype(np.float32),
    }


def check_data(data: dict) -> dict:
    """The ``data`` section with defaults filled in; a bad value names its ``data.<field>``."""
    settings = data_settings(data, "skewed_sinusoid", REQUIRED_KEYS, DEFAULTS, INTEGERS, none_is_default=True)
    if settings["eval_assignment"] not in ASSIGNMENTS:
        raise ValueError(f"data.eval_assignment: expected one of {list(ASSIGNMENTS)}, "
                         f"got {settings['eval_assignment']!r}")
    return settings


def write_splits(path: Path | str, data: dict) -> dict:
    """Draw the three splits of the experiment's ``data`` section and write them atomically.

    Returns the sidecar metadata (family, seed, sizes, query sizes, bin counts, SHA-256).
    """
    settings = check_data(data)
    path = Path(path)
    sizes = {split: settings[f"{split}_tasks"] for split in SPLITS}
    queries = {"train": settings["query"], "val": settings["eval_query"], "test": settings["eval_query"]}
    streams = np.random.SeedSequence(settings["split_seed"]).spawn(len(SPLITS))
    arrays = {"train_bin_edges": training_bin_edges(), "eval_bin_edges": evaluation_bin_edges()}
    for split, stream in zip(SPLITS, streams):
        # The training bins are always drawn uniformly with replacement (TR-MAML's np.random.choice(100)).
        assignment = "random" if split == "train" else settings["eval_assignment"]
        drawn = generate_split(np.random.default_rng(stream), bin_edges(split), sizes[split],
                               settings["shots"], queries[split], assignment)
        arrays.update({f"{split}_{key}": value for key, value in drawn.items()})
    meta = {"family": "skewed_sinusoid", "seed": settings["split_seed"], "shots": settings["shots"],
            "query": queries, "sizes": sizes, "eval_assignment": settings["eval_assignment"],
            "bins": {"train": len(training_bin_edges()), "val": len(evaluation_bin_edges()),
                     "test": len(evaluation_bin_edges())},
            "task": "y = a sin(x + b), b ~ U[0, pi], x ~ U[-5, 5]; a uniform in a bin of width 0.01: "
                    "train bins cover [0.1, 1.05] u [4.95, 5.0] (100), val/test bins cover [0.1, 5.0] (490)"}
    return write_arrays(path, arrays, meta)


class SkewedSinusoidTasks(SinusoidTasks):
    """The sinusoid reader (same arrays, same TaskBatch) plus each task's amplitude bin."""

    def __init__(self, path: Path | str):
        super().__init__(path)
        self.train_groups = self.groups("train")
        self.num_train_groups = self.num_groups("train")

    def groups(self, split: str) -> torch.Tensor:
        """Bin index of every task of ``split`` (int64; train: 0–99, val/test: 0–489)."""
        return self.arrays[f"{split}_bin"].long()

    def num_groups(self, split: str) -> int:
        return self.arrays["train_bin_edges" if split == "train" else "eval_bin_edges"].shape[0]

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        """Per-task parameters, saved next to per-task results; ``group`` is the amplitude bin."""
        edges = self.arrays["train_bin_edges" if split == "train" else "eval_bin_edges"].numpy()
        bins = self.groups(split).numpy()
        return {"amplitude": self.arrays[f"{split}_amplitude"].numpy(),
                "phase": self.arrays[f"{split}_phase"].numpy(),
                "group": bins, "bin_low": edges[bins, 0], "bin_high": edges[bins, 1]}


Tasks = SkewedSinusoidTasks  # the name every family module exports
