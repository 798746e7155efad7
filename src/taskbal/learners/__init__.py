"""Inner adaptation (the base learners), batched over the tasks of a meta-batch."""
from __future__ import annotations

from torch import nn

from .cavia import CAVIA
from .maml import MAML, TaskBatch
from .metasgd import MetaSGD
from .protonet import ProtoNet
from .reptile import Reptile

REGISTRY = {"maml": MAML, "metasgd": MetaSGD, "cavia": CAVIA, "reptile": Reptile, "protonet": ProtoNet}


def build_learner(name: str, model: nn.Module, **options):
    if name not in REGISTRY:
        raise ValueError(f"learner.name: unknown learner {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](model, **options)


def learner_for(experiment: dict, model: nn.Module):
    """The learner of a resolved experiment (its ``learner`` section) around ``model``."""
    options = {key: value for key, value in experiment["learner"].items() if key != "name"}
    return build_learner(experiment["learner"]["name"], model, **options)


__all__ = ["MAML", "TaskBatch", "REGISTRY", "build_learner", "learner_for"]
