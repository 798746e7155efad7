"""Each runner's config section: unknown, missing and malformed keys are errors naming the field."""
from __future__ import annotations

import pytest

from taskbal.mtl import trainer as mtl_trainer
from taskbal.options import section_settings
from taskbal.runners import blackbox_moo, moblo_synthetic, simol_toy

VALID = {
    "mtl": (mtl_trainer.settings, "mtl", {"iterations": 10}),
    "moblo_synthetic": (moblo_synthetic.settings, "problem", {"alpha0": 1.0, "omega0": [1.0, 1.0], "iterations": 5}),
    "simol_toy": (simol_toy.settings, "problem", {"start": [0.5, 0.5], "iterations": 5, "batch_size": 1}),
    "blackbox_moo": (blackbox_moo.settings, "problem", {"population": 4, "iterations": 5}),
}


@pytest.mark.parametrize("runner", sorted(VALID))
def test_valid_section_gets_the_defaults(runner):
    settings, section, given = VALID[runner]
    resolved = settings({section: dict(given)})
    assert {key: resolved[key] for key in given} == given
    assert resolved["curve_every"] >= 1  # a default every runner fills in


@pytest.mark.parametrize("runner", sorted(VALID))
def test_unknown_key_is_named(runner):
    settings, section, given = VALID[runner]
    with pytest.raises(ValueError, match=rf"^{section}\.iteratoins: unknown option of the {runner} runner"):
        settings({section: {**given, "iteratoins": 3}})


@pytest.mark.parametrize("runner", sorted(VALID))
def test_missing_iterations_is_named(runner):
    settings, section, given = VALID[runner]
    without = {key: value for key, value in given.items() if key != "iterations"}
    with pytest.raises(ValueError, match=rf"^{section}\.iterations: required by the {runner} runner"):
        settings({section: without})


@pytest.mark.parametrize("runner", sorted(VALID))
@pytest.mark.parametrize("bad", [0, 2.5, True, "10"])
def test_iterations_must_be_a_positive_integer(runner, bad):
    settings, section, given = VALID[runner]
    with pytest.raises(ValueError, match=rf"^{section}\.iterations: must be an integer >= 1"):
        settings({section: {**given, "iterations": bad}})


def test_section_settings_leaves_the_experiment_alone():
    experiment = {"problem": {"a": 1}}
    resolved = section_settings(experiment, "problem", "demo", ("a",), {"b": 2})
    assert resolved == {"a": 1, "b": 2} and experiment == {"problem": {"a": 1}}
