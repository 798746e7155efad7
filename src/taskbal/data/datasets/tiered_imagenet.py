"""tiered-ImageNet (Ren et al. 2018): 608 classes in 34 categories, split 351/97/160 classes.

The learn2learn pickles (``<split>_images_png.pkl``: list of PNG-encoded 84x84 images;
``<split>_labels.pkl``: dict with ``label_specific``, ``label_general``, ``label_specific_str``,
``label_general_str``). Layout (``learn2learn.vision.datasets.TieredImagenet(<root>/tiered_imagenet)``)::

    <root>/tiered_imagenet/tiered-imagenet/{train,val,test}_{images_png,labels}.pkl
    <root>/tiered_imagenet/tiered-imagenet/{class_names,synsets}.txt

Checksums: none published (recorded on first download). About 12 GB.
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec

_ZENODO = "https://zenodo.org/record/7978538/files/tiered-imagenet-"
NAMES = ("class_names.txt", "synsets.txt") + tuple(
    f"{split}_{kind}.pkl" for split in ("train", "val", "test") for kind in ("images_png", "labels"))
FILES = tuple(FileSpec(f"tiered-imagenet/{name}", (_ZENODO + name,)) for name in NAMES)
MANUAL = None


def prepare(dataset_dir: Path) -> None:
    """Nothing to unpack: the pickles are read directly."""
