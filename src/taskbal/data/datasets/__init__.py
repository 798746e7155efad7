"""Datasets of the five papers: one module per dataset holds everything about it.

Every module in this package (registered in :data:`DATASETS`, the one list of datasets) defines

* its module docstring: what the dataset is, the layout ``prepare`` leaves, where the checksums come
  from and, for a dataset with splits, the protocol of each paper (whether it is the published split
  itself or an approximation). Its first line is the summary ``taskbal data list`` shows.
* ``FILES``: a tuple of :class:`~taskbal.data.download.FileSpec`. ``FileSpec.name`` is the file's
  path relative to the dataset directory ``<root>/<name>/`` (e.g. ``omniglot-py/images_background.zip``),
  ``urls`` the upstream URLs (mirrors, in order), and the published checksums.
* ``MANUAL`` (``None`` or a message): set when a file cannot be downloaded automatically (licence,
  click-through form). :func:`fetch_dataset` then stops with :class:`ManualDownloadRequired`, whose
  message says what to download, from where, and the exact paths to put the files at; placed files
  are verified like downloaded ones.
* ``prepare(dataset_dir)``: unpacks the verified files into the upstream layout inside
  ``dataset_dir`` (idempotent).
* optionally ``offline(dataset_dir, workdir, progress) -> str | None``: obtains the data without
  network access (e.g. from a distribution package); returns a description of the source used (it
  becomes the record's ``source``) or ``None`` if unavailable. ``PREFER_OFFLINE = True`` makes it the
  first choice; otherwise it is the fallback when the download fails (or with ``offline_only``).
  An ``offline`` that also takes the keyword ``offline_root`` reads an offline copy from
  ``<offline_root>/<name>/`` (:func:`fetch_dataset`'s ``offline_root``: ``taskbal data fetch
  --offline-root``, config ``offline_data``); without an ``offline_root`` such a module has no offline
  source. ``OFFLINE_HINT`` (text) tells the user about the offline source when a download fails.
  ``OFFLINE_REPLACES_FILES = True``: the offline source is not the files of ``FILES`` (a subset, or
  the same data packed differently): ``offline`` leaves the layout itself, the files of ``FILES`` are
  not checked against their upstream checksums, and ``offline_files(dataset_dir) -> {path: entry}``
  describes the files it used for the record instead.
* for a dataset split by a paper's protocol, ``build_splits(resource_dir, out_path, **options) ->
  dict``: reads the layout ``prepare`` wrote (``resource_dir`` is ``<root>/<name>/``), applies the
  protocol and writes the split file (:mod:`taskbal.data.splitfile`, byte-identical for the same
  files and options; shared helpers in :mod:`taskbal.data.split_building`), returning its content.
  Its keyword arguments are the options. Datasets without one (MNIST, Fashion-MNIST) are split by
  the task families that read them.
* with ``build_splits``, ``SPLIT_VARIANTS``: ``{<variant>: {<option>: <value>}}``, the split files
  the workflow builds (``results/dataset_splits/<name>/<variant>.json``, rule ``splits_<name>``);
  config ``dataset_splits: {<name>: {<variant>: {...}}}`` adds or replaces variants
  (:func:`split_variants`, :func:`split_options_json`).
* for a dataset split by class (mini-ImageNet, tiered-ImageNet, Omniglot, CUB), ``load_images(
  split_file, resource_dir, split, side=None) -> (uint8 images [n, C, H, W], class_sizes)``: one
  split's images in the split file's order (:func:`taskbal.data.episodes.split_images` dispatches
  to it). Data constants a protocol checks against live in the module too (``STANDARD_CLASSES`` of
  mini- and tiered-ImageNet).

Importing this package (as the workflow does when it is parsed) must stay cheap and must not import
torch: modules import torch, PIL and other heavy packages inside the functions that need them.

:func:`fetch_dataset` is what ``taskbal data fetch <name>`` and the Snakemake rule ``data_<name>``
call; it writes ``<root>/<name>/.verified`` (JSON: every file's SHA-256, how it was verified, the
source used) last, so that file exists only for a complete, verified dataset. :func:`build_splits`
is what ``taskbal data split <name>`` and the rules ``splits_<name>`` call; a split file may carry the
record's source (:func:`recorded_source`) so that outputs built from it say where the data came from.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from ..download import (
    ChecksumError,
    DownloadError,
    FileSpec,
    UnsafeArchiveError,
    copy_atomic,
    fetch,
    file_digest,
    find_file,
    safe_extract,
    verify_spec,
)
from ..resources import VERIFIED, recorded_source
from . import (
    celeba,
    cub,
    fashion_mnist,
    mini_imagenet,
    mnist,
    nyuv2,
    office31,
    office_home,
    omniglot,
    qm9,
    tiered_imagenet,
)

DATASETS: dict[str, ModuleType] = {
    "mnist": mnist, "fashion_mnist": fashion_mnist, "omniglot": omniglot, "mini_imagenet": mini_imagenet,
    "tiered_imagenet": tiered_imagenet, "cub": cub, "celeba": celeba, "office31": office31,
    "office_home": office_home, "nyuv2": nyuv2, "qm9": qm9,
}


__all__ = ["DATASETS", "VERIFIED", "ManualDownloadRequired", "dataset_module", "dataset_dir", "fetch_dataset",
           "read_record", "recorded_source", "uses_offline_root", "describe", "build_splits", "splittable",
           "split_variants", "split_options_json", "ChecksumError", "DownloadError", "UnsafeArchiveError", "FileSpec"]


class ManualDownloadRequired(RuntimeError):
    """A dataset needs a manual step; the message says exactly what to do."""


def dataset_module(name: str) -> ModuleType:
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def dataset_dir(root: Path | str, name: str) -> Path:
    dataset_module(name)
    return Path(root) / name


def splittable() -> list[str]:
    """The datasets with a split builder (``build_splits``), in :data:`DATASETS` order."""
    return [name for name, module in DATASETS.items() if hasattr(module, "build_splits")]


def build_splits(name: str, resource_dir, out_path, **options) -> dict:
    """Write the split file of dataset ``name`` from ``resource_dir`` with its module's ``build_splits``."""
    if name not in DATASETS:
        raise ValueError(f"splits: unknown dataset {name!r}; known: {sorted(splittable())}")
    module = DATASETS[name]
    if not hasattr(module, "build_splits"):
        raise ValueError(f"splits: dataset {name!r} has no split builder (its splits belong to the task families "
                         f"that read it); datasets with one: {sorted(splittable())}")
    return module.build_splits(resource_dir, out_path, **options)


