"""NYUv2 (Silberman et al. 2012) as pre-processed by MTAN / LibMTL: 795 train + 654 val images, 288x384,
with 13-class segmentation, depth and surface normals.

Layout after ``prepare`` (what LibMTL's ``NYUv2(root)`` reads)::

    <root>/nyuv2/nyuv2.zip
    <root>/nyuv2/nyuv2/{train,val}/{image,label,depth,normal}/<i>.npy

``image`` float32 [288,384,3], ``label`` float32 [288,384] (-1 = ignore), ``depth`` [288,384,1],
``normal`` [288,384,3]. Downloaded as the zip Dropbox makes of the MTAN authors' shared folder;
checksums: none published (recorded when first fetched).

Protocol (:func:`build_splits`): LibMTL / MTAN preprocessed data — the 795 ``train/`` scenes for
training and the 654 ``val/`` scenes as the test set, no validation split (as in LibMTL). Exact.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..download import FileSpec, UnsafeArchiveError, safe_extract
from ..resources import find_dir
from ..split_building import finish

ARCHIVE = FileSpec("nyuv2.zip", ("https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=1",))
FILES = (ARCHIVE,)
FOLDER = "nyuv2"
PARTS = ("image", "label", "depth", "normal")
MANUAL = """\
If the automatic download of the Dropbox shared folder (as a zip, ``?dl=1``) fails:
open https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0 , choose "Download"
(the whole folder, as a zip of train/ and val/ with image, label, depth, normal .npy files; about
3 GB) and save it as nyuv2.zip (do not unpack it)."""

# The split files the workflow builds (``snakemake splits_nyuv2``; config ``dataset_splits``).
SPLIT_VARIANTS = {"libmtl": {}}


def prepare(dataset_dir: Path) -> None:
    target = dataset_dir / FOLDER
    if (target / "train" / "image").is_dir() and (target / "val" / "image").is_dir():
        return
    scratch = dataset_dir / ".nyuv2-unpack"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        safe_extract(dataset_dir / ARCHIVE.name, scratch)
        found = [p.parent for p in sorted(scratch.rglob("train")) if (p / "image").is_dir()]
        if not found or not (found[0] / "val" / "image").is_dir():
            raise UnsafeArchiveError(f"{dataset_dir / ARCHIVE.name}: no train/image and val/image folders inside")
        if target.exists():
            shutil.rmtree(target)
        os.replace(found[0], target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_splits(resource_dir, out_path) -> dict:
    """MTAN/LibMTL NYUv2: ``train/`` (795) for training, ``val/`` (654) as the test set."""
    root = Path(resource_dir)
    if not (root / "train").is_dir():
        root = find_dir(root, ["nyuv2", "nyuv2/nyuv2"], "NYUv2 train/ and val/ folders")
    splits = {}
    for split, folder in (("train", "train"), ("test", "val")):
        indices = None
        for modality in PARTS:
            base = find_dir(root, [f"{folder}/{modality}"], f"NYUv2 {folder}/{modality}")
            found = set()
            for f in base.iterdir():
                match = re.fullmatch(r"(\d+)\.npy", f.name)
                if match:
                    found.add(int(match.group(1)))
            if indices is None:
                indices = found
            elif found != indices:
                raise ValueError(f"{base}: the scene indices differ from {folder}/{PARTS[0]} "
                                 f"(e.g. {sorted(found ^ indices)[:5]})")
        if indices != set(range(len(indices))):
            raise ValueError(f"{root / folder}: scene files are not numbered 0..{len(indices) - 1}")
        splits[split] = {"folder": folder, "images": sorted(indices)}
    splits["val"] = {"folder": None, "images": []}
    counts = {s: {"images": len(v["images"])} for s, v in splits.items()}
    return finish(out_path, "nyuv2", "LibMTL/MTAN: train/ (795) train, val/ (654) test, no validation split", True,
                  {}, splits, unit="image", counts=counts,
                  extra={"complete": (len(splits["train"]["images"]), len(splits["test"]["images"])) == (795, 654)})
