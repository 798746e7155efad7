"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60,000 + 10,000 28x28 product images, 10 classes.

Layout after ``prepare`` (upstream's four files, each also decompressed; ``taskbal.data.idx`` reads it)::

    <root>/fashion_mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)

Offline source (preferred): the Debian package ``dataset-fashion-mnist`` (``apt-get download`` needs
no root; ``dpkg-deb -x`` unpacks it), which ships the same four files re-compressed. Its ``.gz`` bytes
differ from upstream's, so a file is accepted either by the upstream SHA-256 (TFDS/Keras, matching
the MD5s in the Fashion-MNIST README) or by the SHA-256 of its *decompressed* content, computed from
the Debian package version pinned below (whose own SHA-256 the Debian archive index publishes).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..download import FileSpec, copy_atomic, file_digest, find_file, gunzip_files

MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
           "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
_PUBLISHED = (  # name, sha256 (TFDS/Keras), md5 (README), sha256 of the decompressed IDX bytes
    ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
     "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
     "25c81989df183df01b3e8a0aad5dffbe",
     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
     "bef4ecab320f06d8554ea6380940ec79",
     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
     "bb300cfdad3c16e7a12a480ee83cd310",
     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)
FILES = tuple(FileSpec(name, tuple(m + name for m in MIRRORS), sha256=sha, md5=md5, size=None,
                       content_sha256=content)
              for name, sha, md5, content in _PUBLISHED)
MANUAL = None

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_VERSION = "0.0~git20200523.55506a9-1"
DEBIAN_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"  # Debian archive index
DEBIAN_DIR = "usr/share/datasets/fashion-mnist"
PREFER_OFFLINE = True
OFFLINE_HINT = (f"Offline source: the Debian package {DEBIAN_PACKAGE} (`apt-get install {DEBIAN_PACKAGE}`, or let "
                "this command run `apt-get download` when Debian's package archive is reachable).")


def prepare(dataset_dir: Path) -> None:
    """Decompress the verified ``.gz`` files next to themselves (torchvision reads the raw files)."""
    gunzip_files(dataset_dir, FILES)


def load(dataset_dir: Path | str, split: str = "train"):
    """``(images uint8 [n,28,28], labels uint8 [n], description)``."""
    from .mnist import read_idx

    prefix = {"train": "train", "test": "t10k"}[split]
    base = Path(dataset_dir)
    images = base / f"{prefix}-images-idx3-ubyte.gz"
    if not images.is_file():
        raise FileNotFoundError(f"{dataset_dir}: Fashion-MNIST not fetched; run `taskbal data fetch fashion_mnist`")
    return read_idx(images), read_idx(base / f"{prefix}-labels-idx1-ubyte.gz"), f"Fashion-MNIST {split} set"


def _debian_files(workdir: Path) -> Path | None:
    installed = Path("/") / DEBIAN_DIR
    if installed.is_dir():
        return installed
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None
    try:
        subprocess.run(["apt-get", "download", f"{DEBIAN_PACKAGE}={DEBIAN_VERSION}"], cwd=workdir, check=True,
                       capture_output=True, timeout=600)
    except (subprocess.SubprocessError, OSError):
        try:  # another version of the package: still verified file by file below
            subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=workdir, check=True,
                           capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError):
            return None
    debs = sorted(workdir.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if not debs:
        return None
    pinned = any(v in debs[0].name for v in (DEBIAN_VERSION, DEBIAN_VERSION.replace("~", "%7e")))
    if pinned and file_digest(debs[0]) != DEBIAN_SHA256:
        raise ValueError(f"{debs[0].name}: SHA-256 does not match the Debian archive's {DEBIAN_SHA256}")
    unpack = workdir / "deb"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpack)], check=True, capture_output=True, timeout=600)
    return unpack / DEBIAN_DIR


def offline(dataset_dir: Path, workdir: Path, progress: bool = True) -> str | None:
    """Copy the four files from the Debian package into place (verified by ``fetch_dataset``)."""
    source = _debian_files(workdir)
    if source is None:
        return None
    for spec in FILES:
        found = find_file(Path(spec.name).name, [source])
        if found is None:
            return None
        copy_atomic(found, dataset_dir / spec.name)
    where = "installed" if source == Path("/") / DEBIAN_DIR else "apt-get download"
    return f"Debian package {DEBIAN_PACKAGE} ({where}; files verified by decompressed-content SHA-256)"
