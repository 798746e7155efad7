"""The install files agree with each other."""
from __future__ import annotations

import yaml


def pins(lines):
    return sorted(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))


def test_environment_yml_pins_equal_requirements(repo):
    requirements = pins((repo / "requirements.txt").read_text().splitlines())
    environment = yaml.safe_load((repo / "environment.yml").read_text())
    pip_section = [entry for entry in environment["dependencies"] if isinstance(entry, dict)][0]["pip"]
    assert sorted(pip_section) == requirements
    assert all("==" in pin for pin in requirements), "every requirement is pinned exactly"
    assert "python=3.11" in environment["dependencies"]


def test_installed_versions_are_the_pinned_ones(repo):
    from importlib.metadata import version

    for pin in pins((repo / "requirements.txt").read_text().splitlines()):
        name, wanted = pin.split("==")
        assert version(name).split("+")[0] == wanted, name
    assert version("learn2learn") == "0.2.0"
