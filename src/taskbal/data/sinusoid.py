"""Few-shot sinusoid regression (SIMOL §5.1, after Finn et al., 2017).

A task is y = a·sin(x + b) with a ~ U[0.1, 5], b ~ U[0, π] and inputs x ~ U[-5, 5]
(the paper's phase convention ``x + b``; torchmeta uses ``x - b``). Each task has
``shots`` support points and ``query`` query points; the default query size equals
``shots`` (learn2learn's ``maml_sine``: 2·shots samples split into support and query),
which the paper does not state.

The split rule draws every task once — amplitude, phase and the exact inputs of the
support and query sets for the train, validation and test splits — and writes them
to one ``.npz`` file with a JSON sidecar holding the seed, the sizes and the file's
SHA-256. Training and evaluation only read that file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import verified_sidecar, write_arrays
from ..learners import TaskBatch
from .checks import data_settings

SPLITS = ("train", "val", "test")
AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, np.pi)
INPUT_RANGE = (-5.0, 5.0)


def generate_split(rng: np.random.Generator, num_tasks: int, shots: int, query: int) -> dict[str, np.ndarray]:
    return {
        "amplitude": rng.uniform(*AMPLITUDE_RANGE, size=num_tasks),
        "phase": rng.uniform(*PHASE_RANGE, size=num_tasks),
        "x_support": rng.uniform(*INPUT_RANGE, size=(num_tasks, shots)),
        "x_query": rng.uniform(*INPUT_RANGE, size=(num_tasks, query)),
    }


REQUIRED_KEYS = ("shots", "query", "train_tasks", "val_tasks", "test_tasks", "split_seed")
INTEGERS = {"shots": 1, "query": 1, "train_tasks": 1, "val_tasks": 1, "test_tasks": 1, "split_seed": 0}


def check_data(data: dict) -> dict:
    """The ``data`` section without ``family``; a bad value names its ``data.<field>``."""
    return data_settings(data, "sinusoid", REQUIRED_KEYS, integers=INTEGERS)


def write_splits(path: Path | str, data: dict) -> dict:
    """Draw the three splits of the experiment's ``data`` section and write them atomically.

    ``data`` holds shots, query, train_tasks, val_tasks, test_tasks and split_seed (the
    experiment's ``data`` section); returns the sidecar metadata.
    """
    data = check_data(data)
    shots, query, seed = data["shots"], data["query"], data["split_seed"]
    path = Path(path)
    sizes = {"train": data["train_tasks"], "val": data["val_tasks"], "test": data["test_tasks"]}
    # One independent stream per split: changing the size of one split leaves the others unchanged.
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    arrays = {}
    for name, stream in zip(SPLITS, streams):
        for key, value in generate_split(np.random.default_rng(stream), sizes[name], shots, query).items():
            arrays[f"{name}_{key}"] = value.astype(np.float32)
    meta = {"family": "sinusoid", "seed": seed, "shots": shots, "query": query, "sizes": sizes,
            "task": "y = a sin(x + b), a ~ U[0.1, 5], b ~ U[0, pi], x ~ U[-5, 5]"}
    return write_arrays(path, arrays, meta)


class SinusoidTasks:
    """Read-only view of a split file; hands out TaskBatch objects by task index."""

    io_dims = (1, 1)

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "split")
        with np.load(path) as data:
            self.arrays = {key: torch.from_numpy(data[key]) for key in data.files}
        self.shots = self.meta["shots"]
        self.feature_dim = 2 * self.shots

    def num_tasks(self, split: str) -> int:
        return self.arrays[f"{split}_amplitude"].shape[0]

    def batch(self, split: str, indices: torch.Tensor | None = None) -> TaskBatch:
        """Tasks ``indices`` of ``split`` (all of them by default) as one TaskBatch."""
        def pick(key):
            values = self.arrays[f"{split}_{key}"]
            return values if indices is None else values[indices]

        amplitude, phase = pick("amplitude")[:, None, None], pick("phase")[:, None, None]
        support_x, query_x = pick("x_support")[..., None], pick("x_query")[..., None]
        support_y = amplitude * torch.sin(support_x + phase)
        query_y = amplitude * torch.sin(query_x + phase)
        # SIMOL's re-weighting network sees each task through its support set (x_1, y_1, ..., x_K, y_K).
        features = torch.cat([support_x, support_y], dim=-1).flatten(1)
        return TaskBatch(support_x, support_y, query_x, query_y, features)

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        """Per-task parameters, saved next to per-task results."""
        return {"amplitude": self.arrays[f"{split}_amplitude"].numpy(),
                "phase": self.arrays[f"{split}_phase"].numpy()}


Tasks = SinusoidTasks  # the name every family module exports