def split_variants(name: str, config: dict | None = None) -> dict:
    """The split variants of dataset ``name``: its ``SPLIT_VARIANTS`` updated by config ``dataset_splits.<name>``."""
    module = dataset_module(name)
    if not hasattr(module, "SPLIT_VARIANTS"):
        raise ValueError(f"dataset_splits: dataset {name!r} has no split variants; datasets with them: "
                         f"{sorted(splittable())}")
    merged = dict(module.SPLIT_VARIANTS)
    merged.update(((config or {}).get("dataset_splits") or {}).get(name) or {})
    return merged


def split_options_json(name: str, variant: str, config: dict | None = None) -> str:
    """The builder options of one variant as canonical JSON (``taskbal data split --options``)."""
    known = split_variants(name, config)
    if variant not in known:
        raise ValueError(f"dataset_splits.{name}: unknown variant {variant!r}; known: {sorted(known)}")
    return json.dumps(known[variant], sort_keys=True)


def read_record(root: Path | str, name: str) -> dict:
    """The ``.verified`` record of a fetched dataset (raises FileNotFoundError naming the command to run)."""
    path = dataset_dir(root, name) / VERIFIED
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset {name!r} not fetched; run `taskbal data fetch {name} "
                                f"--root {root}` or `snakemake data_{name}`")
    return json.loads(path.read_text())


def uses_offline_root(name: str) -> bool:
    """Whether dataset ``name`` has an offline copy read from ``<offline_root>/<name>/`` (its ``offline``
    takes ``offline_root``)."""
    import inspect

    offline = getattr(dataset_module(name), "offline", None)
    return offline is not None and "offline_root" in inspect.signature(offline).parameters


