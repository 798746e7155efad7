"""Figures drawn from training curves: one panel per column, one line per row.

Each line is the mean over seeds of a curve column (the panel's column ``curve``, by default
``test_mse``) against the
meta-training iteration, with a band of ±1 standard deviation over seeds (ddof=0, so a single
seed draws no band rather than failing). Only the iterations that every seed recorded are
drawn, so a seed with a longer or denser curve cannot shift the mean part-way along.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly instead of
pyplot: no global backend switch, no figure registry to leak into, safe to import anywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .curves import seed_mean_and_sd
from .figures_moo import plot_distance_to_pareto_set, plot_toy_trajectories
from .io import atomic_path
from .mtl.plots import plot_moblo_synthetic


def plot_curves(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                scale: str, y: str = "test_mse", title_suffix: str = "") -> Path:
    """Mean over seeds of ``y`` against the iteration, with a band of ±1 sd over seeds."""
    columns = spec["columns"]
    figure = Figure(figsize=(5.5 * len(columns), 4.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    colours = {row["label"]: f"C{i % 10}" for i, row in enumerate(spec["rows"])}  # same colour in every panel
    log_y = spec.get("log_y", True)
    for axis, column in zip(axes, columns):
        for row in spec["rows"]:
            per_seed = curves.get((row["label"], column["key"]))
            if not per_seed:
                continue
            iterations, mean, sd = seed_mean_and_sd(per_seed, column.get("curve", y))
            low = mean - sd
            if log_y:  # a band reaching zero or below cannot be drawn on a log axis
                low = np.where(low > 0, low, mean)
            axis.plot(iterations, mean, label=row["label"], color=colours[row["label"]], linewidth=1.4)
            axis.fill_between(iterations, low, mean + sd, color=colours[row["label"]], alpha=0.15, linewidth=0)
        axis.set_title(column["label"])
        axis.set_xlabel("meta-training iteration")
        axis.set_ylabel(spec.get("y_label", "meta-test MSE"))
        if log_y:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{spec['source']} — ours, scale {scale}{title_suffix}")
    figure.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=120, format="png")  # format given: the temporary name ends in .tmp
    return out_png


# Figure styles a figure config can name in ``figure: {style: ...}``: each draws one figure from
# the curves of its cells, plot(spec, curves, out_png, scale).
STYLES = {
    "curves": plot_curves,
    "distance_to_pareto_set": plot_distance_to_pareto_set,  # thesis Figs. 4.1-4.4
    "toy_trajectories": plot_toy_trajectories,  # SIMOL Fig. 1
    "moblo_synthetic": plot_moblo_synthetic,  # thesis Fig. A.1
}
