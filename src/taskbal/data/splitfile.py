"""The split file of a real dataset: canonical JSON with its own SHA-256.

One file per (dataset, protocol, options) holds everything training and evaluation need
to know about which data go where::

    {"format": "taskbal-splits/1", "dataset": ..., "protocol": ..., "exact": true|false,
     "deviation": "..." (when not exact), "complete": true|false (the dataset has the published
     size; false on partial or generated copies), "options": {...}, "unit": "class" | "image" | "molecule",
     "counts": {split: {...}}, "splits": {split: {...}}, "episodes": {split: {...}} (optional),
     "sha256": "<hex>"}

``sha256`` is the SHA-256 of the canonical serialisation of every other field
(``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)``). The file
itself is that same canonical serialisation with the hash added, plus a newline, so the
same input always gives a byte-identical file and a reader can check the content
without any sidecar.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..io import atomic_path

FORMAT = "taskbal-splits/1"
SPLITS = ("train", "val", "test")


def canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_hash(data: dict) -> str:
    body = {key: value for key, value in data.items() if key != "sha256"}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def write_split_file(path: Path | str, data: dict) -> dict:
    """Add ``format`` and ``sha256`` to ``data`` and write it atomically; returns the written dict."""
    data = {**data, "format": FORMAT}
    data.pop("sha256", None)
    data["sha256"] = content_hash(data)
    with atomic_path(path) as tmp:
        tmp.write_text(canonical(data) + "\n")
    return data


def read_split_file(path: Path | str) -> dict:
    """Read a split file and check its hash; a mismatch names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"split file {path}: not valid JSON ({error})") from error
    if data.get("format") != FORMAT:
        raise ValueError(f"split file {path}: format {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("sha256") != content_hash(data):
        raise ValueError(f"split file {path}: sha256 field does not match its content (file modified?)")
    return data
