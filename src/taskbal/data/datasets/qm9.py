"""QM9 (Ramakrishnan et al. 2014): 130,831 molecules with 19 regression targets (11 used by the thesis).

Layout after ``prepare`` (PyTorch Geometric's ``QM9(<root>/qm9)`` raw layout)::

    <root>/qm9/raw/qm9.zip
    <root>/qm9/raw/{gdb9.sdf, gdb9.sdf.csv, uncharacterized.txt}
    <root>/qm9/random_split.t          (LibMTL's fixed random split, a torch-saved index tensor)

Checksums: none published for the raw files (recorded on first download); LibMTL's split file
pinned by commit and SHA-256.
"""
from __future__ import annotations

from pathlib import Path

from ..download import FileSpec, extract_once
from ._libmtl import COMMIT, RAW

FILES = (
    FileSpec("raw/qm9.zip", ("https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip",)),
    FileSpec("raw/uncharacterized.txt", ("https://ndownloader.figshare.com/files/3195404",)),
    FileSpec("random_split.t", (f"{RAW}qm9/random_split.t",),
             sha256="cccf1a47c31eae0d262fd2ddd9c009ed2cd070053376ef521c522d9b2d69a7a7", size=1047346,
             note=f"LibMTL {COMMIT[:7]}"),
)
MANUAL = None


def prepare(dataset_dir: Path) -> None:
    extract_once(dataset_dir / "raw" / "qm9.zip", dataset_dir / "raw", "gdb9.sdf")
