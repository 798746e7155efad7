"""The episodic meta-learning runner: the one training loop and the meta-test evaluation."""
from __future__ import annotations

from ..evaluate import evaluate
from ..train import train

__all__ = ["train", "evaluate"]
