"""Networks used as meta-learners (and as SIMOL's re-weighting network), built from a ``model:`` section.

``build_model(model_cfg, io_dims)``: ``model_cfg`` is the experiment's ``model`` section
(``name`` defaults to ``mlp`` so configs written before the registry keep working; every other key
is an option of that network's ``build`` function, unknown keys are an error naming
``model.<key>``), ``io_dims`` the task family's (input size or shape (C, H, W), outputs or n_way).

Registry names: ``mlp``, ``conv4``, ``resnet12``, ``resnet10`` — one file each, whose docstring
lists the options. Networks that meta-learners treat as "embedding + head" (conv4, resnets) expose
``embedding`` and ``head`` sub-modules; ProtoNet uses the embedding only. ``num_context`` is the
number of CAVIA context parameters the network accepts (``model.context``; 0 = none).
"""
from __future__ import annotations

import inspect

from torch import nn

from . import conv4, mlp, resnet10, resnet12
from .conv4 import Conv4
from .mlp import MLP
from .resnet10 import ResNet10
from .resnet12 import ResNet12

MODELS = {"mlp": mlp.build, "conv4": conv4.build, "resnet12": resnet12.build, "resnet10": resnet10.build}

__all__ = ["MLP", "Conv4", "ResNet12", "ResNet10", "MODELS", "build_model", "check_model_options"]


def check_model_options(model_cfg: dict) -> None:
    """Name and option keys of a ``model:`` section, without building anything."""
    name = model_cfg.get("name", "mlp")
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; known: {sorted(MODELS)}")
    known = [p for p in inspect.signature(MODELS[name]).parameters if p != "io_dims"]
    unknown = sorted(set(model_cfg) - {"name"} - set(known))
    if unknown:
        raise ValueError(f"model.{unknown[0]}: unknown option of model {name!r}; known: {sorted(known)}")


def build_model(model_cfg: dict, io_dims) -> nn.Module:
    """The network of an experiment's ``model`` section for a task family with the given io_dims."""
    check_model_options(model_cfg)
    options = {key: value for key, value in model_cfg.items() if key != "name"}
    return MODELS[model_cfg.get("name", "mlp")](io_dims, **options)
