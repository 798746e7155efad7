"""Split lists that LibMTL ships (Office-31 / Office-Home 60/20/20 lists, QM9 random split).

URLs pin the LibMTL commit whose files the SHA-256s below were computed from.
"""
from __future__ import annotations

from ..download import FileSpec

COMMIT = "4336804847eaa5e0b924b743d76beec7ac3fdc97"
RAW = f"https://raw.githubusercontent.com/median-research-group/LibMTL/{COMMIT}/examples/"


def split_lists(dataset: str, table: tuple[tuple[str, str, int], ...]) -> tuple[FileSpec, ...]:
    """``data_txt/<dataset>/<domain>_<split>.txt``: lines ``<relative image path> <class index>``."""
    return tuple(FileSpec(f"data_txt/{name}", (f"{RAW}office/data_txt/{dataset}/{name}",), sha256=sha, size=size,
                          note=f"LibMTL {COMMIT[:7]}") for name, sha, size in table)
