"""CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species (the any-shot test set).

Layout after ``prepare`` (the archive's own)::

    <root>/cub/CUB_200_2011.tgz
    <root>/cub/CUB_200_2011/images/<NNN.Class_name>/<image>.jpg
    <root>/cub/CUB_200_2011/{images.txt, classes.txt, image_class_labels.txt, train_test_split.txt,
                             bounding_boxes.txt}

Checksum: SHA-256 and size as listed by torchvision's dataset prototypes (the MD5
``97eceeb196236b17998738112f37df78`` is the one most loaders use).

Protocol (:func:`build_splits`): the standard 100 / 50 / 50 class split of Chen et al. (2019) —
classes in sorted folder order, index i -> train if i even, val if i = 1 (mod 4), test if i = 3
(mod 4). TOW tests on 50 CUB classes after Lee et al. (2020), who do not list them; these are the 50
test classes of the standard split.
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec, extract_once
from ..resources import find_dir
from ..split_building import ANY_SHOT, decode_image, episode_sets, eval_episodes, finish, image_files, subdirs
from ..splitfile import SPLITS

FILES = (
    FileSpec("CUB_200_2011.tgz",
             ("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
              "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz"),
             sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
             md5="97eceeb196236b17998738112f37df78", size=1150585339),
)
MANUAL = None

# The split files the workflow builds (``snakemake splits_cub``; config ``dataset_splits``).
# TOW's any-shot test on CUB (models trained on mini-ImageNet): 3,000 tasks over the 50 test classes.
SPLIT_VARIANTS = {"anyshot": eval_episodes(5, ANY_SHOT, 3000)}


def prepare(dataset_dir: Path) -> None:
    extract_once(dataset_dir / FILES[0].name, dataset_dir, "CUB_200_2011/images.txt")


def build_splits(resource_dir, out_path, episodes: dict | None = None) -> dict:
    """CUB-200-2011 100 / 50 / 50 classes (Chen et al. 2019 rule on the sorted class folders)."""
    base = find_dir(Path(resource_dir), ["CUB_200_2011/images", "images"], "CUB-200-2011 images")
    classes = subdirs(base)
    if len(classes) < 4:
        raise ValueError(f"{base}: expected the 200 class folders, found {len(classes)}")
    listed = base.parent / "classes.txt"
    if listed.is_file():  # the archive's own class list (``<id> <NNN.Name>``) must match the folders
        names = [line.split()[1] for line in listed.read_text().splitlines() if line.strip()]
        if names != classes:
            raise ValueError(f"{listed}: the class list does not match the folders of {base}")
    rule = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1, "test": lambda i: i % 4 == 3}
    splits = {}
    for split in SPLITS:
        chosen = [c for i, c in enumerate(classes) if rule[split](i)]
        splits[split] = {"classes": chosen, "images": {c: image_files(base / c) for c in chosen}}
    return finish(out_path, "cub", "Chen et al. (2019) 100/50/50 classes: sorted index i even -> train, "
                  "i%4==1 -> val, i%4==3 -> test", True, {"episodes": episodes or {}}, splits,
                  episodes=episode_sets(splits, episodes),
                  extra={"note": "TOW tests on 50 CUB classes after Lee et al. (2020), who do not list them; "
                                 "these are the 50 test classes of the standard split",
                         "complete": len(classes) == 200 and sum(
                             len(p["images"][c]) for p in splits.values() for c in p["classes"]) == 11788})


def load_images(split_file: dict, resource_dir, split: str, side: int | None = None):
    """One split's images as ``(uint8 [n, 3, side, side], class_sizes)``; see
    :func:`taskbal.data.episodes.split_images`. ``side`` defaults to 84."""
    import numpy as np
    import torch

    root = Path(resource_dir)
    part = split_file["splits"][split]
    side = side or 84
    rows, sizes = [], []
    base = find_dir(root, ["CUB_200_2011/images", "images"], "CUB-200-2011 images")
    for cls in part["classes"]:
        rows.extend(decode_image(base / cls / f, side, 3) for f in part["images"][cls])
        sizes.append(len(part["images"][cls]))
    return torch.from_numpy(np.stack(rows)), sizes
