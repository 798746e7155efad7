"""mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 class split 64/16/20), 84x84 RGB.

The learn2learn pickles: each ``mini-imagenet-cache-<split>.pkl`` is a dict with ``image_data``
(uint8 [n, 84, 84, 3]) and ``class_dict`` (WordNet id -> list of row indices), 600 images per class.
Layout (``learn2learn.vision.datasets.MiniImagenet(<root>/mini_imagenet)`` reads it as is)::

    <root>/mini_imagenet/mini-imagenet-cache-{train,validation,test}.pkl

Checksums: none published (recorded on first download; see ``.verified``).

Protocol (:func:`build_splits`): Ravi & Larochelle (2017) 64 / 16 / 20 classes — the split used by
MAML and most few-shot papers, 600 images per class — read from the pickles, from Ravi &
Larochelle's ``{train,val,test}.csv`` lists (``filename,label``) or from ``{train,val,test}/<wnid>/``
class folders, and checked against :data:`STANDARD_CLASSES` (the classes the csv lists and the
pickles carry), so a renamed, incomplete or differently split copy is reported instead of silently
used. Exact.
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec
from ..resources import find_dir, find_file
from ..split_building import (
    ANY_SHOT,
    check_classes,
    decode_image,
    episode_sets,
    eval_episodes,
    finish,
    image_files,
    image_from_array,
    load_pickle,
    subdirs,
)
from ..splitfile import SPLITS as SPLIT_NAMES

_DROPBOX = {"train": "https://www.dropbox.com/s/9g8c6w345s2ek03/mini-imagenet-cache-train.pkl?dl=1",
            "validation": "https://www.dropbox.com/s/ip1b7se3gij3r1b/mini-imagenet-cache-validation.pkl?dl=1",
            "test": "https://www.dropbox.com/s/ye9jeb5tyz0x01b/mini-imagenet-cache-test.pkl?dl=1"}
SPLITS = ("train", "validation", "test")
FILES = tuple(FileSpec(f"mini-imagenet-cache-{split}.pkl",
                       (f"https://zenodo.org/record/7978538/files/mini-imagenet-cache-{split}.pkl", _DROPBOX[split]))
              for split in SPLITS)
MANUAL = None

# The split files the workflow builds (``snakemake splits_mini_imagenet``; config ``dataset_splits``).
# TOW: 600 test tasks (5-way 1-shot); Nash-GBML: 5-way 5-shot (600 per trial); SIMOL: 1,000 test tasks;
# TOW any-shot: 3,000 test tasks (5-way, k ~ U{1..50}, 15 queries).
SPLIT_VARIANTS = {"5way1shot": eval_episodes(5, 1, 600, val=100), "5way5shot": eval_episodes(5, 5, 600, val=100),
                  "5way1shot_1000": eval_episodes(5, 1, 1000), "5way5shot_1000": eval_episodes(5, 5, 1000),
                  "anyshot": eval_episodes(5, ANY_SHOT, 3000)}

# Ravi & Larochelle (2017): 64 meta-train / 16 meta-validation / 20 meta-test ImageNet WordNet ids.
STANDARD_CLASSES = {
    "train": """
n01532829 n01558993 n01704323 n01749939 n01770081 n01843383 n01910747 n02074367 n02089867 n02091831
n02101006 n02105505 n02108089 n02108551 n02108915 n02111277 n02113712 n02120079 n02165456 n02457408
n02606052 n02687172 n02747177 n02795169 n02823428 n02966193 n03017168 n03047690 n03062245 n03207743
n03220513 n03337140 n03347037 n03400231 n03476684 n03527444 n03676483 n03838899 n03854065 n03888605
n03908618 n03924679 n03998194 n04067472 n04243546 n04251144 n04258138 n04275548 n04296562 n04389033
n04435653 n04443257 n04509417 n04515003 n04596742 n04604644 n04612504 n06794110 n07584110 n07697537
n07747607 n09246464 n13054560 n13133613
""".split(),
    "val": """
n01855672 n02091244 n02114548 n02138441 n02174001 n02950826 n02971356 n02981792 n03075370 n03417042
n03535780 n03584254 n03770439 n03773504 n03980874 n09256479
""".split(),
    "test": """