def describe(name: str) -> dict:
    """How a dataset is obtained: 'automatic', 'manual', 'offline' (no network needed), file count."""
    module = dataset_module(name)
    files = module.FILES
    checks = sorted({"sha256" if f.sha256 else "md5" if f.md5 else "none" for f in files})
    how = "manual" if any(f.manual for f in files) else "automatic"
    if hasattr(module, "offline"):
        how += "+offline"
    return {"name": name, "how": how, "files": len(files), "checksums": ",".join(checks),
            "summary": (module.__doc__ or "").strip().splitlines()[0]}


def _local_roots(local: Path, workdir: Path, names: set[str]) -> list[Path]:
    """A user-given local source: a directory, an archive holding the files, or a single file."""
    if not local.exists():
        raise FileNotFoundError(f"{local}: local dataset source not found (config datasets.<name>.local)")
    if local.is_file() and (local.name in names or
                            not local.name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))):
        return [local, local.parent]  # one of the dataset's own files (e.g. its archive): used as is
    if local.is_file():
        unpack = workdir / "local"
        safe_extract(local, unpack)
        return [unpack, local.parent]
    return [local]


def _check_placed(path: Path, spec: FileSpec, recorded: dict) -> str:
    """Verify a file already in place; reuse the previous record when size and mtime are unchanged."""
    entry = recorded.get(spec.name)
    info = path.stat()
    if entry and entry.get("size") == info.st_size and entry.get("mtime_ns") == info.st_mtime_ns:
        return entry.get("verified_by", "record")
    how = verify_spec(path, spec)
    if how == "none" and entry and entry.get("sha256"):
        if file_digest(path) != entry["sha256"]:
            raise ChecksumError(f"{path}: SHA-256 differs from the one recorded when it was first fetched")
        how = "recorded sha256"
    return how


def fetch_dataset(name: str, root: Path | str = "resources", *, local: Path | str | None = None,
                  offline_only: bool = False, offline_root: Path | str | None = None, progress: bool = True,
                  retries: int = 5, backoff: float = 1.0, timeout: float = 60.0) -> dict:
    """Obtain, verify and unpack dataset ``name`` under ``<root>/<name>/``; return its record.

    Sources, in order: files already in place (verified again unless unchanged since the last
    record); the user's ``local`` directory / archive; the module's offline source when it is
    preferred; the upstream URLs; the module's offline source as a fallback. ``offline_root`` is a
    folder of offline copies (``<offline_root>/<name>/``), handed to modules whose ``offline`` takes it
    (:func:`uses_offline_root`); a relative one is relative to the working directory. Raises
    :class:`ManualDownloadRequired` when files are missing and must be placed by hand.
    """
    module = dataset_module(name)
    target = dataset_dir(root, name)
    target.mkdir(parents=True, exist_ok=True)
    with _locked(target / ".lock", name):
        return _fetch_locked(module, name, root, target, Path(local).expanduser() if local else None,
                             offline_only=offline_only, offline_root=offline_root, progress=progress,
                             retries=retries, backoff=backoff, timeout=timeout)


