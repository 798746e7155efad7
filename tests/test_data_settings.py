"""Every family's ``data`` section goes through one check: the same errors, naming ``data.<key>``."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import pytest

from taskbal.data import (
    binary_mnist,
    blackbox_moo,
    fewshot_blobs,
    hyper_cleaning,
    moblo_synthetic,
    simol_toy,
    sinusoid,
    skewed_sinusoid,
)
from taskbal.data.checks import data_settings
from taskbal.mtl import blobs


@dataclass
class Family:
    name: str                # the name the error messages use
    module: object
    check: object            # the family's own check, returning the resolved section
    minimal: dict            # a valid section with only what the family needs
    defaults: dict           # what the check fills in for the minimal section (stated here, not read from the code)
    required: str | None     # a key the family requires (None: every key has a default)
    integer: tuple | None = None  # (key, minimum)
    extra: dict = field(default_factory=dict)


FAMILIES = [
    Family("sinusoid", sinusoid, sinusoid.check_data,
           {"family": "sinusoid", "shots": 5, "query": 5, "train_tasks": 320, "val_tasks": 20, "test_tasks": 40,
            "split_seed": 7},
           {}, "query", ("split_seed", 0)),
    Family("skewed_sinusoid", skewed_sinusoid, skewed_sinusoid.check_data,
           {"family": "skewed_sinusoid", "shots": 5, "query": 5, "train_tasks": 30, "val_tasks": 3, "test_tasks": 14,
            "split_seed": 3},
           {"eval_query": 1000, "eval_assignment": "random"}, "test_tasks", ("eval_query", 1)),
    Family("simol_toy", simol_toy, simol_toy.check_data, {"family": "simol_toy"},
           {"f2_tanh_sign": "paper", "front_points": 2001}, None, ("front_points", 2)),
    Family("moblo_synthetic", moblo_synthetic, moblo_synthetic.check_data, {"family": "moblo_synthetic"},
           {"upper_targets": [1.0, 2.0]}, None, None),
    Family("blackbox_moo", blackbox_moo, blackbox_moo.check_data,
           {"family": "blackbox_moo", "problem": "mixed_ellipsoid_rastrigin", "dim": 5}, {}, "problem", ("dim", 2)),
    Family("binary_mnist", binary_mnist, binary_mnist.check_data,
           {"family": "binary_mnist", "shots": 5, "query": 15, "train_tasks": 400, "val_episodes": 3,
            "test_episodes": 10, "split_seed": 3},
           {"mnist_dir": "resources/mnist", "fashion_mnist_dir": "resources/fashion_mnist",
            "mnist_pairs": [[0, 1], [2, 3], [4, 5]], "fashion_pair": [2, 4], "fashion_probability": 0.1,
            "val_fraction": 0.1, "curve_episodes": 10, "no_test_fraction": 0.15},
           "val_episodes", ("split_seed", 0)),
    Family("hyper_cleaning", hyper_cleaning, hyper_cleaning.check_data, {"family": "hyper_cleaning", "split_seed": 5},
           {"mnist_dir": "resources/mnist", "fashion_mnist_dir": "resources/fashion_mnist",
            "datasets": ["mnist", "fashion_mnist"], "train": 5000, "val": 1000, "val2": 1000, "test": 5000,
            "corruption": 0.5},
           "split_seed", ("val2", 1)),
    Family("fewshot_blobs", fewshot_blobs, fewshot_blobs.check_data,
           {"family": "fewshot_blobs", "ways": 3, "shots": 2, "query": 3, "dim": 4, "train_tasks": 40,
            "val_tasks": 2, "test_tasks": 6, "split_seed": 5},
           {"spread": [0.3, 2.0]}, "dim", ("ways", 2)),
    Family("generated multi-task", blobs, blobs.check_data, {"family": "mtl_blobs"},
           {"tasks": 2, "classes": 4, "dim": 8, "train": 200, "val": 60, "val2": 60, "test": 200, "corruption": 0.0,
            "separation": 2.5, "split_seed": 0},
           None, ("classes", 2)),
]
IDS = [f.name for f in FAMILIES]
WITH_REQUIRED = [f for f in FAMILIES if f.required]
WITH_INTEGER = [f for f in FAMILIES if f.integer]


def write(family: Family, tmp_path, data: dict):
    """The family's entry point, ``write_splits``: the errors below come before any file is read or written."""
    return family.module.write_splits(tmp_path / "split.npz", data)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_minimal_section_resolves_to_the_documented_defaults(family):
    given = copy.deepcopy(family.minimal)
    settings = family.check(given)
    expected = {**{k: v for k, v in family.minimal.items() if k != "family"}, **family.defaults}
    assert settings == expected
    assert given == family.minimal  # the experiment's section is left alone


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_unknown_key_is_named(family, tmp_path):
    message = rf"^data\.colour: unknown key for the {family.name} family; known: \['family', "
    with pytest.raises(ValueError, match=message):
        write(family, tmp_path, {**family.minimal, "colour": 1, "zebra": 2})
    assert not (tmp_path / "split.npz").exists()


@pytest.mark.parametrize("family", WITH_REQUIRED, ids=[f.name for f in WITH_REQUIRED])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_required_key_is_named(family, how, tmp_path):
    data = {k: v for k, v in family.minimal.items() if k != family.required}
    if how == "null":
        data[family.required] = None
    with pytest.raises(ValueError, match=rf"^data\.{family.required}: required by the {family.name} family$"):
        write(family, tmp_path, data)


@pytest.mark.parametrize("family", WITH_INTEGER, ids=[f.name for f in WITH_INTEGER])
@pytest.mark.parametrize("bad", ["below", 2.5, True, "3"])
def test_bad_integer_is_named(family, bad, tmp_path):
    key, minimum = family.integer
    value = minimum - 1 if bad == "below" else bad
    message = rf"^data\.{key}: expected an integer >= {minimum}, got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=message):
        write(family, tmp_path, {**family.minimal, key: value})


@pytest.mark.parametrize("family", WITH_INTEGER, ids=[f.name for f in WITH_INTEGER])
def test_integer_at_its_minimum_is_accepted(family):
    key, minimum = family.integer
    assert family.check({**family.minimal, key: minimum})[key] == minimum


def test_null_optional_key_follows_the_family():
    """Families that always read ``null`` as "not given" keep doing so; the others keep rejecting it."""
    skewed = FAMILIES[IDS.index("skewed_sinusoid")]
    assert skewed_sinusoid.check_data({**skewed.minimal, "eval_query": None})["eval_query"] == 1000
    with pytest.raises(ValueError, match=r"^data\.front_points: expected an integer >= 2, got None$"):
        simol_toy.check_data({"family": "simol_toy", "front_points": None})


def test_result_is_a_copy():
    defaults = {"pairs": [[0, 1]], "size": 3}
    data = {"family": "x", "pairs": [[2, 3]]}
    settings = data_settings(data, "x", defaults=defaults, integers={"size": 1})
    settings["pairs"][0].append(9)
    data_settings(data, "x", defaults=defaults)["size"] = 7
    assert data == {"family": "x", "pairs": [[2, 3]]}
    assert defaults == {"pairs": [[0, 1]], "size": 3}


def test_first_unknown_and_first_missing_are_named():
    with pytest.raises(ValueError, match=r"^data\.b: unknown key for the x family; known: \['family', 'z', 'a'\]$"):
        data_settings({"c": 1, "b": 2}, "x", required=("z",), defaults={"a": 1})
    with pytest.raises(ValueError, match=r"^data\.z: required by the x family$"):
        data_settings({"y": 1}, "x", required=("z", "y"))
