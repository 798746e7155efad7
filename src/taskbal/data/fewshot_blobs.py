"""Few-shot Gaussian-blob classification: an N-way K-shot family that needs no downloaded data.

A task has ``ways`` classes in R^``dim``. Its class means are drawn as μ_c ~ N(0, s² I) with a
per-task spread s ~ U[``spread``] (the task's difficulty: small s = overlapping classes), and each
example of class c is x = μ_c + ε, ε ~ N(0, I). The support set has ``shots`` examples per class
and the query set ``query`` per class, ordered by class (labels 0 … ways−1, each repeated); the
learners never rely on the order. It exercises the classification learners (ProtoNet, MAML with
cross-entropy) and the weightings that look at a task (SIMOL's re-weighting network) on a CPU in
seconds; it is not a table of any paper.

``features`` (what SIMOL's re-weighting network sees of a task): the task's support set, class by
class, flattened (ways·shots·dim numbers). SIMOL only says the network "uses all mini-batch
instances as input"; for classification we read that as the support images with their labels;
the labels are implicit in the class-by-class order, so they are not appended.

``io_dims`` = (dim, ways): an MLP embedding built from it outputs ``ways`` numbers (ProtoNet uses
the whole MLP as the embedding; MAML uses the outputs as logits).

Splits are data: every task of the train, val and test splits (spread, means and the exact support
and query examples) is drawn once into one ``.npz`` with a JSON sidecar (seed, sizes, SHA-256), one
random stream per split. ``task_table`` gives each task's spread and the smallest distance between
two of its class means.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import verified_sidecar, write_arrays
from ..learners import TaskBatch
from .checks import data_settings

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("ways", "shots", "query", "dim", "train_tasks", "val_tasks", "test_tasks", "split_seed")
DEFAULTS = {"spread": [0.3, 2.0]}
INTEGERS = {key: 0 if key == "split_seed" else (2 if key == "ways" else 1) for key in REQUIRED_KEYS}


def check_data(data: dict) -> dict:
    settings = data_settings(data, "fewshot_blobs", REQUIRED_KEYS, DEFAULTS, INTEGERS)
    spread = settings["spread"]
    if (not isinstance(spread, (list, tuple)) or len(spread) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spread)
            or not 0 < spread[0] <= spread[1]):
        raise ValueError(f"data.spread: expected [low, high] with 0 < low <= high, got {spread!r}")
    return settings


def generate_split(rng: np.random.Generator, num_tasks: int, ways: int, shots: int, query: int, dim: int,
                   spread: tuple[float, float]) -> dict[str, np.ndarray]:
    scale = rng.uniform(spread[0], spread[1], size=num_tasks)
    means = rng.standard_normal((num_tasks, ways, dim)) * scale[:, None, None]
    support = means[:, :, None] + rng.standard_normal((num_tasks, ways, shots, dim))
    queries = means[:, :, None] + rng.standard_normal((num_tasks, ways, query, dim))
    gaps = np.linalg.norm(means[:, :, None] - means[:, None], axis=-1)
    gaps[:, np.arange(ways), np.arange(ways)] = np.inf
    return {"spread": scale, "min_gap": gaps.min(axis=(1, 2)),
            "support_x": support.reshape(num_tasks, ways * shots, dim),
            "query_x": queries.reshape(num_tasks, ways * query, dim)}


def write_splits(path: Path | str, data: dict) -> dict:
    """Draw the three splits of the experiment's ``data`` section and write them atomically."""
    settings = check_data(data)
    path = Path(path)
    sizes = {split: settings[f"{split}_tasks"] for split in SPLITS}
    streams = np.random.SeedSequence(settings["split_seed"]).spawn(len(SPLITS))
    arrays = {}
    for split, stream in zip(SPLITS, streams):
        drawn = generate_split(np.random.default_rng(stream), sizes[split], settings["ways"], settings["shots"],
                               settings["query"], settings["dim"], tuple(settings["spread"]))
        arrays.update({f"{split}_{key}": value.astype(np.float32) for key, value in drawn.items()})
    meta = {"family": "fewshot_blobs", "seed": settings["split_seed"], "sizes": sizes,
            **{key: settings[key] for key in ("ways", "shots", "query", "dim")}, "spread": list(settings["spread"]),
            "task": "ways Gaussian classes in R^dim: means ~ N(0, s^2 I), s ~ U[spread], examples = mean + N(0, I)"}
    return write_arrays(path, arrays, meta)


class FewShotBlobTasks:
    """Read-only view of a split file; hands out TaskBatch objects (integer labels) by task index."""

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "split")
        with np.load(path) as data:
            self.arrays = {key: torch.from_numpy(data[key]) for key in data.files}
        self.ways, self.shots, self.query, self.dim = (self.meta[key] for key in ("ways", "shots", "query", "dim"))
        self.io_dims = (self.dim, self.ways)
        self.feature_dim = self.ways * self.shots * self.dim

    def num_tasks(self, split: str) -> int:
        return self.arrays[f"{split}_spread"].shape[0]

    def batch(self, split: str, indices: torch.Tensor | None = None) -> TaskBatch:
        """Tasks ``indices`` of ``split`` (all of them by default) as one TaskBatch."""
        def pick(key):
            values = self.arrays[f"{split}_{key}"]
            return values if indices is None else values[indices]

        support_x, query_x = pick("support_x"), pick("query_x")
        k = support_x.shape[0]
        support_y = torch.arange(self.ways).repeat_interleave(self.shots).expand(k, -1).clone()
        query_y = torch.arange(self.ways).repeat_interleave(self.query).expand(k, -1).clone()
        return TaskBatch(support_x, support_y, query_x, query_y, support_x.flatten(1))

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        return {"spread": self.arrays[f"{split}_spread"].numpy(), "min_gap": self.arrays[f"{split}_min_gap"].numpy()}


Tasks = FewShotBlobTasks  # the name every family module exports
