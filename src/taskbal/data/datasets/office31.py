"""Office-31 (Saenko et al. 2010): Amazon / DSLR / Webcam, 31 classes each (4,110 images).

Layout after prepare::

    <root>/office31/domain_adaptation_images.tar.gz
    <root>/office31/office-31/{amazon,dslr,webcam}/images/<class>/frame_NNNN.jpg
    <root>/office31/data_txt/{amazon,dslr,webcam}_{train,val,test}.txt     (LibMTL's 60/20/20 lists)

LibMTL's list lines are amazon/images/<class>/<file>.jpg <label>, relative to office-31/.
Checksums: the image archive has none published (recorded when placed); the LibMTL lists are pinned
by commit and SHA-256.

Protocol (:func:`build_splits`, shared with Office-Home in :mod:`._office`): LibMTL's 60 / 20 / 20
image lists per domain when ``data_txt/<domain>_<split>.txt`` is present (exact); otherwise a seeded
60 / 20 / 20 split stratified by (domain, class) (approximation).
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec, extract_once
from ._libmtl import split_lists
from ._office import build_office_splits

DOMAINS = ("amazon", "dslr", "webcam")
ARCHIVE = FileSpec("domain_adaptation_images.tar.gz",
                   ("https://drive.google.com/uc?export=download&id=0B4IapRTv9pJ1WGZVd1VDMmhwdlE",), manual=True)
LISTS = split_lists("office-31", (
    ("amazon_train.txt", "aef55224b4fad05355311f6c66756d550a484e678ac03ac593e90431661b729f", 69795),
    ("amazon_val.txt", "e171e1f51660af864c9f6c81d42003ce49a91c1bfd6217301cd96eb59653ab05", 22938),
    ("amazon_test.txt", "13429a0a14d8e35d09367d4c7980b4709c1edfc19d49b5052d44be3b0cc88a02", 24303),
    ("dslr_train.txt", "c669f2636d27bf2ad9b5f841f2e27747c264041d8ab9a2c0cda8225b707df6d1", 11445),
    ("dslr_val.txt", "b4e3fec9c8a08097278ed3e888c7d6e1672b124395707272908cb9b080d54169", 3551),
    ("dslr_test.txt", "b4769a765a31083bc6cc1b4349d91fd46e6e85d5e53311619cf8360ce7c7fdc8", 4843),
    ("webcam_train.txt", "117417addef21e79d48266e95290f5914c5ebd7b637c511e67d9acceeb038715", 19373),
    ("webcam_val.txt", "dedd7e53fd5ebadc434cd1e377b60ac5978d628a208b0ec791063d01bfe54982", 6193),
    ("webcam_test.txt", "5e0cd750cb090a7684584ed17d34d503fa6302e4db1db0e8f1f20f62f89d5998", 7489),
))
FILES = (ARCHIVE,) + LISTS
IMAGES = "office-31"
MANUAL = """\
Office-31 must be downloaded by hand (Google Drive).
From https://faculty.cc.gatech.edu/~judy/domainadapt/ ("Office dataset", link to Google Drive
file id 0B4IapRTv9pJ1WGZVd1VDMmhwdlE) download domain_adaptation_images.tar.gz (about 77 MB; do not
unpack it)."""

# The split files the workflow builds (``snakemake splits_office31``; config ``dataset_splits``).
SPLIT_VARIANTS = {"libmtl": {}}

# Where build_splits finds the images: the image root (LibMTL's list paths are relative to it) and each domain.
LAYOUT = {"libmtl": "office-31", "image_root": [IMAGES, "."],
          "domains": {"amazon": ["amazon/images"], "dslr": ["dslr/images"], "webcam": ["webcam/images"]}}


def prepare(dataset_dir: Path) -> None:
    extract_once(dataset_dir / ARCHIVE.name, dataset_dir / IMAGES, "amazon/images")


def build_splits(resource_dir, out_path, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict:
    return build_office_splits("office31", LAYOUT, resource_dir, out_path, tuple(fractions), seed)

