"""The eight binary 5-shot tasks of DA-MAML (Collins, Mokhtari & Shakkottai), Sec. 6 / Figure 1.

Tasks (Sec. 6): two Fashion-MNIST tasks, pullover (class 2) against
coat (class 4) with each label order (task ``fmnist_2v4``: pullover → 0, coat → 1; ``fmnist_4v2``
the opposite), and six MNIST tasks, three digit pairs (default (0, 1), (2, 3), (4, 5); the paper
does not name them) each in both label orders. Task ids: 0–1 Fashion-MNIST, 2–7 MNIST, in that order.

An episode of a task is a 2-way ``shots``-shot problem: ``shots`` support and ``query`` query images
per class, all distinct. Splits:

- ``train``: ``train_tasks`` episodes (the training pool; ``iterations × meta_batch`` makes every
  visited episode a fresh draw). Each episode's task is drawn i.i.d. from the training
  distribution: the Fashion-MNIST tasks share ``fashion_probability`` (MAML's biased environment:
  0.1, i.e. 0.05 each), the MNIST tasks share the rest equally. DA-MAML samples tasks uniformly
  (``fashion_probability: 0.25`` = 2/8). Images come from the official training images minus the
  held-out validation images.
- ``val``: ``val_episodes`` episodes per task from a held-out fraction ``val_fraction`` of every
  class's official training images (not in the paper; curves only).
- ``test``: ``test_episodes`` episodes per task (the paper: 500) from the official test images.
  The training curve evaluates the first ``curve_episodes`` of them per task (default: all); the
  final evaluation always uses all.

Splits are data: the split file holds, for every episode, its task and the exact image indices
and labels of its support and query sets (indices into the dataset's official train or test
images), plus the SHA-256 of the IDX files they index into and a description of their source.
A dataset without an official test split (the offline 10,000-digit MNIST subset) gets its test
pool held out from its training images (``no_test_fraction`` of each class, default 15 %), and
the split file says so. ``Tasks`` reads the images from the
dataset directories (``mnist_dir``, ``fashion_mnist_dir``) and refuses files that differ from the
ones the split was built from. Pixels are scaled to [0, 1] and flattened (784 inputs).

The training pool's task ids are ``train_groups`` (8 groups), so DA-MAML / TR-MAML keep their task
distribution p on the eight tasks. ``curve_metrics`` gives the training curve: per-task test
accuracy, their mean (the paper's "average") and minimum ("worst case").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import verified_sidecar, write_arrays
from ..learners import TaskBatch
from . import idx
from .checks import check_integer, data_settings

SPLITS = ("train", "val", "test")
DATASETS = ("mnist", "fashion_mnist")
SHORT = {"mnist": "mnist", "fashion_mnist": "fmnist"}
REQUIRED_KEYS = ("shots", "query", "train_tasks", "val_episodes", "test_episodes", "split_seed")
DEFAULTS = {"mnist_dir": "resources/mnist", "fashion_mnist_dir": "resources/fashion_mnist",
            "mnist_pairs": [[0, 1], [2, 3], [4, 5]], "fashion_pair": [2, 4], "fashion_probability": 0.1,
            "val_fraction": 0.1, "curve_episodes": None, "no_test_fraction": 0.15}
INTEGERS = {"shots": 1, "query": 1, "train_tasks": 1, "val_episodes": 1, "test_episodes": 1, "split_seed": 0}


# --------------------------------------------------------------------------- configuration
def _pair(value, key: str) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 9 for c in value)
            or value[0] == value[1]):
        raise ValueError(f"data.{key}: expected two different class ids in 0..9, got {value!r}")
    return int(value[0]), int(value[1])


def check_data(data: dict) -> dict:
    """The ``data`` section with defaults filled in; a bad value names its ``data.<field>``."""
    settings = data_settings(data, "binary_mnist", REQUIRED_KEYS, DEFAULTS, INTEGERS, none_is_default=True)
    if settings["curve_episodes"] is None:
        settings["curve_episodes"] = settings["test_episodes"]
    check_integer("curve_episodes", settings["curve_episodes"], 1)
    settings["curve_episodes"] = min(settings["curve_episodes"], settings["test_episodes"])
    pairs = settings["mnist_pairs"]
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise ValueError(f"data.mnist_pairs: expected a non-empty list of class pairs, got {pairs!r}")
    settings["mnist_pairs"] = [list(_pair(p, "mnist_pairs")) for p in pairs]
    settings["fashion_pair"] = list(_pair(settings["fashion_pair"], "fashion_pair"))
    p = settings["fashion_probability"]
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"data.fashion_probability: expected a number in [0, 1], got {p!r}")
    for key in ("val_fraction", "no_test_fraction"):
        f = settings[key]
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1:
            raise ValueError(f"data.{key}: expected a number in (0, 1), got {f!r}")
    if settings["val_fraction"] + settings["no_test_fraction"] >= 1:
        raise ValueError("data.no_test_fraction: val_fraction + no_test_fraction must be < 1")
    return settings


def input_files(data: dict) -> list[str]:
    """The dataset files the split builder reads (the split rule's inputs)."""
    settings = check_data(data)
    return [path for key in ("mnist_dir", "fashion_mnist_dir") for path in idx.input_files(settings[key])]


def task_definitions(settings: dict) -> list[dict]:
    """The tasks in id order: dataset, the class mapped to label 0 and the class mapped to label 1."""
    tasks = []
    a, b = settings["fashion_pair"]
    for first, second in ((a, b), (b, a)):
        tasks.append({"dataset": "fashion_mnist", "classes": [first, second]})
    for a, b in settings["mnist_pairs"]:
        for first, second in ((a, b), (b, a)):
            tasks.append({"dataset": "mnist", "classes": [first, second]})
    for task in tasks:
        task["name"] = f"{SHORT[task['dataset']]}_{task['classes'][0]}v{task['classes'][1]}"
    return tasks


def training_probabilities(tasks: list[dict], fashion_probability: float) -> np.ndarray:
    """P(task) of the training environment: Fashion-MNIST tasks share ``fashion_probability``."""
    fashion = np.array([t["dataset"] == "fashion_mnist" for t in tasks])
    probs = np.where(fashion, fashion_probability / fashion.sum(), (1 - fashion_probability) / (~fashion).sum())
    return probs / probs.sum()


# --------------------------------------------------------------------------- split construction
def class_pools(labels: np.ndarray, classes: set[int], val_fraction: float, test_fraction: float,
                rng: np.random.Generator) -> tuple[dict[int, np.ndarray], ...]:
    """Per class: (training-pool, validation, test) indices into the training images; the test pool
    is empty unless ``test_fraction`` > 0 (a dataset without an official test split)."""
    train, val, test = {}, {}, {}
    for c in sorted(classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        held_val = int(round(val_fraction * members.size))
        held_test = int(round(test_fraction * members.size))
        val[c] = np.sort(members[:held_val])
        test[c] = np.sort(members[held_val:held_val + held_test])
        train[c] = np.sort(members[held_val + held_test:])
    return train, val, test


def distinct_draws(rng: np.random.Generator, pool_size: int, rows: int, count: int,
                   block: int = 256) -> np.ndarray:
    """[rows, count] positions in range(pool_size), distinct within each row: per row, the ``count``
    smallest of ``pool_size`` uniform keys (a uniformly random ``count``-subset), in blocks of rows."""
    if count > pool_size:
        raise ValueError(f"an episode needs {count} images of one class, the pool has only {pool_size}")
    out = np.empty((rows, count), dtype=np.int64)
    for start in range(0, rows, block):
        keys = rng.random((min(block, rows - start), pool_size))
        out[start:start + block] = np.argsort(keys, axis=1, kind="stable")[:, :count]
    return out


def episodes(rng: np.random.Generator, task_ids: np.ndarray, tasks: list[dict],
             pools: dict[str, dict[int, np.ndarray]], shots: int, query: int) -> dict[str, np.ndarray]:
    """Support/query image indices and labels of every episode; tasks are processed in batches."""
    n = task_ids.size
    per_class = shots + query
    support = np.zeros((n, 2 * shots), dtype=np.int32)
    query_idx = np.zeros((n, 2 * query), dtype=np.int32)
    labels_s = np.repeat(np.arange(2, dtype=np.int8), shots)[None].repeat(n, 0)
    labels_q = np.repeat(np.arange(2, dtype=np.int8), query)[None].repeat(n, 0)
    for t, task in enumerate(tasks):
        rows = np.flatnonzero(task_ids == t)
        if rows.size == 0:
            continue
        for label, c in enumerate(task["classes"]):
            pool = pools[task["dataset"]][c]
            chosen = pool[distinct_draws(rng, pool.size, rows.size, per_class)]
            support[rows, label * shots:(label + 1) * shots] = chosen[:, :shots]
            query_idx[rows, label * query:(label + 1) * query] = chosen[:, shots:]
    return {"task": task_ids.astype(np.int16), "support": support, "support_y": labels_s,
            "query": query_idx, "query_y": labels_q}


def write_splits(path: Path | str, data: dict) -> dict:
    """Draw the train, val and test episodes of the experiment's ``data`` section; write them atomically."""
    settings = check_data(data)
    path = Path(path)
    tasks = task_definitions(settings)
    dirs = {"mnist": settings["mnist_dir"], "fashion_mnist": settings["fashion_mnist_dir"]}
    fingerprints = {name: idx.fingerprint(directory) for name, directory in dirs.items()}
    loaded = {name: idx.load_dataset(directory) for name, directory in dirs.items()}
    streams = np.random.SeedSequence(settings["split_seed"]).spawn(1 + len(SPLITS))
    pool_rng = np.random.default_rng(streams[0])
    pools = {"train": {}, "val": {}, "test": {}}
    arrays = {}
    test_images = {}
    for name in DATASETS:
        classes = {c for t in tasks if t["dataset"] == name for c in t["classes"]}
        official_test = loaded[name]["test"] is not None
        train_labels = loaded[name]["train"][1]
        pools["train"][name], pools["val"][name], carved = class_pools(
            train_labels, classes, settings["val_fraction"], 0.0 if official_test else settings["no_test_fraction"],
            pool_rng)
        if official_test:
            test_labels = loaded[name]["test"][1]
            pools["test"][name] = {c: np.flatnonzero(test_labels == c) for c in sorted(classes)}
            test_images[name] = "official test images"
        else:  # e.g. the offline MNIST subset: the test pool is held out from the training images
            pools["test"][name] = carved
            test_images[name] = (f"no official test split: a held-out {settings['no_test_fraction']:.0%} of each "
                                 "class's training images")
        for split in SPLITS:
            for c, members in pools[split][name].items():
                arrays[f"pool_{split}_{name}_{c}"] = members.astype(np.int32)
    num_tasks = len(tasks)
    probs = training_probabilities(tasks, settings["fashion_probability"])
    for split, stream in zip(SPLITS, streams[1:]):
        rng = np.random.default_rng(stream)
        if split == "train":
            task_ids = rng.choice(num_tasks, size=settings["train_tasks"], p=probs)
        else:
            task_ids = np.repeat(np.arange(num_tasks), settings[f"{split}_episodes"])
        drawn = episodes(rng, task_ids, tasks, pools[split], settings["shots"], settings["query"])
        arrays.update({f"{split}_{key}": value for key, value in drawn.items()})
    arrays["task_dataset"] = np.array([DATASETS.index(t["dataset"]) for t in tasks], dtype=np.int8)
    arrays["task_classes"] = np.array([t["classes"] for t in tasks], dtype=np.int8)
    arrays["train_probabilities"] = probs
    sizes = {split: int(arrays[f"{split}_task"].size) for split in SPLITS}
    meta = {"family": "binary_mnist", "seed": settings["split_seed"], "shots": settings["shots"],
            "query": settings["query"], "sizes": sizes, "tasks": tasks,
            "train_probabilities": [float(p) for p in probs],
            "fashion_probability": settings["fashion_probability"], "val_fraction": settings["val_fraction"],
            "episodes_per_task": {"val": settings["val_episodes"], "test": settings["test_episodes"]},
            "curve_episodes": settings["curve_episodes"],
            "dataset_dirs": dirs, "dataset_files": fingerprints,
            "data_source": {name: idx.describe(directory) for name, directory in dirs.items()},
            "test_source": {name: "test" if loaded[name]["test"] is not None else "train" for name in DATASETS},
            "images": {"train": "training images minus the held-out validation (and test) images",
                       "val": "held-out training images", "test": test_images},
            "task": "2-way episodes: shots + query distinct images per class; labels 0/1 per the task's class order"}
    return write_arrays(path, arrays, meta)


# --------------------------------------------------------------------------- reading
class BinaryMNISTTasks:
    """Read-only view of a split file; hands out TaskBatch objects by episode index."""

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "split")
        with np.load(path) as data:
            self.arrays = {key: data[key] for key in data.files if not key.startswith("pool_")}
        self.tasks = self.meta["tasks"]
        self.task_names = [t["name"] for t in self.tasks]
        self.images = {}
        for name, directory in self.meta["dataset_dirs"].items():
            idx.check_fingerprint(directory, self.meta["dataset_files"][name], path)
            loaded = idx.load_dataset(directory)
            self.images[name] = {split: torch.from_numpy(pair[0].reshape(len(pair[0]), -1))
                                 for split, pair in loaded.items() if pair is not None}
        self.io_dims = (int(self.images["mnist"]["train"].shape[1]), 2)
        self.feature_dim = len(self.tasks)
        self.task_dataset = torch.from_numpy(self.arrays["task_dataset"].astype(np.int64))
        self.train_groups = self.groups("train")
        self.num_train_groups = len(self.tasks)
        self.shots, self.query = self.meta["shots"], self.meta["query"]

    def num_tasks(self, split: str) -> int:
        return int(self.arrays[f"{split}_task"].shape[0])

    def groups(self, split: str) -> torch.Tensor:
        """Task id (0..7) of every episode of ``split`` (int64)."""
        return torch.from_numpy(self.arrays[f"{split}_task"].astype(np.int64))

    def num_groups(self, split: str) -> int:
        return len(self.tasks)

    def _pixels(self, split: str, task_ids: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
        """[k, n, 784] float pixels in [0, 1] of the given image indices of each episode's dataset."""
        index = torch.from_numpy(positions.astype(np.int64))
        out = torch.empty(*positions.shape, self.io_dims[0], dtype=torch.float32)
        datasets = self.task_dataset[task_ids]
        for d, name in enumerate(DATASETS):
            rows = torch.nonzero(datasets == d).flatten()
            if rows.numel():
                source = self.meta["test_source"][name] if split == "test" else "train"
                out[rows] = self.images[name][source][index[rows]].to(torch.float32)
        return out.div_(255.0)

    def batch(self, split: str, indices: torch.Tensor | None = None) -> TaskBatch:
        """Episodes ``indices`` of ``split`` (all of them by default) as one TaskBatch."""
        rows = np.arange(self.num_tasks(split)) if indices is None else np.asarray(indices, dtype=np.int64)
        task_ids = torch.from_numpy(self.arrays[f"{split}_task"][rows].astype(np.int64))
        support_x = self._pixels(split, task_ids, self.arrays[f"{split}_support"][rows])
        query_x = self._pixels(split, task_ids, self.arrays[f"{split}_query"][rows])
        support_y = torch.from_numpy(self.arrays[f"{split}_support_y"][rows].astype(np.int64))
        query_y = torch.from_numpy(self.arrays[f"{split}_query_y"][rows].astype(np.int64))
        features = torch.nn.functional.one_hot(task_ids, len(self.tasks)).to(torch.float32)
        return TaskBatch(support_x, support_y, query_x, query_y, features)

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        """Per episode: its task id (``group``) and the task's name."""
        ids = self.arrays[f"{split}_task"].astype(np.int64)
        return {"group": ids, "task_name": np.array(self.task_names)[ids]}

    def curve_metrics(self, learner, device: torch.device, split: str = "test", chunk: int = 500) -> dict:
        """Per-task accuracy and loss after adaptation on the first ``curve_episodes`` episodes of every
        task of ``split``, their mean (the paper's "average") and worst task (training curves)."""
        per_task_episodes = self.meta["episodes_per_task"][split]
        count = min(self.meta["curve_episodes"], per_task_episodes)
        num_tasks = len(self.tasks)
        # val/test episodes are stored task by task: task t's are rows t·E … t·E + E − 1
        rows = (np.arange(num_tasks)[:, None] * per_task_episodes + np.arange(count)[None]).reshape(-1)
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, rows.size, chunk):
            batch = self.batch(split, rows[start:start + chunk]).to(device)
            for name, values in learner.evaluate_tasks(batch).items():
                parts.setdefault(name, []).append(values.detach().cpu())
        out = {}
        for name in ("accuracy", "loss"):
            per_task = torch.cat(parts[name]).view(num_tasks, count).mean(1).numpy()
            out.update({f"{split}_{name}_{task}": float(v) for task, v in zip(self.task_names, per_task)})
            out[f"{split}_{name}_mean"] = float(per_task.mean())
            out[f"{split}_{name}_worst"] = float(per_task.min() if name == "accuracy" else per_task.max())
        return out


Tasks = BinaryMNISTTasks  # the name every family module exports
