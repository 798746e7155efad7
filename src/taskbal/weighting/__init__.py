"""Outer combination of per-task meta-gradients: one file per method, one registry entry each."""
from __future__ import annotations

from ..options import OptionError, options_of
from .base import Combined, TaskGradients, Weighting
from .cagrad import CAGrad
from .damaml import DAMAML
from .explore_exploit import ExploreExploit
from .improvement import ImprovementFunction
from .mean import Mean
from .mgda import MGDA
from .pcgrad import PCGrad
from .simol import SIMOL
from .tow import TOW
from .tr_maml import TRMAML

REGISTRY: dict[str, type[Weighting]] = {
    "mean": Mean,
    "simol": SIMOL,
    "mgda": MGDA,
    "cagrad": CAGrad,
    "pcgrad": PCGrad,
    "improvement": ImprovementFunction,
    "tr_maml": TRMAML,
    "damaml": DAMAML,
    "explore_exploit": ExploreExploit,
    "tow": TOW,
}


def build_weighting(name: str, num_params: int, feature_dim: int, seed: int, section: str = "weighting",
                    **hparams) -> Weighting:
    """Instantiate the weighting called ``name`` (a key of REGISTRY) with its hyper-parameters, given in the
    config section ``section`` (errors name ``<section>.<option>``)."""
    with options_of(section):
        if name not in REGISTRY:
            raise OptionError("name", f"unknown method {name!r}; known: {sorted(REGISTRY)}")
        return REGISTRY[name](num_params=num_params, feature_dim=feature_dim, seed=seed, **hparams)


__all__ = ["REGISTRY", "build_weighting", "Combined", "TaskGradients", "Weighting"]
