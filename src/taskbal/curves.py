"""Curves aggregated over seeds, shared by every figure style (taskbal.figures, taskbal.figures_moo,
taskbal.mtl.plots). Kept apart from the style modules so that their imports point one way."""
from __future__ import annotations

import numpy as np
import pandas as pd


def require_column(per_seed: dict[int, pd.DataFrame], y: str, where: str) -> None:
    """A curve without column ``y`` is an error naming the cell and seed, not a bare KeyError: a run trained
    before its family recorded ``y`` (the skewed sinusoid's worst bin along training) must be trained again."""
    for seed, frame in sorted(per_seed.items()):
        if y not in frame:
            raise ValueError(f"{where}, seed {seed}: its curve.csv has no column {y!r} (it has "
                             f"{list(frame.columns)}); a run trained before the curve recorded {y!r} must be "
                             "trained again (delete its seed folder under results/runs/ and build again)")


def seed_mean_and_sd(per_seed: dict[int, pd.DataFrame], y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(iterations common to all seeds, mean over seeds, sd over seeds) of column ``y``."""
    series = [frame.set_index("iteration")[y].astype(float) for _, frame in sorted(per_seed.items())]
    aligned = pd.concat(series, axis=1, join="inner").sort_index()
    return aligned.index.to_numpy(), aligned.mean(axis=1).to_numpy(), aligned.std(axis=1, ddof=0).to_numpy()


def final_values(per_seed: dict[int, pd.DataFrame], y: str) -> np.ndarray:
    """Each seed's ``y`` at the last point of its curve (the end of training), in seed order."""
    return np.array([float(frame.sort_values("iteration")[y].iloc[-1]) for _, frame in sorted(per_seed.items())])
