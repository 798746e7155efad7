"""Validation in one place: every option's values are checked by the code that uses it, before anything
runs, and every message names the field where the user wrote it."""
from __future__ import annotations

import copy

import pytest
import yaml

from conftest import small_experiment
from taskbal.mtl.moml import build_combiner
from taskbal.runners import check_experiment
from taskbal.weighting import build_weighting


def test_a_weighting_option_is_named_where_the_user_wrote_it():
    with pytest.raises(ValueError, match=r"^weighting\.solver: "):
        build_weighting("mgda", 10, 2, 0, solver="qp")
    with pytest.raises(ValueError, match=r"^weighting\.combiner_options\.solver: "):
        build_combiner("mgda", 10, 2, 0, {"solver": "qp"})
    with pytest.raises(ValueError, match=r"^weighting\.combiner_options\.rescale: "):
        build_combiner("cagrad", 10, 2, 0, {"rescale": 7})


@pytest.mark.parametrize("section,key,value", [
    ("outer", "optimizer", "sgd"), ("outer", "lr", -1.0), ("outer", "iterations", 0), ("outer", "bogus", 1),
    ("evaluation", "curve_every", 0), ("learner", "inner_lr", 0.0), ("learner", "inner_optimizer", "rmsprop"),
    ("learner", "first_order", "yes"), ("data", "shots", 0)])
def test_a_bad_meta_learning_value_stops_before_anything_runs(section, key, value):
    experiment = copy.deepcopy(small_experiment())
    experiment[section][key] = value
    with pytest.raises(ValueError, match=rf"^{section}\.{key}: "):
        check_experiment(experiment)


def test_the_schema_checks_the_shape_and_leaves_values_to_the_code(repo):
    """One source of truth per option: the experiment schema names no option values (an enum or a bound
    there would be a second definition next to the code's)."""
    schema = yaml.safe_load((repo / "workflow/schemas/experiment.schema.yaml").read_text())

    def constraints(node):
        if isinstance(node, dict):
            found = [key for key in node if key in ("enum", "minimum", "exclusiveMinimum", "maximum", "items")]
            return found + [c for value in node.values() for c in constraints(value)]
        return []

    assert constraints(schema) == []
    check_experiment(small_experiment())  # the valid experiment passes
