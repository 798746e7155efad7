"""Image completion on CelebA as few-shot regression (Nash-GBML Table 3, after Garnelo et al. 2018 and
Zintgraf et al. 2019's CAVIA): a task is one face, its support set ``shots`` random pixels, the map to
learn (row, column) → (R, G, B).

The family reads CelebA's split file (``results/dataset_splits/celeba/official.json``: the official
partition) and the aligned faces under ``resources/celeba/celeba/img_align_celeba/``, resized to
``image_size`` × ``image_size`` with Lanczos (CAVIA's code: 32 × 32), and writes one ``.npz`` with the
training images and the first ``val_tasks`` / ``test_tasks`` validation and test images (uint8), and the
fixed support pixels of every validation and test task. Inputs are (row, column) / image_size in [0, 1)
and targets the RGB values in [0, 1] (CAVIA's code).

Training tasks. Pool index i (``train_tasks`` of them, visited by the runner in random passes) is
training image i mod n_train with ``shots`` support and ``query`` query pixels drawn without replacement
from a generator seeded by (split_seed, i) (:func:`taskbal.data.episodes.episode_generator`), so a face
seen twice gets other pixels each time, as the code's fresh draws, and nothing needs storing.
``query: null`` makes the query set every pixel of the image.

Evaluation tasks (Nash-GBML does not give its protocol; notes/001 §7 A11): the first ``test_tasks``
(5,000) test images, each with ``shots`` fixed random support pixels, its query set every pixel (MSE
over the whole image after adaptation, CAVIA's ``k_meta_test 1024``); Mean, Worst and Std. Dev. are
over these images (eval.csv's rows; one row per image, ``image`` its position in the split).

``data`` keys (defaults): shots (100), query (null), image_size (32), train_tasks, val_tasks, test_tasks,
split_seed (required), max_train_images (null: every training image), split_variant (official),
resources, dataset_splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..io import read_arrays, write_arrays
from ..learners import TaskBatch
from .checks import check_integer, data_settings
from .episodes import episode_generator
from .resources import data_source, dataset_inputs, dataset_split_file

SPLITS = ("train", "val", "test")
DATASET = "celeba"
REQUIRED = ("train_tasks", "val_tasks", "test_tasks", "split_seed")
DEFAULTS = {"shots": 100, "query": None, "image_size": 32, "max_train_images": None, "split_variant": "official",
            "resources": "resources", "dataset_splits": "results/dataset_splits"}
INTEGERS = {"shots": 1, "image_size": 2, "train_tasks": 1, "val_tasks": 1, "test_tasks": 1, "split_seed": 0}
EVAL_SEED_OFFSET = {"val": 1, "test": 2}  # the fixed support pixels: generators (split_seed + offset, task)


def check_data(data: dict) -> dict:
    settings = data_settings(data, "celeba_completion", REQUIRED, DEFAULTS, INTEGERS)
    pixels = settings["image_size"] ** 2
    for key in ("query", "max_train_images"):
        if settings[key] is not None:
            check_integer(key, settings[key], 1)
    if settings["shots"] >= pixels:
        raise ValueError(f"data.shots: {settings['shots']} support pixels leave no other pixel of a "
                         f"{settings['image_size']} x {settings['image_size']} image")
    if settings["query"] is not None and settings["shots"] + settings["query"] > pixels:
        raise ValueError(f"data.query: shots + query = {settings['shots'] + settings['query']} exceeds the "
                         f"{pixels} pixels of an image")
    return settings



def input_files(data: dict) -> list[str]:
    """The dataset's record and split file (the split rule's inputs)."""
    settings = check_data(data)
    return dataset_inputs(settings, DATASET)


def write_splits(path: Path | str, data: dict) -> dict:
    from .datasets import read_record
    from .resources import find_dir
    from .split_building import decode_image
    from .splitfile import read_split_file

    settings = check_data(data)
    side, shots = settings["image_size"], settings["shots"]
    split_file = read_split_file(dataset_split_file(settings, DATASET))
    resource_dir = Path(settings["resources"]) / DATASET
    record = read_record(settings["resources"], DATASET)
    image_dir = find_dir(resource_dir, ["celeba/img_align_celeba", "img_align_celeba"], "CelebA images")
    wanted = {"train": settings["max_train_images"], "val": settings["val_tasks"], "test": settings["test_tasks"]}
    arrays, counts = {}, {}
    for split in SPLITS:
        files = split_file["splits"][split]["images"]
        if split != "train" and wanted[split] > len(files):
            raise ValueError(f"data.{split}_tasks: {wanted[split]} requested, CelebA's {split} split has "
                             f"{len(files)} images")
        files = files[:wanted[split]]
        images = np.zeros((len(files), 3, side, side), dtype=np.uint8)
        for i, name in enumerate(files):
            images[i] = decode_image(image_dir / name, side, 3)
        arrays[f"{split}_images"] = images
        counts[split] = len(files)
        if split != "train":
            seed = settings["split_seed"] + EVAL_SEED_OFFSET[split]
            arrays[f"{split}_support"] = np.stack([torch.randperm(side * side, generator=episode_generator(seed, i))
                                                   [:shots].numpy() for i in range(len(files))])
    if counts["train"] == 0:
        raise ValueError("data.max_train_images: no training image left")
    meta = {"family": "celeba_completion", "dataset": DATASET, "split_variant": settings["split_variant"],
            "dataset_split_sha256": split_file["sha256"], "image_size": side, "shots": shots,
            "query": settings["query"], "seed": settings["split_seed"], "counts": counts,
            "sizes": {split: settings[f"{split}_tasks"] for split in SPLITS},
            "data_source": {DATASET: data_source(split_file, record, settings["max_train_images"] and
                                                 f"the first {counts['train']} training images")}}
    return write_arrays(path, arrays, meta)


def pixel_grid(side: int) -> torch.Tensor:
    """(row, column) / side of every pixel, row-major: [side², 2]."""
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([rows.reshape(-1), columns.reshape(-1)], 1).float() / side


class CelebACompletionTasks:
    """Read-only view of a split file; hands out TaskBatch objects by task index."""

    io_dims = (2, 3)

    def __init__(self, path: Path | str):
        self.meta, arrays = read_arrays(path)
        self.arrays = {key: torch.from_numpy(value) for key, value in arrays.items()}
        self.side, self.shots, self.query = self.meta["image_size"], self.meta["shots"], self.meta["query"]
        self.grid = pixel_grid(self.side)
        self.feature_dim = 5 * self.shots

    def num_tasks(self, split: str) -> int:
        return self.meta["sizes"][split] if split == "train" else self.arrays[f"{split}_images"].shape[0]

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [k, 3, H, W] → RGB in [0, 1], pixel by pixel: [k, H·W, 3]."""
        return images.float().div(255.0).flatten(2).transpose(1, 2)

    def batch(self, split: str, indices: torch.Tensor | None = None) -> TaskBatch:
        indices = torch.arange(self.num_tasks(split)) if indices is None else torch.as_tensor(indices)
        images = self.arrays[f"{split}_images"]
        if split == "train":
            pixels = self.pixels(images[indices % images.shape[0]])
            count = self.side ** 2 if self.query is None else self.shots + self.query
            order = torch.stack([torch.randperm(self.side ** 2, generator=episode_generator(self.meta["seed"], int(i)))
                                 for i in indices])
            support, query = order[:, :self.shots], order[:, self.shots:count]
            if self.query is None:
                query = torch.arange(self.side ** 2).expand(len(indices), -1)
        else:
            pixels = self.pixels(images[indices])
            support = self.arrays[f"{split}_support"][indices].long()
            query = torch.arange(self.side ** 2).expand(len(indices), -1)
        take = lambda where: torch.gather(pixels, 1, where[..., None].expand(-1, -1, 3))  # noqa: E731
        support_x, query_x = self.grid[support], self.grid[query]
        support_y, query_y = take(support), take(query)
        features = torch.cat([support_x, support_y], -1).flatten(1)
        return TaskBatch(support_x, support_y, query_x, query_y, features)

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        """Each task's image: its position in the split."""
        return {"image": np.arange(self.num_tasks(split))}


Tasks = CelebACompletionTasks  # the name every family module exports
