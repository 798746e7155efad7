"""QM9 (Ramakrishnan et al. 2014): 130,831 molecules with 19 regression targets (11 used by the thesis).

Layout after ``prepare`` (PyTorch Geometric's ``QM9(<root>/qm9)`` raw layout)::

    <root>/qm9/raw/qm9.zip
    <root>/qm9/raw/{gdb9.sdf, gdb9.sdf.csv, uncharacterized.txt}
    <root>/qm9/random_split.t          (LibMTL's fixed random split, a torch-saved index tensor)

Checksums: none published for the raw files (recorded on first download); LibMTL's split file
pinned by commit and SHA-256.

Protocol (:func:`build_splits`): Nash-MTL / LibMTL — a random permutation of the 130,831 molecules
(indices into PyTorch Geometric's QM9 order), first 10,000 test, next 10,000 validation, the rest
train; exact when their ``random_split.t`` is in the resource directory, otherwise a seeded
permutation (approximation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..download import FileSpec, extract_once
from ..resources import find_file
from ..split_building import finish, seeded_rng
from ._libmtl import COMMIT, RAW

FILES = (
    FileSpec("raw/qm9.zip", ("https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip",)),
    FileSpec("raw/uncharacterized.txt", ("https://ndownloader.figshare.com/files/3195404",)),
    FileSpec("random_split.t", (f"{RAW}qm9/random_split.t",),
             sha256="cccf1a47c31eae0d262fd2ddd9c009ed2cd070053376ef521c522d9b2d69a7a7", size=1047346,
             note=f"LibMTL {COMMIT[:7]}"),
)
MANUAL = None

# The split files the workflow builds (``snakemake splits_qm9``; config ``dataset_splits``).
SPLIT_VARIANTS = {"nash_mtl": {}}


def prepare(dataset_dir: Path) -> None:
    extract_once(dataset_dir / "raw" / "qm9.zip", dataset_dir / "raw", "gdb9.sdf")


def molecule_count(root: Path) -> int:
    """Molecules PyTorch Geometric keeps: rows of gdb9.sdf.csv minus the uncharacterized ones."""
    csv = find_file(root, ["raw/gdb9.sdf.csv", "gdb9.sdf.csv"], "QM9 gdb9.sdf.csv")
    rows = sum(1 for line in csv.read_text().splitlines()[1:] if line.strip())
    skip_file = find_file(root, ["raw/uncharacterized.txt", "uncharacterized.txt"], "QM9 uncharacterized.txt")
    skipped = set()
    for line in skip_file.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            skipped.add(int(fields[0]))
    return rows - len(skipped)


def build_splits(resource_dir, out_path, test_size: int = 10000, val_size: int = 10000, seed: int = 0) -> dict:
    """Nash-MTL / LibMTL QM9 split: permutation -> first ``test_size`` test, next ``val_size`` val, rest train."""
    root = Path(resource_dir)
    saved = find_file(root, ["random_split.t"], "QM9 random_split.t", required=False)
    count = molecule_count(root)
    if saved is not None:
        import torch

        perm = np.asarray(torch.load(saved, map_location="cpu", weights_only=True)).astype(np.int64).ravel()
        if sorted(perm.tolist()) != list(range(count)):
            raise ValueError(f"{saved}: not a permutation of the {count} molecules")
        exact, deviation, options = True, None, {"test_size": test_size, "val_size": val_size}
    else:
        perm = seeded_rng(seed, "qm9").permutation(count)
        exact, options = False, {"test_size": test_size, "val_size": val_size, "seed": seed}
        deviation = "Nash-MTL's random_split.t was not found in the resource directory; a seeded permutation is used"
    if test_size + val_size >= count:
        raise ValueError(f"qm9: test_size + val_size ({test_size + val_size}) must be below the {count} molecules")
    parts = {"test": perm[:test_size], "val": perm[test_size:test_size + val_size],
             "train": perm[test_size + val_size:]}
    splits = {s: {"images": sorted(int(i) for i in v)} for s, v in parts.items()}
    counts = {s: {"molecules": len(v["images"])} for s, v in splits.items()}
    return finish(out_path, "qm9", "Nash-MTL: random permutation, 10k test / 10k val / rest train "
                  "(indices into PyG's QM9 order)", exact, options, splits, unit="molecule", counts=counts,
                  deviation=deviation, extra={"complete": count == 130831})
