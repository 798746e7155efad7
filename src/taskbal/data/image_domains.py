"""Multi-input multi-task image classification: every domain of Office-31 or Office-Home is a task
(thesis Ye 2024, Tables 3.3, 5.1 and 5.4; LibMTL's Office protocol).

The family reads the dataset's split file (``results/dataset_splits/<dataset>/<split_variant>.json``,
rule ``splits_<dataset>``: LibMTL's 60 / 20 / 20 image lists per domain, or the seeded approximation
that file says it is) and the images under ``resources/<dataset>/``, and writes one ``.npz`` holding,
per split and domain, every image resized to ``image_size`` × ``image_size`` (uint8 [n, 3, H, W]; the
thesis and LibMTL resize to 224 × 224 without keeping the aspect ratio) and its class index. A class
index is the position of the image's folder name in the split file's sorted ``classes``, so every
domain shares one label space (31 or 65 classes). There is no augmentation (LibMTL's Office
transforms are resize, to-tensor and normalise; the model normalises, mtl/model.py).

``data`` keys (defaults): dataset (office31 | office_home), split_variant (libmtl), image_size (224),
domains (null: all of the dataset's, in its module's order), resources (resources), dataset_splits
(results/dataset_splits).

The MTL family contract (taskbal/mtl/data.py): ``task_names`` are the domains, ``splits`` train / val /
test, ``arrays(split, domain)`` the uint8 images and int64 labels, ``num_classes`` the dataset's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_arrays, write_arrays
from .checks import check_integer, data_settings
from .resources import data_source, dataset_inputs, dataset_split_file

SPLITS = ("train", "val", "test")
DATASETS_WITH_DOMAINS = ("office31", "office_home")
REQUIRED = ("dataset",)
DEFAULTS = {"split_variant": "libmtl", "image_size": 224, "domains": None, "resources": "resources",
            "dataset_splits": "results/dataset_splits"}


def dataset_module(name: str):
    from .datasets import DATASETS

    return DATASETS[name]


def check_data(data: dict) -> dict:
    settings = data_settings(data, "image_domains", REQUIRED, DEFAULTS)
    if settings["dataset"] not in DATASETS_WITH_DOMAINS:
        raise ValueError(f"data.dataset: the image_domains family reads a dataset whose domains are the tasks, one "
                         f"of {list(DATASETS_WITH_DOMAINS)}; got {settings['dataset']!r}")
    check_integer("image_size", settings["image_size"], 8)
    known = list(dataset_module(settings["dataset"]).DOMAINS)
    domains = settings["domains"]
    if domains is None:
        settings["domains"] = known
    elif (not isinstance(domains, list) or not domains or len(set(domains)) != len(domains)
          or any(d not in known for d in domains)):
        raise ValueError(f"data.domains: expected distinct domains of {settings['dataset']} from {known}, "
                         f"got {domains!r}")
    return settings



def input_files(data: dict) -> list[str]:
    """The dataset's record and split file (the split rule's inputs)."""
    settings = check_data(data)
    return dataset_inputs(settings, settings["dataset"])


def class_of(entry: str) -> str:
    """The class of an image path of the split file: its folder's name (``amazon/images/bike/frame_0001.jpg``)."""
    return Path(entry).parent.name


def load_domain(image_root: Path, entries: list[str], classes: list[str], side: int) -> tuple[np.ndarray, np.ndarray]:
    from .split_building import decode_image

    index = {name: i for i, name in enumerate(classes)}
    images = np.zeros((len(entries), 3, side, side), dtype=np.uint8)
    for i, entry in enumerate(entries):
        path = image_root / entry
        if not path.is_file():
            raise FileNotFoundError(f"{path}: an image the split file lists is missing (rerun the dataset's rule)")
        images[i] = decode_image(path, side, 3)
    labels = np.array([index[class_of(entry)] for entry in entries], dtype=np.int64)
    return images, labels


def write_splits(path: Path | str, data: dict) -> dict:
    from .datasets import read_record
    from .resources import find_dir
    from .splitfile import read_split_file

    settings = check_data(data)
    dataset, side = settings["dataset"], settings["image_size"]
    split_file = read_split_file(dataset_split_file(settings, settings["dataset"]))
    resource_dir = Path(settings["resources"]) / dataset
    record = read_record(settings["resources"], dataset)
    image_root = find_dir(resource_dir, dataset_module(dataset).LAYOUT["image_root"], f"{dataset} images")
    classes = list(split_file["classes"])
    arrays, counts = {}, {}
    for split in SPLITS:
        counts[split] = {}
        for domain in settings["domains"]:
            entries = split_file["splits"][split]["images"][domain]
            images, labels = load_domain(image_root, entries, classes, side)
            arrays[f"{split}_{domain}_images"], arrays[f"{split}_{domain}_labels"] = images, labels
            counts[split][domain] = len(entries)
    meta = {"family": "image_domains", "dataset": dataset, "split_variant": settings["split_variant"],
            "dataset_split_sha256": split_file["sha256"], "exact_split": bool(split_file.get("exact")),
            "deviation": split_file.get("deviation"), "image_size": side, "domains": settings["domains"],
            "classes": classes, "counts": counts,
            "data_source": {dataset: data_source(split_file, record)}}
    return write_arrays(path, arrays, meta)


class ImageDomainTasks:
    """The MTL family view of a split file: per domain (task) and split, uint8 images and labels."""

    splits = SPLITS

    def __init__(self, path: Path | str):
        self.meta, self.split_arrays = read_arrays(path)
        self.task_names = list(self.meta["domains"])

    def arrays(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        return self.split_arrays[f"{split}_{task}_images"], self.split_arrays[f"{split}_{task}_labels"]

    def num_classes(self, task: str) -> int:
        return len(self.meta["classes"])


Tasks = ImageDomainTasks
