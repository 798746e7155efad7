"""CUB-200-2011 (Wah et al. 2011): 11,788 images of 200 bird species (the any-shot test set).

Layout after ``prepare`` (the archive's own)::

    <root>/cub/CUB_200_2011.tgz
    <root>/cub/CUB_200_2011/images/<NNN.Class_name>/<image>.jpg
    <root>/cub/CUB_200_2011/{images.txt, classes.txt, image_class_labels.txt, train_test_split.txt,
                             bounding_boxes.txt}

Checksum: SHA-256 and size as listed by torchvision's dataset prototypes (the MD5
``97eceeb196236b17998738112f37df78`` is the one most loaders use).
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec, extract_once

FILES = (
    FileSpec("CUB_200_2011.tgz",
             ("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
              "https://s3.amazonaws.com/fast-ai-imageclas/CUB_200_2011.tgz"),
             sha256="0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
             md5="97eceeb196236b17998738112f37df78", size=1150585339),
)
MANUAL = None


def prepare(dataset_dir: Path) -> None:
    extract_once(dataset_dir / FILES[0].name, dataset_dir, "CUB_200_2011/images.txt")
