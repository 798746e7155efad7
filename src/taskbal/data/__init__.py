"""Task families and datasets: each family writes its splits to a file and reads them back."""
from __future__ import annotations

from . import sinusoid

FAMILIES = {"sinusoid": sinusoid}
from . import blackbox_moo, simol_toy  # noqa: E402  (thesis Ch. 4 problems, SIMOL Fig. 1 toy)
FAMILIES.update(blackbox_moo=blackbox_moo, simol_toy=simol_toy)
from . import skewed_sinusoid  # noqa: E402  (TR-MAML / Nash-GBML skewed amplitude bins)
FAMILIES.update(skewed_sinusoid=skewed_sinusoid)
from . import moblo_synthetic  # noqa: E402  (thesis App. A.1.4 synthetic MOBLO problem)
FAMILIES.update(moblo_synthetic=moblo_synthetic)


def family_module(name: str):
    if name not in FAMILIES:
        raise ValueError(f"data.family: unknown task family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
