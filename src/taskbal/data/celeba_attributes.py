"""CelebA's 40 binary attributes as 40 tasks on the same images ("single-input" multi-task learning;
thesis Ye 2024, Table 5.3 and Figure 5.2 (d)).

The family reads CelebA's split file (``results/dataset_splits/celeba/official.json``, rule
``splits_celeba``: the official partition, 162,770 / 19,867 / 19,962 images), the aligned images and
``list_attr_celeba.txt`` under ``resources/celeba/celeba/``, and writes one ``.npz`` holding, per split,
every image resized to ``image_size`` × ``image_size`` (uint8 [n, 3, H, W]; the aligned 178 × 218 faces
are resized without a crop) and the 40 attributes as 0 / 1 labels [n, 40]. The thesis gives neither the
resolution nor the split: 64 × 64 (the resolution of the multi-task CelebA benchmarks since Sener &
Koltun 2018) and the official partition are our choices. ``max_images`` keeps the first n images of
every split in the split file's order (a smaller build; the sidecar says so).

``data`` keys (defaults): split_variant (official), image_size (64), attributes (null: all 40, in the
file's order), max_images (null), resources (resources), dataset_splits (results/dataset_splits).

The MTL family contract (taskbal/mtl/data.py): ``task_names`` are the attributes, ``arrays(split, task)``
the split's images (the same array for every task: ``shared_inputs``) and that attribute's labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_arrays, write_arrays
from .checks import check_integer, data_settings
from .resources import data_source, dataset_inputs, dataset_split_file

SPLITS = ("train", "val", "test")
DATASET = "celeba"
DEFAULTS = {"split_variant": "official", "image_size": 64, "attributes": None, "max_images": None,
            "resources": "resources", "dataset_splits": "results/dataset_splits"}


def check_data(data: dict) -> dict:
    settings = data_settings(data, "celeba_attributes", (), DEFAULTS)
    check_integer("image_size", settings["image_size"], 8)
    if settings["max_images"] is not None:
        check_integer("max_images", settings["max_images"], 1)
    attributes = settings["attributes"]
    if attributes is not None and (not isinstance(attributes, list) or not attributes
                                   or len(set(attributes)) != len(attributes)
                                   or not all(isinstance(a, str) for a in attributes)):
        raise ValueError(f"data.attributes: expected distinct attribute names of list_attr_celeba.txt, got "
                         f"{attributes!r}")
    return settings



def input_files(data: dict) -> list[str]:
    """The dataset's record and split file (the split rule's inputs)."""
    settings = check_data(data)
    return dataset_inputs(settings, DATASET)


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``list_attr_celeba.txt``: a count, the 40 names, then ``<image> ±1 … ±1`` per image → 0 / 1 rows."""
    lines = path.read_text().splitlines()
    names = lines[1].split()
    rows = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise ValueError(f"{path}:{number}: expected '<image>' and {len(names)} values of 1 or -1")
        rows[fields[0]] = (np.array(fields[1:], dtype=np.int64) > 0).astype(np.int64)
    return names, rows


def write_splits(path: Path | str, data: dict) -> dict:
    from .datasets import read_record
    from .resources import find_dir, find_file
    from .split_building import decode_image
    from .splitfile import read_split_file

    settings = check_data(data)
    side = settings["image_size"]
    split_file = read_split_file(dataset_split_file(settings, DATASET))
    resource_dir = Path(settings["resources"]) / DATASET
    record = read_record(settings["resources"], DATASET)
    names, rows = read_attributes(find_file(resource_dir, ["celeba/list_attr_celeba.txt", "list_attr_celeba.txt"],
                                            "CelebA list_attr_celeba.txt"))
    chosen = settings["attributes"] or names
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise ValueError(f"data.attributes: {unknown[0]!r} is not an attribute of list_attr_celeba.txt; "
                         f"known: {names}")
    columns = [names.index(a) for a in chosen]
    image_dir = find_dir(resource_dir, ["celeba/img_align_celeba", "img_align_celeba"], "CelebA images")
    arrays, counts = {}, {}
    for split in SPLITS:
        files = split_file["splits"][split]["images"][:settings["max_images"]]
        images = np.zeros((len(files), 3, side, side), dtype=np.uint8)
        for i, name in enumerate(files):
            if name not in rows:
                raise ValueError(f"{name}: listed in the split file but not in list_attr_celeba.txt")
            images[i] = decode_image(image_dir / name, side, 3)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = np.stack([rows[name][columns] for name in files]) if files else \
            np.zeros((0, len(columns)), dtype=np.int64)
        counts[split] = len(files)
    meta = {"family": "celeba_attributes", "dataset": DATASET, "split_variant": settings["split_variant"],
            "dataset_split_sha256": split_file["sha256"], "image_size": side, "attributes": list(chosen),
            "counts": counts, "max_images": settings["max_images"],
            "data_source": {DATASET: data_source(split_file, record, settings["max_images"] and
                                                 f"the first {settings['max_images']} images of each split")}}
    return write_arrays(path, arrays, meta)


class CelebAAttributeTasks:
    """The MTL family view: every attribute a binary task on the same images."""

    splits = SPLITS
    shared_inputs = True  # every task reads the same images: one encoder pass serves all of them

    def __init__(self, path: Path | str):
        self.meta, self.split_arrays = read_arrays(path)
        self.task_names = list(self.meta["attributes"])

    def arrays(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        labels = self.split_arrays[f"{split}_labels"][:, self.task_names.index(task)]
        return self.split_arrays[f"{split}_images"], labels

    def num_classes(self, task: str) -> int:
        return 2


Tasks = CelebAAttributeTasks
