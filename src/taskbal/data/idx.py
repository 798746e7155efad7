"""MNIST-style IDX datasets (MNIST, Fashion-MNIST) for the image families that index into them.

A dataset directory (``resources/mnist``, ``resources/fashion_mnist``; the ``data_<name>`` rules
fill them and write ``.verified``) holds either upstream's four files

    train-images-idx3-ubyte(.gz)  train-labels-idx1-ubyte(.gz)  t10k-images-idx3-ubyte(.gz)  t10k-labels-idx1-ubyte(.gz)

or, for MNIST without network access, the offline subset ``subset/{images,labels}-idx?-ubyte``
(10,000 training digits, no test split; see taskbal/data/datasets/mnist.py). ``load_dataset``
returns what is there — ``test`` is None for the subset — and ``describe`` the source, which the
split files record and the tables print.

The IDX format (LeCun et al.): a 4-byte magic number — two zero bytes, a type code (0x08 =
unsigned byte) and the number of dimensions — then one big-endian uint32 per dimension, then the data.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from ..io import sha256_file
from .resources import VERIFIED

FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
SUBSET_FILES = {("train", "images"): "subset/images-idx3-ubyte", ("train", "labels"): "subset/labels-idx1-ubyte"}
UNSIGNED_BYTE = 0x08


def read_idx(path: Path | str) -> np.ndarray:
    """The array stored in one IDX file (gzip-compressed when the name ends in .gz); writable."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != UNSIGNED_BYTE:
        raise ValueError(f"{path}: IDX type code 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says {shape} = {expected} bytes of data, "
                         f"the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _existing(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def data_files(directory: Path | str) -> dict[tuple[str, str], Path]:
    """{(split, kind): path} of the files present: the full four, else the offline subset's two."""
    directory = Path(directory)
    full = {key: _existing(directory, name) for key, name in FILES.items()}
    if all(full.values()):
        return full
    subset = {key: _existing(directory, name) for key, name in SUBSET_FILES.items()}
    if all(subset.values()):
        return subset
    raise FileNotFoundError(f"{directory}: no IDX dataset here (expected {', '.join(n + '.gz' for n in FILES.values())}"
                            f" or the offline subset {', '.join(SUBSET_FILES.values())}); run the dataset's "
                            "download rule (snakemake data_<name>) or point the data config at its directory")


def input_files(directory: Path | str) -> list[str]:
    """What a split rule depends on: the dataset's ``.verified`` flag (the output of its download rule)."""
    return [str(Path(directory) / VERIFIED)]


def describe(directory: Path | str) -> str:
    """Which data the directory holds and where it came from (the download rule's record when present)."""
    directory = Path(directory)
    files = data_files(directory)
    what = "official train and test files" if ("test", "images") in files else \
        "offline training subset only (no official test split)"
    record = directory / VERIFIED
    source = ""
    if record.is_file():
        try:
            source = json.loads(record.read_text()).get("source", "")
        except (OSError, ValueError):
            source = ""
    return f"{directory.name}: {what}" + (f"; source: {source}" if source else "")


def fingerprint(directory: Path | str) -> dict[str, str]:
    """{path relative to the directory: SHA-256} of the data files present."""
    directory = Path(directory)
    return {str(path.relative_to(directory)): sha256_file(path) for path in data_files(directory).values()}


def load_dataset(directory: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """{'train': (images uint8 [n, H, W], labels uint8 [n]), 'test': (...) or None (subset only)}."""
    files = data_files(directory)
    out: dict[str, tuple[np.ndarray, np.ndarray] | None] = {"test": None}
    for split in ("train", "test"):
        if (split, "images") not in files:
            continue
        images, labels = read_idx(files[split, "images"]), read_idx(files[split, "labels"])
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
        out[split] = (images, labels)
    return out


def check_fingerprint(directory: Path | str, recorded: dict[str, str], split_file: Path | str) -> None:
    """The dataset's files must be the ones the split file was built from."""
    actual = fingerprint(directory)
    if actual != recorded:
        changed = sorted(set(actual) ^ set(recorded)) or sorted(k for k in actual if actual[k] != recorded[k])
        raise ValueError(f"{directory}: {changed[0]} differs from the files the split {split_file} was built "
                         "from (SHA-256 mismatch or a different file set); rebuild the split")
