"""NYUv2's scene understanding as three dense tasks on the same images (thesis Tables 3.4 and 5.2, Figure
5.2 (c)): 13-class semantic segmentation, depth estimation and surface normal prediction.

The family reads NYUv2's split file (``results/dataset_splits/nyuv2/libmtl.json``: MTAN / LibMTL's 795
training and 654 test scenes, no validation split) and the pre-processed ``.npy`` files under
``resources/nyuv2/nyuv2/{train,val}/{image,label,depth,normal}/`` (288 × 384), and writes one ``.npz``
with, per split, the images (float16 [n, 3, H, W], values as MTAN stored them, in [0, 1]), the labels
(int8 [n, H, W], −1 = no label), the depths (float16 [n, 1, H, W], 0 = none) and the normals (float16
[n, 3, H, W], 0 = none). ``max_images`` keeps the first n scenes of every split (a smaller build; the
sidecar says so). There is no augmentation (our choice; LibMTL's NYUv2 example can add random scale
crops).

``data`` keys (defaults): split_variant (libmtl), max_images (null), resources, dataset_splits.

The MTL family contract (taskbal/mtl/data.py): ``task_names`` segmentation, depth, normal; splits train
and test; ``shared_inputs``; ``objective(task)``: the task's kind for taskbal/mtl/objectives.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_arrays, write_arrays
from .checks import check_integer, data_settings
from .resources import data_source, dataset_inputs, dataset_split_file

SPLITS = ("train", "test")
DATASET = "nyuv2"
TASKS = {"segmentation": ("label", "segmentation"), "depth": ("depth", "depth"), "normal": ("normal", "normals")}
CLASSES = 13
DEFAULTS = {"split_variant": "libmtl", "max_images": None, "resources": "resources",
            "dataset_splits": "results/dataset_splits"}


def check_data(data: dict) -> dict:
    settings = data_settings(data, "nyuv2_tasks", (), DEFAULTS)
    if settings["max_images"] is not None:
        check_integer("max_images", settings["max_images"], 1)
    return settings


def input_files(data: dict) -> list[str]:
    """The dataset's record and split file (the split rule's inputs)."""
    return dataset_inputs(check_data(data), DATASET)


def channels_first(array: np.ndarray) -> np.ndarray:
    """[H, W, C] → [C, H, W]; a map without channels stays [H, W]."""
    return np.moveaxis(array, -1, 0) if array.ndim == 3 else array


def load_modality(folder: Path, modality: str, scenes: list[int]) -> np.ndarray:
    """One modality of the scenes, channels first, stacked."""
    return np.stack([channels_first(np.load(folder / modality / f"{i}.npy")) for i in scenes])


def write_splits(path: Path | str, data: dict) -> dict:
    from .datasets import read_record
    from .resources import find_dir
    from .splitfile import read_split_file

    settings = check_data(data)
    split_file = read_split_file(dataset_split_file(settings, DATASET))
    resource_dir = Path(settings["resources"]) / DATASET
    record = read_record(settings["resources"], DATASET)
    root = find_dir(resource_dir, ["nyuv2", "."], "NYUv2 train/ and val/ folders")
    arrays, counts = {}, {}
    for split in SPLITS:
        part = split_file["splits"][split]
        scenes = part["images"][:settings["max_images"]]
        folder = root / part["folder"]
        arrays[f"{split}_image"] = load_modality(folder, "image", scenes).astype(np.float16)
        arrays[f"{split}_label"] = load_modality(folder, "label", scenes).round().astype(np.int8)
        arrays[f"{split}_depth"] = load_modality(folder, "depth", scenes).astype(np.float16)
        arrays[f"{split}_normal"] = load_modality(folder, "normal", scenes).astype(np.float16)
        counts[split] = len(scenes)
    meta = {"family": "nyuv2_tasks", "dataset": DATASET, "split_variant": settings["split_variant"],
            "dataset_split_sha256": split_file["sha256"], "counts": counts, "max_images": settings["max_images"],
            "image_shape": list(arrays["train_image"].shape[1:]),
            "data_source": {DATASET: data_source(split_file, record, settings["max_images"] and
                                                 f"the first {settings['max_images']} scenes of each split")}}
    return write_arrays(path, arrays, meta)


class NYUv2Tasks:
    """The MTL family view: three dense tasks on the same scenes."""

    splits = SPLITS
    shared_inputs = True
    task_names = list(TASKS)

    def __init__(self, path: Path | str):
        self.meta, self.split_arrays = read_arrays(path)

    def arrays(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        target = self.split_arrays[f"{split}_{TASKS[task][0]}"]
        return self.split_arrays[f"{split}_image"], target.astype(np.int64 if task == "segmentation" else np.float32)

    def objective(self, task: str) -> dict:
        return {"kind": TASKS[task][1], "classes": CLASSES if task == "segmentation" else None}


Tasks = NYUv2Tasks
