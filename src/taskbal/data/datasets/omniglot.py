"""Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets, 20 drawers each.

Layout after ``prepare`` (torchvision's / learn2learn's ``omniglot-py``)::

    <root>/omniglot/omniglot-py/images_background.zip, images_evaluation.zip
    <root>/omniglot/omniglot-py/images_background/<alphabet>/character<NN>/<id>_<drawer>.png   (30 alphabets)
    <root>/omniglot/omniglot-py/images_evaluation/<alphabet>/character<NN>/<id>_<drawer>.png   (20 alphabets)

Checksums: upstream publishes none; the MD5s are torchvision's (``Omniglot.zips_md5``).

Offline copy (fallback when the download fails, or with ``--offline``): ``<offline root>/omniglot/``
(config ``offline_data``, ``taskbal data fetch --offline-root``) holding ``images_background.zip``,
``images_evaluation.zip`` and ``MANIFEST.sha256`` (``sha256sum`` output for every PNG, paths relative
to the folder the zips unpack into). These zips are not upstream's (they were packed again from the
same images, so upstream's MD5s do not apply): each of the three files must match the SHA-256 pinned
in :data:`OFFLINE_SHA256` (from the copy's ``SOURCE.md``), and after unpacking every PNG must match its
manifest entry, with none missing and none extra (32,460 images), before anything is moved into
place. The three files are kept in ``<root>/omniglot/offline-copy/``; the ``.verified`` record's
``source`` says the images came from the offline copy, and every split file built from them carries
that source (``data_source``). A later upstream fetch replaces the offline images with upstream's.

Protocols (:func:`build_splits`, option ``protocol``; ``exact`` in the split file says whether it is
the published split itself):

* ``alphabet`` — TOW: the original 30 background (train) / 20 evaluation (test) alphabets; a seeded
  validation set of ``val_alphabets`` background alphabets, which the paper does not describe.
* ``alphabet_pooled`` — TR-MAML's code: the 50 alphabets permuted into 25 / 5 / 20; its permutation
  is not published, so a seeded one.
* ``character`` — Vinyals et al. (2016): the 1,623 characters shuffled into 1,200 train / 423 test,
  ``val_characters`` taken from train (a seeded permutation; theirs is not published).

``rotations`` multiply classes by 90° rotations (class = character x rotation, rotation fastest).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..download import ChecksumError, FileSpec, copy_atomic, extract_once, file_digest, safe_extract
from ..resources import find_dir, recorded_source
from ..split_building import decode_image, episode_sets, eval_episodes, finish, image_files, seeded_rng, subdirs

BASE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
FOLDER = "omniglot-py"
FILES = (
    FileSpec(f"{FOLDER}/images_background.zip", (BASE + "images_background.zip",),
             md5="68d2efa1b9178cc56df9314c21c6e718"),
    FileSpec(f"{FOLDER}/images_evaluation.zip", (BASE + "images_evaluation.zip",),
             md5="6b91aef0f799c5bb55b94e3f2daec811"),
)
MANUAL = None

# The offline copy (see the module docstring): its files and their SHA-256, as its SOURCE.md gives them.
OFFLINE_MANIFEST = "MANIFEST.sha256"
OFFLINE_SHA256 = {
    "images_background.zip": "4ecbdcfd2fdfc398de7319149c39cad99e836504c6bc35a293b8d5734a2bf14e",
    "images_evaluation.zip": "6f2e28b8e9d553dee766e249ac1b44a6e6f69762283d5bad51388fcb9810812e",
    OFFLINE_MANIFEST: "8745d3284205c70953ebeacd9061b7dfdadc5961afab7b71a1553c9aa5bcb1af",
}
OFFLINE_REPLACES_FILES = True  # the record lists the offline files, not upstream's zips
OFFLINE_COPY = "offline-copy"  # <root>/omniglot/offline-copy/: the offline files the images were taken from
OFFLINE_HINT = ("Offline copy: a folder <offline root>/omniglot/ holding images_background.zip, images_evaluation.zip "
                f"and {OFFLINE_MANIFEST} (config offline_data, or taskbal data fetch --offline-root), used when the "
                "download fails; its files are checked against the SHA-256 pinned in taskbal/data/datasets/omniglot.py "
                "and every image against the manifest.")
_MANIFEST_LINE = re.compile(r"([0-9a-f]{64}) [ *](images_(?:background|evaluation)/[^/]+/[^/]+/[^/]+\.png)")

PROTOCOLS = ("alphabet", "alphabet_pooled", "character")

# The split files the workflow builds (``snakemake splits_omniglot``; config ``dataset_splits``).
# TOW: background / evaluation alphabets, 1,000 test tasks 5-way 1-shot; Vinyals et al.: 1,200 + 423
# characters with rotations (learn2learn's 1,100 / 100 / 423 sizes); TR-MAML: 25 / 5 / 20 pooled alphabets.
SPLIT_VARIANTS = {"alphabet": {"protocol": "alphabet", "val_alphabets": 5, **eval_episodes(5, 1, 1000, val=100)},
                  "character": {"protocol": "character", "train_characters": 1200, "val_characters": 100,
                                "rotations": [0, 90, 180, 270], **eval_episodes(5, 1, 1000, val=100)},
                  "alphabet_pooled": {"protocol": "alphabet_pooled"}}


def prepare(dataset_dir: Path) -> None:
    """Unpack upstream's zips; images taken from the offline copy are replaced by theirs."""
    archives = [dataset_dir / spec.name for spec in FILES]
    if not all(archive.is_file() for archive in archives):
        return  # fetch_dataset calls prepare without them only after offline(), which unpacked its own copy
    from_offline_copy = (dataset_dir / OFFLINE_COPY).is_dir()
    for archive in archives:
        unpacked = archive.parent / archive.name[:-len(".zip")]
        if from_offline_copy and unpacked.is_dir():
            shutil.rmtree(unpacked)
        extract_once(archive, archive.parent, unpacked.name)
    if from_offline_copy:
        shutil.rmtree(dataset_dir / OFFLINE_COPY)


