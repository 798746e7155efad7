"""Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets, 20 drawers each.

Layout after ``prepare`` (torchvision's / learn2learn's ``omniglot-py``)::

    <root>/omniglot/omniglot-py/images_background.zip, images_evaluation.zip
    <root>/omniglot/omniglot-py/images_background/<alphabet>/character<NN>/<id>_<drawer>.png   (30 alphabets)
    <root>/omniglot/omniglot-py/images_evaluation/<alphabet>/character<NN>/<id>_<drawer>.png   (20 alphabets)

Checksums: upstream publishes none; the MD5s are torchvision's (``Omniglot.zips_md5``).

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

from pathlib import Path

from ..download import FileSpec, extract_once
from ..resources import find_dir
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

PROTOCOLS = ("alphabet", "alphabet_pooled", "character")

# The split files the workflow builds (``snakemake splits_omniglot``; config ``dataset_splits``).
# TOW: background / evaluation alphabets, 1,000 test tasks 5-way 1-shot; Vinyals et al.: 1,200 + 423
# characters with rotations (learn2learn's 1,100 / 100 / 423 sizes); TR-MAML: 25 / 5 / 20 pooled alphabets.
SPLIT_VARIANTS = {"alphabet": {"protocol": "alphabet", "val_alphabets": 5, **eval_episodes(5, 1, 1000, val=100)},
                  "character": {"protocol": "character", "train_characters": 1200, "val_characters": 100,
                                "rotations": [0, 90, 180, 270], **eval_episodes(5, 1, 1000, val=100)},
                  "alphabet_pooled": {"protocol": "alphabet_pooled"}}


def prepare(dataset_dir: Path) -> None:
    for spec in FILES:
        archive = dataset_dir / spec.name
        extract_once(archive, archive.parent, archive.name[:-len(".zip")])


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
    """Omniglot by alphabet (TOW, TR-MAML) or by character (Vinyals et al.), optionally with rotations."""
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
    return finish(out_path, "omniglot", name, exact, options, splits, counts=counts, deviation=deviation,
                  episodes=episode_sets(splits, episodes, rotations=len(rotations)), extra={"complete": complete})


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
