"""CelebA (Liu et al. 2015): 202,599 aligned faces, 40 binary attributes, official partition.

Layout after ``prepare`` (torchvision's, ``torchvision.datasets.CelebA(<root>/celeba)``)::

    <root>/celeba/celeba/img_align_celeba.zip
    <root>/celeba/celeba/img_align_celeba/<000001..202599>.jpg
    <root>/celeba/celeba/{list_attr_celeba, list_eval_partition, identity_CelebA, list_bbox_celeba,
                          list_landmarks_align_celeba}.txt

The files sit in the authors' Google Drive folder, which cannot be fetched by a plain HTTP client
(quota and confirmation pages), hence the manual step. Checksums: the MD5s torchvision lists.

Protocol (:func:`build_splits`): the official ``list_eval_partition.txt`` (0 train, 1 val, 2 test:
162,770 / 19,867 / 19,962 images). Exact.
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec, extract_once
from ..resources import find_file
from ..split_building import finish
from ..splitfile import SPLITS

FOLDER = "celeba"
_DRIVE = "https://drive.google.com/uc?export=download&id="
_LIST = (  # Google Drive id, MD5 (torchvision), file
    ("0B7EVK8r0v71pZjFTYXZWM3FlRnM", "00d2c5bc6d35e252742224ab0c1e8fcb", "img_align_celeba.zip"),
    ("0B7EVK8r0v71pblRyaVFSWGxPY0U", "75e246fa4810816ffd6ee81facbd244c", "list_attr_celeba.txt"),
    ("1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", "32bd1bd63d3c78cd57e08160ec5ed1e2", "identity_CelebA.txt"),
    ("0B7EVK8r0v71pbThiMVRxWXZ4dU0", "00566efa6fedff7a56946cd1c10f1c16", "list_bbox_celeba.txt"),
    ("0B7EVK8r0v71pd0FJY3Blby1HUTQ", "cc24ecafdb5b50baae59b03474781f8c", "list_landmarks_align_celeba.txt"),
    ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", "d32c9cbf5e040fd4025c592c306e6668", "list_eval_partition.txt"),
)
FILES = tuple(FileSpec(f"{FOLDER}/{name}", (_DRIVE + drive_id,), md5=md5, manual=True) for drive_id, md5, name in _LIST)
MANUAL = """\
CelebA must be downloaded by hand (Google Drive).
From https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html -> "Align&Cropped Images" (Google Drive folder
CelebA/Img/img_align_celeba.zip) and CelebA/Anno/ (list_attr_celeba.txt, identity_CelebA.txt,
list_bbox_celeba.txt, list_landmarks_align_celeba.txt) and CelebA/Eval/list_eval_partition.txt,
download these six files (img_align_celeba.zip is 1.4 GB; do not unzip it)."""

# The split files the workflow builds (``snakemake splits_celeba``; config ``dataset_splits``).
SPLIT_VARIANTS = {"official": {}}
SIZES = {"train": 162770, "val": 19867, "test": 19962}


def prepare(dataset_dir: Path) -> None:
    extract_once(dataset_dir / FOLDER / "img_align_celeba.zip", dataset_dir / FOLDER, "img_align_celeba")


def build_splits(resource_dir, out_path) -> dict:
    """CelebA's official partition (0 train, 1 val, 2 test) from ``list_eval_partition.txt``."""
    root = Path(resource_dir)
    path = find_file(root,
                     ["list_eval_partition.txt", "celeba/list_eval_partition.txt", "Eval/list_eval_partition.txt"],
                     "CelebA list_eval_partition.txt")
    names = {"0": "train", "1": "val", "2": "test"}
    parts = {s: [] for s in SPLITS}
    seen = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in names:
            raise ValueError(f"{path}:{number}: expected '<image> <0|1|2>', got {line!r}")
        if fields[0] in seen:
            raise ValueError(f"{path}:{number}: image {fields[0]} listed twice")
        seen.add(fields[0])
        parts[names[fields[1]]].append(fields[0])
    splits = {s: {"images": sorted(v)} for s, v in parts.items()}
    counts = {s: {"images": len(v)} for s, v in parts.items()}
    full = {s: counts[s]["images"] for s in SPLITS} == SIZES
    return finish(out_path, "celeba", "official partition (list_eval_partition.txt)", True, {}, splits,
                  unit="image", counts=counts, extra={"complete": full})