def read_manifest(path: Path, shown: Path | str) -> dict[str, str]:
    """``{image path: sha256}`` of a ``sha256sum`` manifest; ``shown`` names it in errors."""
    manifest = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        match = _MANIFEST_LINE.fullmatch(line)
        if match is None:
            raise ChecksumError(f"{shown}, line {number}: not '<sha256>  images_<part>/<alphabet>/<character>/"
                                f"<file>.png': {line[:120]!r}")
        digest, name = match.groups()
        if name in manifest:
            raise ChecksumError(f"{shown}, line {number}: {name} is listed twice")
        manifest[name] = digest
    if not manifest:
        raise ChecksumError(f"{shown}: lists no image")
    return manifest


def _examples(names, shown: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_images(unpacked: Path, manifest: dict[str, str], where: str) -> None:
    """Every file under ``unpacked`` is a manifest image with its SHA-256, and no manifest image is missing."""
    found = {}
    for directory, _, names in os.walk(unpacked):
        for name in names:
            path = Path(directory) / name
            found[path.relative_to(unpacked).as_posix()] = path
    extra = set(found) - set(manifest)
    missing = set(manifest) - set(found)
    if extra:
        raise ChecksumError(f"{where}: {len(extra)} file(s) in the zips not listed in {OFFLINE_MANIFEST}: "
                            f"{_examples(extra)}")
    if missing:
        raise ChecksumError(f"{where}: {len(missing)} image(s) listed in {OFFLINE_MANIFEST} missing from the "
                            f"zips: {_examples(missing)}")
    wrong = {}
    for name, path in found.items():
        if path.is_symlink() or not path.is_file():
            raise ChecksumError(f"{where}: {name} is not a regular file")
        got = file_digest(path)
        if got != manifest[name]:
            wrong[name] = got
    if wrong:
        first = min(wrong)
        detail = (f"{first} (from {first.split('/')[0]}.zip) has SHA-256 {wrong[first]}, {OFFLINE_MANIFEST} "
                  f"says {manifest[first]}")
        raise ChecksumError(f"{where}: {detail}" if len(wrong) == 1 else
                            f"{where}: {len(wrong)} images differ from {OFFLINE_MANIFEST} ({_examples(wrong)}); "
                            f"the first: {detail}")


def _move_into_place(source: Path, target: Path, workdir: Path) -> None:
    if target.exists() or target.is_symlink():
        old = workdir / f"old-{target.name}"
        shutil.move(target, old)
    shutil.move(source, target)


def offline(dataset_dir: Path, workdir: Path, progress: bool = True, *, offline_root=None) -> str | None:
    """Unpack the offline copy ``<offline_root>/omniglot/`` into the upstream layout, every file verified first.

    ``None`` when there is no such folder; :class:`~taskbal.data.download.ChecksumError` naming the
    file when a zip, the manifest or an image does not match. Nothing in ``dataset_dir`` changes
    unless everything matched.
    """
    if offline_root is None:
        return None
    folder = Path(offline_root) / "omniglot"  # as given (relative to the working directory): named in the record
    here = folder.expanduser()
    if not here.is_dir():
        return None
    absent = [name for name in OFFLINE_SHA256 if not (here / name).is_file()]
    if absent:
        raise FileNotFoundError(f"{folder}: offline copy of Omniglot without {', '.join(absent)}")
    copy = workdir / OFFLINE_COPY
    for name, pinned in OFFLINE_SHA256.items():
        copy_atomic(here / name, copy / name)
        got = file_digest(copy / name)
        if got != pinned:
            raise ChecksumError(f"{folder / name}: SHA-256 {got} does not match the {pinned} pinned in "
                                "taskbal/data/datasets/omniglot.py (OFFLINE_SHA256)")
    manifest = read_manifest(copy / OFFLINE_MANIFEST, folder / OFFLINE_MANIFEST)
    unpacked = workdir / "unpacked"
    zips = [name for name in OFFLINE_SHA256 if name.endswith(".zip")]
    for name in zips:
        created = [path.name for path in safe_extract(copy / name, unpacked)]
        if created != [name[:-len(".zip")]]:
            raise ChecksumError(f"{folder / name}: unpacks to {created}, expected only {name[:-len('.zip')]}/")
    check_images(unpacked, manifest, f"offline copy {folder}")
    images = dataset_dir / FOLDER
    images.mkdir(parents=True, exist_ok=True)
    for name in zips:
        _move_into_place(unpacked / name[:-len(".zip")], images / name[:-len(".zip")], workdir)
    _move_into_place(copy, dataset_dir / OFFLINE_COPY, workdir)
    return (f"offline copy {folder}: its own zips of the Omniglot images, not upstream's (the zips and "
            f"{OFFLINE_MANIFEST} match the SHA-256 pinned in omniglot.py); every one of the {len(manifest):,} "
            f"images verified against {OFFLINE_MANIFEST}")


def offline_files(dataset_dir: Path) -> dict:
    """The record of the offline files the images were taken from (kept in ``offline-copy/``)."""
    out = {}
    for name in OFFLINE_SHA256:
        path = Path(dataset_dir) / OFFLINE_COPY / name
        info = path.stat()
        out[f"{OFFLINE_COPY}/{name}"] = {"verified_by": "pinned sha256", "sha256": file_digest(path),
                                         "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    return out


def omniglot_tree(root: Path) -> dict[str, dict[str, dict[str, list[str]]]]:
    """{background|evaluation: {alphabet: {character: [png files]}}}."""
    tree = {}
    for part in ("background", "evaluation"):
        base = find_dir(root, [f"images_{part}", f"omniglot-py/images_{part}", f"python/images_{part}"],
                        f"Omniglot images_{part}")
        tree[part] = {a: {c: image_files(base / a / c) for c in subdirs(base / a)} for a in subdirs(base)}
    return tree


def build_splits(resource_dir, out_path, protocol: str = "alphabet", val_alphabets: int = 5,
                 train_characters: int = 1200, val_characters: int = 0, rotations: list[int] | None = None,
                 seed: int = 0, episodes: dict | None = None) -> dict:
    """Omniglot by alphabet (TOW, TR-MAML) or by character (Vinyals et al.), optionally with rotations.

    The split file's ``data_source`` is the ``source`` of ``resource_dir/.verified`` (absent without one).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"omniglot: unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    rotations = [0] if rotations is None else [int(r) for r in rotations]
    if not rotations or any(r % 90 for r in rotations) or len(set(rotations)) != len(rotations):
        raise ValueError(f"omniglot: rotations must be distinct multiples of 90 degrees, got {rotations}")
    tree = omniglot_tree(Path(resource_dir))
    options = {"protocol": protocol, "rotations": rotations, "seed": seed, "episodes": episodes or {}}
    rng = seeded_rng(seed, "omniglot", protocol)
    background, evaluation = sorted(tree["background"]), sorted(tree["evaluation"])
    deviation = None
    if protocol == "alphabet":
        options["val_alphabets"] = val_alphabets
        if not 0 <= val_alphabets < len(background):
            raise ValueError(f"omniglot: val_alphabets must be in 0..{len(background) - 1}")
        val = sorted(rng.choice(background, size=val_alphabets, replace=False).tolist()) if val_alphabets else []
        groups = {"train": [("background", a) for a in background if a not in val],
                  "val": [("background", a) for a in val], "test": [("evaluation", a) for a in evaluation]}
        exact, name = True, "TOW: original background (train) / evaluation (test) alphabets"
        if val_alphabets:
            deviation = f"validation = {val_alphabets} seeded background alphabets (the paper describes none)"
    elif protocol == "alphabet_pooled":
        pooled = [("background", a) for a in background] + [("evaluation", a) for a in evaluation]
        perm = rng.permutation(len(pooled))
        n_train, n_val = 25 * len(pooled) // 50, 5 * len(pooled) // 50
        pick = lambda idx: sorted(pooled[i] for i in idx)  # noqa: E731
        groups = {"train": pick(perm[:n_train]), "val": pick(perm[n_train:n_train + n_val]),
                  "test": pick(perm[n_train + n_val:])}
        exact, name = False, "TR-MAML: 50 alphabets permuted into 25/5/20"
        deviation = "the alphabet permutation of TR-MAML's code is not published; a seeded one is used"
    else:
        options.update(train_characters=train_characters, val_characters=val_characters)
        chars = [(p, a, c) for p in ("background", "evaluation") for a in sorted(tree[p]) for c in sorted(tree[p][a])]
        if not 0 < train_characters < len(chars) or not 0 <= val_characters < train_characters:
            raise ValueError(f"omniglot: need 0 < train_characters < {len(chars)} and 0 <= val_characters < "
                             "train_characters")
        perm = rng.permutation(len(chars))
        n_fit = train_characters - val_characters
        pick = lambda idx: sorted(chars[i] for i in idx)  # noqa: E731
        parts = {"train": pick(perm[:n_fit]), "val": pick(perm[n_fit:train_characters]),
                 "test": pick(perm[train_characters:])}
        exact, name = False, "Vinyals et al. (2016): characters shuffled into 1200 train / 423 test"
        deviation = "Vinyals et al.'s exact character permutation is not published; a seeded one is used"
        splits = {s: {"classes": [f"{p}/{a}/{c}" for p, a, c in v],
                      "images": {f"{p}/{a}/{c}": tree[p][a][c] for p, a, c in v}} for s, v in parts.items()}
    if protocol != "character":
        splits = {}
        for split, alphabets in groups.items():
            images = {f"{p}/{a}/{c}": files for p, a in alphabets for c, files in sorted(tree[p][a].items())}
            splits[split] = {"classes": sorted(images), "images": images,
                             "alphabets": [f"{p}/{a}" for p, a in alphabets]}
    counts = {s: {"characters": len(v["classes"]), "classes": len(v["classes"]) * len(rotations),
                  "images": sum(len(x) for x in v["images"].values())} for s, v in splits.items()}
    name += f"; rotations {rotations} (class = character x rotation, rotation fastest)"
    complete = (len(background), len(evaluation)) == (30, 20) and sum(
        len(files) for part in tree.values() for chars in part.values() for files in chars.values()) == 1623 * 20
    extra = {"complete": complete}
    source = recorded_source(resource_dir)
    if source:  # where the images came from (upstream, a local copy, the offline copy), as fetched
        extra["data_source"] = source
    return finish(out_path, "omniglot", name, exact, options, splits, counts=counts, deviation=deviation,
                  episodes=episode_sets(splits, episodes, rotations=len(rotations)), extra=extra)


def load_images(split_file: dict, resource_dir, split: str, side: int | None = None):
    """One split's images as ``(uint8 [n, 1, side, side], class_sizes)``, each character once per rotation.

    Rotation fastest, as the split file's classes count them; see
    :func:`taskbal.data.episodes.split_images`. ``side`` defaults to 28.
    """
    import numpy as np
    import torch

    root = Path(resource_dir)
    part = split_file["splits"][split]
    side = side or 28
    rows, sizes = [], []
    rotations = split_file["options"]["rotations"]
    bases = {p: find_dir(root, [f"images_{p}", f"omniglot-py/images_{p}", f"python/images_{p}"], f"Omniglot {p}")
             for p in ("background", "evaluation")}
    for cls in part["classes"]:
        kind, alphabet, character = cls.split("/")
        images = torch.from_numpy(np.stack([decode_image(bases[kind] / alphabet / character / f, side, 1)
                                            for f in part["images"][cls]]))
        for degrees in rotations:
            rows.append(torch.rot90(images, k=degrees // 90, dims=(-2, -1)))
            sizes.append(len(images))
    return torch.cat(rows), sizes
