"""The split files the workflow builds per real dataset (``snakemake splits_<name>``).

Each variant is a set of builder options (:mod:`taskbal.data.protocols`) and becomes
``results/dataset_splits/<name>/<variant>.json``. Config ``dataset_splits: {<name>: {<variant>:
{...}}}`` adds variants or replaces them.
"""
from __future__ import annotations

import json


def episodes(ways, shots, count, queries=15, seed=0, val=None) -> dict:
    sets = {"test": {"ways": ways, "shots": shots, "queries": queries, "count": count, "seed": seed}}
    if val:
        sets["val"] = {"ways": ways, "shots": shots, "queries": queries, "count": val, "seed": seed + 1}
    return {"episodes": sets}


# Lee et al. (2020) / TOW any-shot: per task, with probability 0.5 one k ~ U{1..50} per class, else one shared k.
ANY_SHOT = {"min": 1, "max": 50, "per_class_prob": 0.5}

DATASET_SPLITS = {
    # TOW: 600 test tasks (5-way 1-shot); Nash-GBML: 5-way 5-shot (600 per trial); SIMOL: 1,000 test tasks;
    # TOW any-shot: 3,000 test tasks (5-way, k ~ U{1..50}, 15 queries).
    "mini_imagenet": {"5way1shot": episodes(5, 1, 600, val=100), "5way5shot": episodes(5, 5, 600, val=100),
                      "5way1shot_1000": episodes(5, 1, 1000), "5way5shot_1000": episodes(5, 5, 1000),
                      "anyshot": episodes(5, ANY_SHOT, 3000)},
    "tiered_imagenet": {"5way1shot": episodes(5, 1, 1000, val=100), "5way5shot": episodes(5, 5, 1000, val=100)},
    # TOW: background / evaluation alphabets, 1,000 test tasks 5-way 1-shot; Vinyals et al.: 1,200 + 423
    # characters with rotations (learn2learn's 1,100 / 100 / 423 sizes); TR-MAML: 25 / 5 / 20 pooled alphabets.
    "omniglot": {"alphabet": {"protocol": "alphabet", "val_alphabets": 5, **episodes(5, 1, 1000, val=100)},
                 "character": {"protocol": "character", "train_characters": 1200, "val_characters": 100,
                               "rotations": [0, 90, 180, 270], **episodes(5, 1, 1000, val=100)},
                 "alphabet_pooled": {"protocol": "alphabet_pooled"}},
    # TOW's any-shot test on CUB (models trained on mini-ImageNet): 3,000 tasks over the 50 test classes.
    "cub": {"anyshot": episodes(5, ANY_SHOT, 3000)},
    "celeba": {"official": {}},
    "office31": {"libmtl": {}},
    "office_home": {"libmtl": {}},
    "nyuv2": {"libmtl": {}},
    "qm9": {"nash_mtl": {}},
}


def variants(name: str, config: dict | None = None) -> dict:
    """The variants of dataset ``name``: the defaults above updated by the workflow config."""
    merged = dict(DATASET_SPLITS[name])
    merged.update(((config or {}).get("dataset_splits") or {}).get(name) or {})
    return merged


def options_json(name: str, variant: str, config: dict | None = None) -> str:
    known = variants(name, config)
    if variant not in known:
        raise ValueError(f"dataset_splits.{name}: unknown variant {variant!r}; known: {sorted(known)}")
    return json.dumps(known[variant], sort_keys=True)
