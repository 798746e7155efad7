"""Small file helpers: atomic writes and content hashes.

Every file a rule declares as output is written to a temporary name in the same
directory and renamed into place, so a killed job never leaves a half-written
file that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_leftover_temporaries(folder: Path | str, names) -> None:
    """Delete the temporary files ``atomic_path`` left for ``names`` in ``folder`` when a process was
    killed while writing (only the job that owns the folder may call this)."""
    for name in names:
        for leftover in Path(folder).glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def write_json(path: Path | str, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar(path: Path | str) -> Path:
    """The JSON file beside a split or problem file that records how it was made and its SHA-256."""
    return Path(path).with_suffix(".json")


def write_arrays(path: Path | str, arrays: dict, meta: dict) -> dict:
    """Write ``arrays`` to the ``.npz`` file ``path`` (atomically) and ``meta`` with the file's SHA-256 to
    its sidecar, the pair ``verified_sidecar`` reads back; returns the sidecar's content."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    meta = {**meta, "sha256": sha256_file(path)}
    meta["sidecar_sha256"] = sidecar_hash(meta)
    write_json(sidecar(path), meta)
    return meta


def sidecar_hash(meta: dict) -> str:
    """SHA-256 of a sidecar's own content (its file hash included, this entry excluded): the metadata a
    reader trusts (shots, sizes) is checked as the arrays are."""
    text = json.dumps({k: v for k, v in meta.items() if k != "sidecar_sha256"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_arrays(path: Path | str) -> tuple[dict, dict[str, np.ndarray]]:
    """A split file written by :func:`write_arrays`: (its verified sidecar, every array in memory)."""
    meta = verified_sidecar(path, "split")
    with np.load(path) as handle:
        return meta, {key: handle[key] for key in handle.files}


def verified_sidecar(path: Path | str, kind: str = "split") -> dict:
    """The sidecar of ``path`` once the file's SHA-256 matches the one recorded there; a missing or
    changed file is an error naming it (a stale split must never be read as the one recorded)."""
    path = Path(path)
    if not path.exists() or not sidecar(path).exists():
        raise FileNotFoundError(f"{kind} file {path} (or its sidecar {sidecar(path).name}) is missing; "
                                "run the split rule first")
    meta = read_json(sidecar(path))
    if meta.get("sidecar_sha256") != sidecar_hash(meta):
        raise ValueError(f"{kind} file {path}: its sidecar {sidecar(path).name} was changed after it was written "
                         "(its content does not match the SHA-256 recorded in it); delete both and rerun the "
                         "split rule")
    actual = sha256_file(path)
    if actual != meta["sha256"]:
        raise ValueError(f"{kind} file {path}: SHA-256 {actual} does not match {meta['sha256']} "
                         f"recorded in {sidecar(path).name}; delete both and rerun the split rule")
    return meta


def stable_hash(data: dict, length: int = 8) -> str:
    """A short hash of a JSON-serialisable dict that does not depend on key order."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
