"""Task families and datasets: each family writes its splits to a file and reads them back."""
from __future__ import annotations

from . import sinusoid

FAMILIES = {"sinusoid": sinusoid}


def family_module(name: str):
    if name not in FAMILIES:
        raise ValueError(f"data.family: unknown task family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
