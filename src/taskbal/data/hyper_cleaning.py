"""Multi-task data hyper-cleaning on MNIST and Fashion-MNIST (thesis Ye 2024, §3.7.1, Table 3.2).

The MTL family format of taskbal/mtl/data.py, one task per dataset ("datasets as tasks"). Protocol
(thesis §3.7.1, after Bao et al.): per dataset, randomly sample 5,000 training, 1,000
first-validation (``val``: the UL data), 1,000 second-validation (``val2``: model selection) and
5,000 test images. Half of the training images get their label replaced by a different class drawn
uniformly from the other nine; validation and test labels are clean.

Where the thesis is silent (our choices): train, val and val2 are disjoint draws from the official
training images, test is drawn from the official test images; exactly ``round(corruption · train)``
training labels are corrupted (a fixed count, not a Bernoulli draw per sample), chosen uniformly.
A dataset without an official test split (the offline 10,000-digit MNIST subset) draws its test
images from the training images left after train/val/val2 (fewer than requested if not enough
remain); the split file's ``sizes`` and ``images`` say so per dataset.

Splits are data: the split file holds, per dataset and split, the exact image indices (into the
official train or test images) and labels, the corrupted training labels, the clean ones and the
corruption mask, plus the SHA-256 of the IDX files. ``Tasks`` reads the images from the dataset
directories and refuses files other than those the split was built from. Pixels are scaled to
[0, 1] and flattened (784 inputs).

``data`` keys (defaults): mnist_dir (resources/mnist), fashion_mnist_dir (resources/fashion_mnist),
datasets ([mnist, fashion_mnist]), train 5000, val 1000, val2 1000, test 5000, corruption 0.5,
split_seed (required).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_arrays, write_arrays
from . import idx
from .checks import data_settings

SPLITS = ("train", "val", "val2", "test")
KNOWN_DATASETS = ("mnist", "fashion_mnist")
NUM_CLASSES = 10
DEFAULTS = {"mnist_dir": "resources/mnist", "fashion_mnist_dir": "resources/fashion_mnist",
            "datasets": list(KNOWN_DATASETS), "train": 5000, "val": 1000, "val2": 1000, "test": 5000,
            "corruption": 0.5}
INTEGERS = {"train": 1, "val": 1, "val2": 1, "test": 1, "split_seed": 0}


def check_data(data: dict) -> dict:
    settings = data_settings(data, "hyper_cleaning", ("split_seed",), DEFAULTS, INTEGERS, none_is_default=True)
    datasets = settings["datasets"]
    if (not isinstance(datasets, (list, tuple)) or not datasets or len(set(datasets)) != len(datasets)
            or any(d not in KNOWN_DATASETS for d in datasets)):
        raise ValueError(f"data.datasets: expected distinct names from {list(KNOWN_DATASETS)}, got {datasets!r}")
    settings["datasets"] = list(datasets)
    c = settings["corruption"]
    if not isinstance(c, (int, float)) or isinstance(c, bool) or not 0 <= c <= 1:
        raise ValueError(f"data.corruption: expected a number in [0, 1], got {c!r}")
    return settings


def dataset_dir(settings: dict, name: str) -> str:
    return settings[f"{name}_dir"]


def input_files(data: dict) -> list[str]:
    """The dataset files the split builder reads (the split rule's inputs)."""
    settings = check_data(data)
    return [path for name in settings["datasets"] for path in idx.input_files(dataset_dir(settings, name))]


def corrupt(rng: np.random.Generator, labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, mask): exactly round(fraction · n) labels moved to a uniformly drawn other class."""
    n = labels.size
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:int(round(fraction * n))]] = True
    shift = rng.integers(1, NUM_CLASSES, size=n)  # 1..9: never the true class, uniform over the others
    noisy = np.where(mask, (labels.astype(np.int64) + shift) % NUM_CLASSES, labels)
    return noisy.astype(np.int64), mask


def write_splits(path: Path | str, data: dict) -> dict:
    settings = check_data(data)
    path = Path(path)
    streams = np.random.SeedSequence(settings["split_seed"]).spawn(len(settings["datasets"]))
    arrays, fingerprints, dirs, sources, sizes, test_images = {}, {}, {}, {}, {}, {}
    for name, stream in zip(settings["datasets"], streams):
        directory = dataset_dir(settings, name)
        dirs[name], fingerprints[name] = directory, idx.fingerprint(directory)
        sources[name] = idx.describe(directory)
        loaded = idx.load_dataset(directory)
        rng = np.random.default_rng(stream)
        train_labels = loaded["train"][1]
        needed = settings["train"] + settings["val"] + settings["val2"]
        if needed > train_labels.size:
            raise ValueError(f"data.train: {name} has {train_labels.size} training images; train + val + val2 "
                             f"= {needed}")
        order = rng.permutation(train_labels.size)
        bounds = np.cumsum([0, settings["train"], settings["val"], settings["val2"]])
        chosen = {split: np.sort(order[bounds[i]:bounds[i + 1]]) for i, split in enumerate(("train", "val", "val2"))}
        if loaded["test"] is not None:
            test_labels = loaded["test"][1]
            if settings["test"] > test_labels.size:
                raise ValueError(f"data.test: {name} has {test_labels.size} test images, {settings['test']} requested")
            chosen["test"] = np.sort(rng.permutation(test_labels.size)[:settings["test"]])
            test_images[name] = "drawn from the official test images"
        else:  # the offline MNIST subset: test images from the training images left over (maybe fewer)
            test_labels = train_labels
            chosen["test"] = np.sort(order[needed:needed + settings["test"]])
            test_images[name] = (f"no official test split: {chosen['test'].size} of the training images not used "
                                 f"by train/val/val2 ({settings['test']} requested)")
        sizes[name] = {split: int(indices.size) for split, indices in chosen.items()}
        for split, indices in chosen.items():
            labels = (test_labels if split == "test" else train_labels)[indices].astype(np.int64)
            arrays[f"{split}_{name}_index"] = indices.astype(np.int32)
            arrays[f"{split}_{name}_label"] = labels
        clean = arrays[f"train_{name}_label"]
        noisy, mask = corrupt(rng, clean, settings["corruption"])
        arrays[f"train_{name}_clean"], arrays[f"train_{name}_label"] = clean, noisy
        arrays[f"train_{name}_corrupted"] = mask
    meta = {"family": "hyper_cleaning", "seed": settings["split_seed"], "datasets": settings["datasets"],
            "sizes": sizes, "corruption": settings["corruption"],
            "corrupted": {name: int(arrays[f"train_{name}_corrupted"].sum()) for name in settings["datasets"]},
            "dataset_dirs": dirs, "dataset_files": fingerprints, "data_source": sources,
            "images": {"train/val/val2": "disjoint draws from the official training images",
                       "test": test_images}}
    return write_arrays(path, arrays, meta)


class HyperCleaningTasks:
    """The MTL family view of a split file: per dataset (task) and split, images and labels."""

    splits = SPLITS

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta, self.split_arrays = read_arrays(path)
        self.task_names = list(self.meta["datasets"])
        self.images = {}
        for name in self.task_names:
            directory = self.meta["dataset_dirs"][name]
            idx.check_fingerprint(directory, self.meta["dataset_files"][name], path)
            loaded = idx.load_dataset(directory)
            self.images[name] = {split: pair[0] for split, pair in loaded.items() if pair is not None}
        self.io_dims = (int(np.prod(self.images[self.task_names[0]]["train"].shape[1:])), NUM_CLASSES)
        self.feature_dim = len(self.task_names)

    def _check(self, split: str, task: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split: unknown {split!r}; the hyper_cleaning family has {list(SPLITS)}")
        if task not in self.task_names:
            raise ValueError(f"task: unknown {task!r}; the split has {self.task_names}")

    def indices(self, split: str, task: str) -> np.ndarray:
        self._check(split, task)
        return self.split_arrays[f"{split}_{task}_index"]

    def arrays(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """(pixels float32 [n, 784] in [0, 1], labels int64 [n]); train labels are the corrupted ones."""
        source = self.images[task]["test" if split == "test" and "test" in self.images[task] else "train"]
        x = source[self.indices(split, task)].reshape(-1, self.io_dims[0]).astype(np.float32) / 255.0
        return x, self.split_arrays[f"{split}_{task}_label"]

    def num_classes(self, task: str) -> int:
        return NUM_CLASSES

    def corrupted(self, task: str) -> np.ndarray:
        self._check("train", task)
        return self.split_arrays[f"train_{task}_corrupted"]

    def clean_labels(self, task: str) -> np.ndarray:
        self._check("train", task)
        return self.split_arrays[f"train_{task}_clean"]

    def num_tasks(self, split: str = "test") -> int:
        return len(self.task_names)

    def task_table(self, split: str = "test") -> dict[str, np.ndarray]:
        return {"task": np.array(self.task_names)}


Tasks = HyperCleaningTasks  # the name every family module exports
