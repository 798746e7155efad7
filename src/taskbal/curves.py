"""Curves aggregated over seeds, shared by every figure style (taskbal.figures, taskbal.figures_moo,
taskbal.mtl.plots). Kept apart from the style modules so that their imports point one way."""
from __future__ import annotations

import numpy as np
import pandas as pd


def seed_mean_and_sd(per_seed: dict[int, pd.DataFrame], y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(iterations common to all seeds, mean over seeds, sd over seeds) of column ``y``."""
    series = [frame.set_index("iteration")[y].astype(float) for _, frame in sorted(per_seed.items())]
    aligned = pd.concat(series, axis=1, join="inner").sort_index()
    return aligned.index.to_numpy(), aligned.mean(axis=1).to_numpy(), aligned.std(axis=1, ddof=0).to_numpy()
