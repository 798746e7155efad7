"""mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 class split 64/16/20), 84x84 RGB.

The learn2learn pickles: each ``mini-imagenet-cache-<split>.pkl`` is a dict with ``image_data``
(uint8 [n, 84, 84, 3]) and ``class_dict`` (WordNet id -> list of row indices), 600 images per class.
Layout (``learn2learn.vision.datasets.MiniImagenet(<root>/mini_imagenet)`` reads it as is)::

    <root>/mini_imagenet/mini-imagenet-cache-{train,validation,test}.pkl

Checksums: none published (recorded on first download; see ``.verified``).
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec

_DROPBOX = {"train": "https://www.dropbox.com/s/9g8c6w345s2ek03/mini-imagenet-cache-train.pkl?dl=1",
            "validation": "https://www.dropbox.com/s/ip1b7se3gij3r1b/mini-imagenet-cache-validation.pkl?dl=1",
            "test": "https://www.dropbox.com/s/ye9jeb5tyz0x01b/mini-imagenet-cache-test.pkl?dl=1"}
SPLITS = ("train", "validation", "test")
FILES = tuple(FileSpec(f"mini-imagenet-cache-{split}.pkl",
                       (f"https://zenodo.org/record/7978538/files/mini-imagenet-cache-{split}.pkl", _DROPBOX[split]))
              for split in SPLITS)
MANUAL = None


def prepare(dataset_dir: Path) -> None:
    """Nothing to unpack: the pickles are read directly."""
