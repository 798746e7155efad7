"""Black-box (gradient-free) optimisers: ASMG (thesis Ch. 4) and the baselines of its Figs. 4.1–4.4.

One file per method; ``OPTIMIZERS`` maps the config name (``weighting.name`` of a blackbox_moo
experiment) to its class. ASMG and ASMG-EW are multi-objective; ES, BES, CMA-ES and MMES minimise the
equal-weight sum of the objectives, as in the thesis.
"""
from __future__ import annotations

import numpy as np

from .asmg import ASMG, ASMGEW
from .base import BlackBoxOptimizer
from .bes import BES
from .cmaes import CMAES
from .cmaes_pycma import PyCMAES
from .es import ES
from .mmes import MMES

OPTIMIZERS: dict[str, type[BlackBoxOptimizer]] = {
    "asmg": ASMG,
    "asmg_ew": ASMGEW,
    "es": ES,
    "bes": BES,
    "cmaes": CMAES,
    "cmaes_pycma": PyCMAES,  # the thesis' CMA-ES (pycma's defaults)
    "mmes": MMES,
}


def build_optimizer(name: str, dim: int, num_objectives: int, population: int, mean: np.ndarray,
                    rng: np.random.Generator, init_sigma: float = 1.0, **options) -> BlackBoxOptimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"weighting.name: unknown black-box optimiser {name!r}; known: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](dim, num_objectives, population, mean, rng, init_sigma=init_sigma, **options)


__all__ = ["OPTIMIZERS", "BlackBoxOptimizer", "build_optimizer"]
