"""Reading config files and merging settings: what the table configs (``config.py``) and the grid
configs (``grid.py``) share."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

# libyaml's parser when PyYAML was built with it: every parse of the workflow reads every table config.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigFileError(ValueError):
    """A config file that cannot be read; the message starts with the file's path."""


def read_yaml(path: Path | str):
    """A YAML file's content; a syntax error names the file, line and column."""
    try:
        return yaml.load(Path(path).read_text(), Loader=SAFE_LOADER)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigFileError(f"{path}:{where} not valid YAML: {problem}") from None


def deep_merge(base: dict, override: dict | None, null_removes: bool = False) -> dict:
    """A copy of ``base`` with ``override`` merged in recursively (override wins). With ``null_removes``, a
    null in ``override`` removes the key (a row that switches to another learner or network drops the
    options of the one it replaces, which then take their defaults)."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None and null_removes:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value, null_removes)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def nested(path: str, value) -> dict:
    """``"weighting.theta_lr", 0.1`` → ``{"weighting": {"theta_lr": 0.1}}``."""
    out = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return out


def settings_from_assignments(assignments: list[str]) -> dict:
    """``["outer.clip_grad_norm=1.0", "problem.optimizer=sgd"]`` → nested settings (values parsed as
    YAML): the ``--set`` options of the diagnosis tools."""
    settings: dict = {}
    for item in assignments:
        key, _, value = item.partition("=")
        settings = deep_merge(settings, nested(key, yaml.safe_load(value)))
    return settings
