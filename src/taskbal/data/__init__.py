"""Task families and datasets: each family writes its splits to a file and reads them back."""
from __future__ import annotations

from . import (binary_mnist, blackbox_moo, fewshot_blobs, hyper_cleaning, moblo_synthetic, simol_toy,
               sinusoid, skewed_sinusoid)

FAMILIES = {
    "sinusoid": sinusoid,                # SIMOL Table 1: uniform amplitude and phase
    "skewed_sinusoid": skewed_sinusoid,  # TR-MAML / Nash-GBML: skewed amplitude bins
    "simol_toy": simol_toy,              # SIMOL Figure 1: the two-objective toy
    "moblo_synthetic": moblo_synthetic,  # thesis App. A.1.4: the synthetic MOBLO problem
    "blackbox_moo": blackbox_moo,        # thesis Ch. 4: synthetic black-box problems
    "binary_mnist": binary_mnist,        # DA-MAML Figure 1: eight binary MNIST / Fashion-MNIST tasks
    "hyper_cleaning": hyper_cleaning,    # thesis Table 3.2: data hyper-cleaning
    "fewshot_blobs": fewshot_blobs,      # generated N-way K-shot classification (tests, SIMOL for ProtoNet)
}


def family_module(name: str):
    if name not in FAMILIES:
        raise ValueError(f"data.family: unknown task family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]
