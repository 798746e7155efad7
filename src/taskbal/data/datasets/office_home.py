"""Office-Home (Venkateswara et al. 2017): Art / Clipart / Product / Real World, 65 classes (15,588 images).

Layout after prepare::

    <root>/office_home/OfficeHomeDataset_10072016.zip
    <root>/office_home/OfficeHomeDataset_10072016/{Art,Clipart,Product,Real_World}/<class>/NNNNN.jpg
    <root>/office_home/data_txt/{Art,Clipart,Product,Real_World}_{train,val,test}.txt  (LibMTL's lists)

The archive names the fourth domain Real World; prepare renames it Real_World, which is
what LibMTL's lists (Real_World/<class>/<file>.jpg <label>) use. Checksums: none published for
the archive (recorded when placed); LibMTL lists pinned by commit and SHA-256.

Protocol (:func:`build_splits`, shared with Office-31 in :mod:`._office`): LibMTL's 60 / 20 / 20
image lists per domain when ``data_txt/<domain>_<split>.txt`` is present (exact); otherwise a seeded
60 / 20 / 20 split stratified by (domain, class) (approximation).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..download import FileSpec, extract_once
from ._libmtl import split_lists
from ._office import build_office_splits

DOMAINS = ("Art", "Clipart", "Product", "Real_World")
ARCHIVE = FileSpec("OfficeHomeDataset_10072016.zip",
                   ("https://drive.google.com/uc?export=download&id=0B81rNlvomiwed0V1YUxQdC1uOTg",), manual=True)
LISTS = split_lists("office-home", (
    ("Art_train.txt", "998309f57ee17997d5facfe3f8b3dd83f0464ca77ef4a4402ff4e5dd1f993de9", 35145),
    ("Art_val.txt", "ab97759a61d6cf4a38ec95a88dea7ad3928ff7acd18d5c8b86141b6ef53434fb", 11374),
    ("Art_test.txt", "a37a26252832ba9a7fb8cbaef4fbbe13a5c967fe85fd536afcef4a3f355c310c", 12945),
    ("Clipart_train.txt", "38b42c780827d5145a1026643063da5a8a78446046943d0921218f374929d9be", 73418),
    ("Clipart_val.txt", "5a08d968c1c123ed13b155135dad7cfc1b4f60e6f71bf76f63a0de4e12ecec97", 23931),
    ("Clipart_test.txt", "7ecc7f43cd594f3a52d83b12d7eff932af8ac6d0cc46c5520561fd97554b5fe9", 26099),
    ("Product_train.txt", "d754516489f20a5562e4032861ffbaf7311461425dc9465d4368a28123d936ea", 75560),
    ("Product_val.txt", "55e783b3abb1dd2f2b4570d40f68009a457fb99b963d07182c68e5665a980a06", 24654),
    ("Product_test.txt", "600910868ec4e5604c56619623c01ee1e12d057efad4f87bdb3548c88c026c82", 27071),
    ("Real_World_train.txt", "bd9365b8e1171e21774a70cec104f1d23aa0d5d475e3e5df21c0f865d920c1bb", 82029),
    ("Real_World_val.txt", "6d35d64e3be11e313b422903ddfd13df09ff43970a75762a4b1eaf48a754b798", 26840),
    ("Real_World_test.txt", "08e84d4c9a93273db0a21fce14c059ee9cbf2a761fad0a63337ff56bdf3b7af6", 29329),
))
FILES = (ARCHIVE,) + LISTS
IMAGES = "OfficeHomeDataset_10072016"
MANUAL = """\
Office-Home must be downloaded by hand (form and Google Drive).
From https://www.hemanthdv.org/officeHomeDataset.html accept the terms and download
OfficeHomeDataset_10072016.zip (about 1.1 GB; do not unpack it)."""

# The split files the workflow builds (``snakemake splits_office_home``; config ``dataset_splits``).
SPLIT_VARIANTS = {"libmtl": {}}

# Where build_splits finds the images: the image root (LibMTL's list paths are relative to it) and each domain.
LAYOUT = {"libmtl": "office-home", "image_root": [IMAGES, "."],
          "domains": {"Art": ["Art"], "Clipart": ["Clipart"], "Product": ["Product"],
                      "Real_World": ["Real_World", "Real World"]}}


def prepare(dataset_dir: Path) -> None:
    root = dataset_dir / IMAGES
    if not (root / "Real_World").is_dir():
        if not (root / "Real World").is_dir():
            extract_once(dataset_dir / ARCHIVE.name, dataset_dir, f"{IMAGES}/Art")
        if (root / "Real World").is_dir():
            os.replace(root / "Real World", root / "Real_World")


def build_splits(resource_dir, out_path, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict:
    return build_office_splits("office_home", LAYOUT, resource_dir, out_path, tuple(fractions), seed)

