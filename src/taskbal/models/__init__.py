"""Networks used as meta-learners and as re-weighting networks."""
from __future__ import annotations

from .mlp import MLP

__all__ = ["MLP", "build_model"]


def build_model(family_io: tuple[int, int], hidden: list[int]) -> MLP:
    """The meta-learner for a task family with (input, output) sizes ``family_io``."""
    in_dim, out_dim = family_io
    return MLP(in_dim, list(hidden), out_dim)
