"""Checking config options, in one place: every message names the field as the user wrote it.

``section_settings`` checks a runner's own section (unknown, missing and non-integer keys);
``check_options`` checks a registered class's option names against its constructor.

A method's constructor knows its option names but not where in the config the options came from:
a weighting is configured under ``weighting`` in one table and under ``weighting.combiner_options``
in another. It raises ``OptionError(field, message)``; whoever builds it from a config section
wraps the construction in ``options_of(section)``, which turns that into the ``ValueError``
``<section>.<field>: <message>`` the user sees.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class OptionError(ValueError):
    """A bad option value; ``field`` is the option's name inside its section."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@contextmanager
def options_of(section: str) -> Iterator[None]:
    """Re-raise an ``OptionError`` from inside as ``ValueError("<section>.<field>: <message>")``."""
    try:
        yield
    except OptionError as error:
        raise ValueError(f"{section}.{error.field}: {error.message}") from None


def check_options(section: str, cls, options: dict, skip: int) -> None:
    """Unknown options of a registered class name the config field (e.g. ``weighting.c``).

    ``skip`` positional parameters of the constructor are supplied by the code, not the config.
    """
    import inspect

    signature = inspect.signature(cls.__init__)
    parameters = list(signature.parameters.values())[1 + skip:]  # after self and the code-supplied ones
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    known = {p.name for p in parameters}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{section}.{unknown[0]}: unknown option of {section} {cls.__name__!r}; "
                         f"known: {sorted(known)}")


def section_settings(experiment: dict, section: str, runner: str, required: tuple = (),
                     defaults: dict | None = None, positive_integers: tuple = ()) -> dict:
    """A runner's config section with its defaults filled in. Unknown and missing keys, and
    ``positive_integers`` that are not integers >= 1, are errors naming the field (``problem.lr``)."""
    given = experiment.get(section) or {}
    known = sorted({*required, *(defaults or {})})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"{section}.{unknown[0]}: unknown option of the {runner} runner; known: {known}")
    missing = [key for key in required if key not in given]
    if missing:
        raise ValueError(f"{section}.{missing[0]}: required by the {runner} runner")
    settings = {**(defaults or {}), **given}
    for key in positive_integers:
        value = settings.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{section}.{key}: must be an integer >= 1, got {value!r}")
    return settings
