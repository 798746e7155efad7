"""The ``data`` section of an experiment: the one check every task family runs on it.

A family names the keys it requires, the defaults of its optional keys and which keys are
integers with their minimum; ``data_settings`` returns the section with the defaults filled in.
Every error names its field and says the same thing in every family:

    data.<key>: unknown key for the <family> family; known: [...]
    data.<key>: required by the <family> family
    data.<key>: expected an integer >= <minimum>, got <value>

A required key set to ``None`` counts as missing. An optional key set to ``None`` keeps the
``None`` (for the family's own checks to reject) unless ``none_is_default``, then it takes its
default. The family's own checks (value ranges, class pairs, names of problems …) follow the call.
"""
from __future__ import annotations

import copy


def check_integer(key: str, value, minimum: int) -> None:
    """``data.<key>`` must be an integer (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"data.{key}: expected an integer >= {minimum}, got {value!r}")


def data_settings(data: dict, family: str, required: tuple = (), defaults: dict | None = None,
                  integers: dict | None = None, none_is_default: bool = False) -> dict:
    """``data`` (without ``family``) merged over ``defaults``, after checking its keys.

    ``integers`` maps a key to its minimum (``{"shots": 1, "split_seed": 0}``). The input is not
    modified; the result is a deep copy, so changing it changes neither ``data`` nor ``defaults``.
    """
    defaults = defaults or {}
    known = ["family", *required, *defaults]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"data.{unknown[0]}: unknown key for the {family} family; known: {known}")
    given = {key: value for key, value in data.items()
             if key != "family" and not (value is None and (key in required or none_is_default))}
    missing = [key for key in required if key not in given]
    if missing:
        raise ValueError(f"data.{missing[0]}: required by the {family} family")
    settings = copy.deepcopy({**defaults, **given})
    for key, minimum in (integers or {}).items():
        check_integer(key, settings[key], minimum)
    return settings
