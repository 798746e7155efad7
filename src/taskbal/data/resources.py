"""Locating a dataset's files in its resource directory (``resources/<dataset>/``).

Shared by the split builders and image loaders of the dataset modules (:mod:`taskbal.data.datasets`);
kept apart from :mod:`taskbal.data.download` and :mod:`taskbal.data.split_building` so that any of them
can use it without importing the others.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

VERIFIED = ".verified"  # a dataset's record, written last by its download rule (taskbal.data.datasets)


def find_dir(resource_dir: Path, candidates: Iterable[str], what: str) -> Path:
    """The first of ``resource_dir/<candidate>`` that is a directory, else a clear error."""
    candidates = list(candidates)
    for name in candidates:
        path = Path(resource_dir) / name
        if path.is_dir():
            return path
    raise FileNotFoundError(f"{what}: none of {[str(Path(resource_dir) / c) for c in candidates]} exists "
                            "(run the dataset's download rule first)")


def find_file(resource_dir: Path, candidates: Iterable[str], what: str, required: bool = True) -> Path | None:
    candidates = list(candidates)
    for name in candidates:
        path = Path(resource_dir) / name
        if path.is_file():
            return path
    if required:
        raise FileNotFoundError(f"{what}: none of {[str(Path(resource_dir) / c) for c in candidates]} exists "
                                "(run the dataset's download rule first)")
    return None


def recorded_source(resource_dir: Path | str) -> str | None:
    """The ``source`` of the ``.verified`` record in ``resource_dir`` (``<root>/<name>/``); ``None`` without one."""
    path = Path(resource_dir) / VERIFIED
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("source") or None
    except ValueError as error:
        raise ValueError(f"{path}: not a valid dataset record ({error}); fetch the dataset again") from None


def dataset_split_file(settings: dict, dataset: str) -> Path:
    """A task family's dataset split file: ``<dataset_splits>/<dataset>/<split_variant>.json``."""
    return Path(settings["dataset_splits"]) / dataset / f"{settings['split_variant']}.json"


def dataset_inputs(settings: dict, dataset: str) -> list[str]:
    """What a family's split rule reads of a dataset: its ``.verified`` record (written last by
    ``data_<name>``) and its split file."""
    return [str(Path(settings["resources"]) / dataset / VERIFIED), str(dataset_split_file(settings, dataset))]


def data_source(split_file: dict, record: dict, subset: str | None = None) -> str:
    """What a family's split file says about its data (its ``data_source`` entry): the dataset split's
    protocol, the part of it kept (``subset``, e.g. "the first 100 scenes of each split") and where the
    dataset came from (its ``.verified`` record)."""
    kept = f", {subset}" if subset else ""
    return f"{split_file.get('protocol', '')}{kept}; source: {record.get('source', 'unknown')}"