n01930112 n01981276 n02099601 n02110063 n02110341 n02116738 n02129165 n02219486 n02443484 n02871525
n03127925 n03146219 n03272010 n03544143 n03775546 n04146614 n04149813 n04418357 n04522168 n07613480
""".split(),
}


def prepare(dataset_dir: Path) -> None:
    """Nothing to unpack: the pickles are read directly."""


def build_splits(resource_dir, out_path, episodes: dict | None = None) -> dict:
    """Ravi & Larochelle 64 / 16 / 20 classes from the pickles, the csv lists or class folders."""
    root = Path(resource_dir)
    splits, source = {}, None
    pkl_names = {"train": ["mini-imagenet-cache-train.pkl"],
                 "val": ["mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"],
                 "test": ["mini-imagenet-cache-test.pkl"]}
    csv_names = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
    if find_file(root, pkl_names["train"], "mini-ImageNet", required=False):
        source = "pickle: mini-imagenet-cache-{train,validation,test}.pkl class_dict (row indices into image_data)"
        for split in SPLIT_NAMES:
            path = find_file(root, pkl_names[split], f"mini-ImageNet {split} pickle")
            data = load_pickle(path)
            if not isinstance(data, dict) or "class_dict" not in data:
                raise ValueError(f"{path}: expected a dict with 'class_dict' and 'image_data'")
            images = {str(k): sorted(int(i) for i in v) for k, v in data["class_dict"].items()}
            splits[split] = {"classes": sorted(images), "images": images}
    elif all((root / name).is_file() for name in csv_names.values()):
        source = "csv: {train,val,test}.csv (filename,label) of Ravi & Larochelle"
        for split in SPLIT_NAMES:
            path = root / csv_names[split]
            lines = path.read_text().splitlines()
            if not lines or lines[0].strip().lower() != "filename,label":
                raise ValueError(f"{path}: expected the header 'filename,label'")
            images: dict[str, list[str]] = {}
            for number, line in enumerate(lines[1:], start=2):
                if not line.strip():
                    continue
                parts = line.strip().split(",")
                if len(parts) != 2:
                    raise ValueError(f"{path}:{number}: expected 'filename,label', got {line!r}")
                images.setdefault(parts[1], []).append(parts[0])
            splits[split] = {"classes": sorted(images), "images": {k: sorted(v) for k, v in images.items()}}
    else:
        source = "folders: {train,val,test}/<wnid>/*.jpg"
        for split in SPLIT_NAMES:
            base = find_dir(root, [split], f"mini-ImageNet {split} folder (or the pickles / csv lists)")
            images = {c: image_files(base / c) for c in subdirs(base)}
            splits[split] = {"classes": sorted(images), "images": images}
    check_classes({s: splits[s]["classes"] for s in SPLIT_NAMES}, STANDARD_CLASSES, f"mini-ImageNet ({root})")
    return finish(out_path, "mini_imagenet", "Ravi & Larochelle (2017) 64/16/20 classes", True,
                  {"episodes": episodes or {}}, splits, episodes=episode_sets(splits, episodes),
                  extra={"source": source, "complete": all(len(v) == 600 for p in splits.values()
                                                           for v in p["images"].values())})


def load_images(split_file: dict, resource_dir, split: str, side: int | None = None):
    """One split's images as ``(uint8 [n, 3, side, side], class_sizes)``, from whichever source the split file names.

    See :func:`taskbal.data.episodes.split_images`; ``side`` defaults to 84.
    """
    import pickle

    import numpy as np
    import torch

    root = Path(resource_dir)
    part = split_file["splits"][split]
    side = side or 84
    rows, sizes = [], []
    if split_file["source"].startswith("pickle"):
        file = {"train": "train", "val": "validation", "test": "test"}[split]
        path = find_file(root, [f"mini-imagenet-cache-{file}.pkl", f"mini-imagenet-cache-{split}.pkl"],
                         f"mini-ImageNet {split} pickle")
        with open(path, "rb") as handle:
            data = pickle.load(handle)["image_data"]
        for cls in part["classes"]:
            picked = np.asarray(data)[part["images"][cls]]
            rows.extend(decode_image(image_from_array(a), side, 3) if a.shape[0] != side else a.transpose(2, 0, 1)
                        for a in picked)
            sizes.append(len(picked))
        return torch.from_numpy(np.stack(rows)), sizes
    folder = root / "images" if split_file["source"].startswith("csv") else root / split
    for cls in part["classes"]:
        for f in part["images"][cls]:
            path = folder / f if (folder / f).is_file() else folder / cls / f
            rows.append(decode_image(path, side, 3))
        sizes.append(len(part["images"][cls]))
    return torch.from_numpy(np.stack(rows)), sizes
