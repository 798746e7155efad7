"""N-way K-shot tasks of generated images (uniform random pixels) at a paper's image size: the timing tables.

The work of a meta-update depends on the shapes of its tasks (ways, shots, queries, image size and channels),
not on their pixels, so a table that measures time (SIMOL Table 4: a meta-update at mini-ImageNet's 5-way
5-shot shapes) can be built without the dataset, which cannot be had on every machine. Nothing else here is a
result: accuracies on these tasks are chance by construction, and every output built from them says
"generated images" (the split file's ``data_source``).

Task ``i`` of a split is drawn from a generator seeded by ``(split_seed, split, i)`` alone, when it is asked
for, so the split file stores only the settings. Labels are 0 … ways−1, class by class, as in
``fewshot_images``; ``features`` (SIMOL's re-weighting network) are the support images, flattened.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import verified_sidecar, write_arrays
from ..learners import TaskBatch
from .checks import data_settings
from .fewshot_images import episode_batch

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("ways", "shots", "query", "image_size", "train_tasks", "val_tasks", "test_tasks", "split_seed")
DEFAULTS = {"channels": 3}
INTEGERS = {"ways": 2, "shots": 1, "query": 1, "image_size": 1, "channels": 1, "train_tasks": 1, "val_tasks": 1,
            "test_tasks": 1, "split_seed": 0}
SOURCE = "generated images (uniform random pixels; for timing only)"


def check_data(data: dict) -> dict:
    return data_settings(data, "generated_images", REQUIRED_KEYS, DEFAULTS, INTEGERS)


def write_splits(path: Path | str, data: dict) -> dict:
    """The split file: the settings only (tasks are generated when asked for)."""
    settings = check_data(data)
    meta = {"family": "generated_images", "seed": settings["split_seed"], "data_source": {"generated": SOURCE},
            "sizes": {split: settings[f"{split}_tasks"] for split in SPLITS},
            **{key: settings[key] for key in ("ways", "shots", "query", "image_size", "channels")}}
    return write_arrays(Path(path), {"seed": np.array([settings["split_seed"]])}, meta)


class GeneratedImageTasks:
    """Hands out TaskBatch objects of generated images by task index."""

    def __init__(self, path: Path | str):
        self.meta = verified_sidecar(Path(path), "split")
        self.ways, self.shots, self.query = self.meta["ways"], self.meta["shots"], self.meta["query"]
        self.shape = (self.meta["channels"], self.meta["image_size"], self.meta["image_size"])
        self.io_dims = (self.shape, self.ways)
        self.feature_dim = (self.ways * self.shots, *self.shape)

    def num_tasks(self, split: str) -> int:
        return int(self.meta["sizes"][split])

    def images(self, split: str, index: int) -> torch.Tensor:
        """uint8 [ways, shots + query, C, H, W] of task ``index`` of ``split``."""
        generator = torch.Generator().manual_seed(hash_of(self.meta["seed"], SPLITS.index(split), index))
        return torch.randint(0, 256, (self.ways, self.shots + self.query, *self.shape), generator=generator,
                             dtype=torch.uint8)

    def batch(self, split: str, indices: torch.Tensor | None = None) -> TaskBatch:
        """Tasks ``indices`` of ``split`` (all of them by default) as one TaskBatch of float images in [0, 1]."""
        if indices is None:
            indices = torch.arange(self.num_tasks(split))
        return episode_batch(torch.stack([self.images(split, int(i)) for i in torch.as_tensor(indices)]), self.shots)

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        return {}


def hash_of(seed: int, split: int, index: int) -> int:
    """One generator seed per (split seed, split, task): SeedSequence mixes them into 63 bits."""
    return int(np.random.SeedSequence([seed, split, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


Tasks = GeneratedImageTasks  # the name every family module exports
