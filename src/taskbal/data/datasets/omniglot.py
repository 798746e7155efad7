"""Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets, 20 drawers each.

Layout after ``prepare`` (torchvision's / learn2learn's ``omniglot-py``)::

    <root>/omniglot/omniglot-py/images_background.zip, images_evaluation.zip
    <root>/omniglot/omniglot-py/images_background/<alphabet>/character<NN>/<id>_<drawer>.png   (30 alphabets)
    <root>/omniglot/omniglot-py/images_evaluation/<alphabet>/character<NN>/<id>_<drawer>.png   (20 alphabets)

Checksums: upstream publishes none; the MD5s are torchvision's (``Omniglot.zips_md5``).
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec, extract_once

BASE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
FOLDER = "omniglot-py"
FILES = (
    FileSpec(f"{FOLDER}/images_background.zip", (BASE + "images_background.zip",),
             md5="68d2efa1b9178cc56df9314c21c6e718"),
    FileSpec(f"{FOLDER}/images_evaluation.zip", (BASE + "images_evaluation.zip",),
             md5="6b91aef0f799c5bb55b94e3f2daec811"),
)
MANUAL = None


def prepare(dataset_dir: Path) -> None:
    for spec in FILES:
        archive = dataset_dir / spec.name
        extract_once(archive, archive.parent, archive.name[:-len(".zip")])