@contextmanager
def _locked(path: Path, name: str):
    """One fetch of a dataset at a time (a second process waits for the first)."""
    import fcntl

    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{name}: waiting for another fetch of this dataset to finish", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_locked(module: ModuleType, name: str, root, target: Path, local: Path | None, *, offline_only: bool,
                  offline_root, progress: bool, retries: int, backoff: float, timeout: float) -> dict:
    record_path = target / VERIFIED
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    recorded = previous.get("files", {})
    record_path.unlink(missing_ok=True)  # only a complete run writes it back
    files: dict[str, dict] = {}
    sources: list[str] = []

    takes_root = uses_offline_root(name)
    has_offline = hasattr(module, "offline") and (offline_root is not None or not takes_root)

    def offline(workdir: Path) -> str | None:
        if takes_root:
            return module.offline(target, workdir, progress, offline_root=offline_root)
        return module.offline(target, workdir, progress)

    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target) as work:
        workdir = Path(work)
        roots = _local_roots(local, workdir, {Path(s.name).name for s in module.FILES}) if local else []
        offline_source = None
        if getattr(module, "PREFER_OFFLINE", False) and has_offline:
            missing = [s for s in module.FILES if not (target / s.name).is_file()]
            if missing and not roots:
                offline_source = offline(workdir)
                if offline_source:
                    sources.append(offline_source)
        missing, network_failed = [], ""
        for spec in module.FILES:
            path = target / spec.name
            how = None
            found = find_file(Path(spec.name).name, roots) if roots and not path.is_file() else None
            if path.is_file():
                how = _check_placed(path, spec, recorded)
                if offline_source is None and "in place" not in sources:
                    sources.append("in place")
            elif found is not None:
                how = verify_spec(found, spec)
                copy_atomic(found, path)
                if f"local {local}" not in sources:
                    sources.append(f"local {local}")
            elif spec.urls and not offline_only and not spec.manual and not network_failed:
                try:
                    fetch(spec.urls, path, spec.sha256, md5=None if spec.sha256 else spec.md5,
                          size=spec.size, retries=retries, backoff=backoff, progress=progress, timeout=timeout)
                    how = "sha256" if spec.sha256 else "md5" if spec.md5 else "none"
                    if "upstream" not in sources:
                        sources.append("upstream")
                except DownloadError as error:
                    if not has_offline:
                        manual = getattr(module, "MANUAL", None)
                        hint = getattr(module, "OFFLINE_HINT", None)
                        raise DownloadError(
                            f"dataset {name!r}: {error}\n" + (manual.strip() + "\n" if manual else "")
                            + (hint.strip() + "\n" if hint else "")
                            + f"With a copy obtained elsewhere: put it at {path}, or point config "
                            f"datasets.{name}.local (or --local) at a directory or archive holding it; it is "
                            "verified the same way.") from None
                    network_failed = str(error)
                    missing.append(spec)
                    continue
            else:
                missing.append(spec)
                continue
            files[spec.name] = {"verified_by": how}
        if roots and missing:
            raise FileNotFoundError(f"{local}: does not contain {', '.join(Path(s.name).name for s in missing)} "
                                    f"(files of dataset {name!r}; nothing else was found to take them from)")

        if missing:
            if has_offline and offline_source is None:
                offline_source = offline(workdir)
            if offline_source and getattr(module, "OFFLINE_REPLACES_FILES", False):
                sources = [offline_source]  # files of FILES already fetched are not what the record describes
                files = {}  # the offline source is different files (a subset, another packing): its own record
                missing = []
            elif offline_source:
                sources.append(offline_source)
                still = []
                for spec in missing:
                    path = target / spec.name
                    if path.is_file():
                        files[spec.name] = {"verified_by": verify_spec(path, spec)}
                    else:
                        still.append(spec)
                missing = still
        if missing:
            manual = getattr(module, "MANUAL", None) if any(s.manual for s in missing) else None
            lines = [f"  {target / spec.name}" + ("" if spec.manual or not spec.url else f"   (from {spec.url})")
                     for spec in missing]
            text = (manual.strip() + "\n\n" if manual else
                    f"dataset {name!r}: could not download these files ({network_failed or 'offline'}).\n"
                    + (module.OFFLINE_HINT.strip() + "\n" if getattr(module, "OFFLINE_HINT", None) else ""))
            raise ManualDownloadRequired(
                f"{text}Missing files (put each at exactly this path, or point config datasets.{name}.local "
                "at a directory or archive holding them; they are then verified against the checksums):\n"
                + "\n".join(lines) + f"\nThen run again: taskbal data fetch {name} --root {root}")

        for rel, entry in files.items():
            path = target / rel
            info = path.stat()
            old = recorded.get(rel, {})
            unchanged = old.get("size") == info.st_size and old.get("mtime_ns") == info.st_mtime_ns
            entry.update(sha256=old["sha256"] if unchanged and old.get("sha256") else file_digest(path),
                         size=info.st_size, mtime_ns=info.st_mtime_ns)
        module.prepare(target)
        extra = getattr(module, "offline_files", None)
        if extra and not files:
            files.update(extra(target))

    record = {"dataset": name, "source": "; ".join(sources) or "in place", "files": files,
              "unverified": sorted(rel for rel, e in files.items() if e["verified_by"] == "none"),
              "verified_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    fd, tmp = tempfile.mkstemp(prefix=".verified.", suffix=".tmp", dir=target)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, record_path)
    return record
