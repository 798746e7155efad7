"""A generated multi-task classification family in the MTL family format (see mtl/data.py).

Stands in for MNIST / Fashion-MNIST in tests and smoke runs of the MTL loop and of the
hyper-cleaning methods: each task is a ``classes``-way problem in R^dim whose class means are a
shared part plus a task-specific part (so a shared encoder helps), with Gaussian noise. Like the
thesis' hyper-cleaning data (§3.7.1), a fraction ``corruption`` of each task's TRAINING labels is
replaced by a different class drawn uniformly; validation, second validation and test sets are clean.

``data`` keys (defaults): tasks 2, classes 4, dim 8, train 200, val 60, val2 60, test 200,
corruption 0.0, separation 2.5 (distance scale of the class means), split_seed 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.checks import data_settings
from ..io import verified_sidecar, write_arrays

SPLITS = ("train", "val", "val2", "test")
DEFAULTS = {"tasks": 2, "classes": 4, "dim": 8, "train": 200, "val": 60, "val2": 60, "test": 200,
            "corruption": 0.0, "separation": 2.5, "split_seed": 0}
INTEGERS = {"tasks": 1, "classes": 2, "dim": 1, **{split: 1 for split in SPLITS}, "split_seed": 0}


def check_data(data: dict) -> dict:
    conf = data_settings(data, "generated multi-task", defaults=DEFAULTS, integers=INTEGERS)
    if not 0.0 <= conf["corruption"] < 1.0:
        raise ValueError(f"data.corruption: must be in [0, 1), got {conf['corruption']}")
    return conf


def generate(conf: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(conf["split_seed"])
    shared = rng.normal(size=(conf["classes"], conf["dim"]))
    arrays = {}
    for task in range(conf["tasks"]):
        means = conf["separation"] * (shared + 0.5 * rng.normal(size=shared.shape)) / np.sqrt(conf["dim"]) * 2
        for split in SPLITS:
            labels = rng.integers(0, conf["classes"], size=conf[split])
            inputs = means[labels] + rng.normal(size=(conf[split], conf["dim"]))
            arrays[f"x_{split}_{task}"] = inputs.astype(np.float32)
            arrays[f"y_{split}_{task}"] = labels.astype(np.int64)
        clean = arrays[f"y_train_{task}"].copy()
        corrupted = rng.random(conf["train"]) < conf["corruption"]
        # "another random class": shift by 1..classes-1, uniform over the wrong classes
        shift = rng.integers(1, conf["classes"], size=conf["train"])
        arrays[f"y_train_{task}"] = np.where(corrupted, (clean + shift) % conf["classes"], clean)
        arrays[f"clean_train_{task}"] = clean
        arrays[f"corrupted_{task}"] = corrupted
    return arrays


def write_splits(path: Path | str, data: dict) -> dict:
    conf = check_data(data)
    path = Path(path)
    arrays = generate(conf)
    meta = {"family": data.get("family", "mtl_blobs"), **conf,
            "sizes": {split: conf[split] for split in SPLITS}}
    return write_arrays(path, arrays, meta)


class Tasks:
    splits = SPLITS

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "task")
        with np.load(path) as handle:
            self.arrays_by_key = {key: handle[key] for key in handle.files}
        self.task_names = [f"task{t}" for t in range(self.meta["tasks"])]
        self.io_dims = (self.meta["dim"], self.meta["classes"])
        self.feature_dim = self.meta["tasks"]

    def _index(self, task: str) -> int:
        return self.task_names.index(task)

    def arrays(self, split: str, task: str):
        t = self._index(task)
        return self.arrays_by_key[f"x_{split}_{t}"], self.arrays_by_key[f"y_{split}_{t}"]

    def num_classes(self, task: str) -> int:
        return int(self.meta["classes"])

    def corrupted(self, task: str) -> np.ndarray:
        return self.arrays_by_key[f"corrupted_{self._index(task)}"]

    def num_tasks(self, split: str = "test") -> int:
        return len(self.task_names)

    def task_table(self, split: str = "test") -> dict[str, np.ndarray]:
        return {"task": np.array(self.task_names)}
