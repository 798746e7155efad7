"""Figure styles of the multi-objective toy and benchmarks (registered in taskbal.figures.STYLES).

``distance_to_pareto_set`` draws the thesis' Figs. 4.1–4.4: per column (problem or dimension) the
mean over seeds of E = dist(μ_t, P) against the iteration, one line per method, log scale (the
thesis reports "the mean value of E over 3 independent runs"). E is exactly 0 once a solution is
inside the l1 problem's Pareto box; such values are drawn at the floor 1e-12.

``toy_trajectories`` draws SIMOL's Figure 1: per column (start point, optimiser) the trajectory of
every method and seed in objective space (f₁, f₂) against the analytic Pareto front in black (top),
and in parameter space (x₁, x₂) against the Pareto set (bottom).

Both follow taskbal.figures: a plain ``Figure`` with the Agg canvas and an atomic write.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .curves import seed_mean_and_sd
from .io import atomic_path

DISTANCE_FLOOR = 1e-12


def save(figure: Figure, out_png: Path) -> Path:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=120, format="png")  # format given: the temporary name ends in .tmp
    return out_png


def plot_distance_to_pareto_set(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                                scale: str, finals: dict | None = None) -> Path:
    columns = spec["columns"]
    figure = Figure(figsize=(5.0 * len(columns), 4.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    colours = {row["label"]: f"C{i % 10}" for i, row in enumerate(spec["rows"])}
    for axis, column in zip(axes, columns):
        for row in spec["rows"]:
            per_seed = curves.get((row["label"], column["key"]))
            if not per_seed:
                continue
            iterations, mean, _ = seed_mean_and_sd(per_seed, "distance")
            axis.plot(iterations, np.maximum(mean, DISTANCE_FLOOR), label=row["label"], color=colours[row["label"]],
                      linewidth=1.4)
        axis.set_title(column["label"])
        axis.set_xlabel("iteration")
        axis.set_ylabel(spec.get("y_label", "E = dist(x, P), mean over seeds"))
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{spec['source']} — ours, scale {scale}")
    figure.tight_layout()
    return save(figure, out_png)


def plot_toy_trajectories(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                          scale: str, finals: dict | None = None) -> Path:
    from .data.simol_toy import pareto_front

    front = pareto_front(401)
    columns = spec["columns"]
    figure = Figure(figsize=(4.6 * len(columns), 8.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(columns), squeeze=False)
    colours = {row["label"]: f"C{i % 10}" for i, row in enumerate(spec["rows"])}
    for j, column in enumerate(columns):
        objective_axis, parameter_axis = axes[0, j], axes[1, j]
        objective_axis.plot(front["f1"], front["f2"], color="black", linewidth=2.5, label="Pareto front", zorder=1)
        parameter_axis.plot(front["x1"], front["x2"], color="black", linewidth=2.5, label="Pareto set", zorder=1)
        for row in spec["rows"]:
            per_seed = curves.get((row["label"], column["key"])) or {}
            for k, (_seed, frame) in enumerate(sorted(per_seed.items())):
                label = row["label"] if k == 0 else None
                style = dict(color=colours[row["label"]], linewidth=1.0, alpha=0.8, zorder=2)
                objective_axis.plot(frame["f1"], frame["f2"], label=label, **style)
                parameter_axis.plot(frame["x1"], frame["x2"], label=label, **style)
                for axis, (a, b) in ((objective_axis, ("f1", "f2")), (parameter_axis, ("x1", "x2"))):
                    axis.scatter(frame[a].iloc[-1], frame[b].iloc[-1], color=colours[row["label"]], marker="*",
                                 s=60, zorder=3)
            if per_seed:
                first = next(iter(per_seed.values()))
                parameter_axis.scatter(first["x1"].iloc[0], first["x2"].iloc[0], color="grey", marker="o", zorder=3)
        objective_axis.set_xlim(-22, 12)
        objective_axis.set_ylim(-22, 12)
        parameter_axis.set_xlim(-12, 12)
        parameter_axis.set_ylim(-12, 12)
        objective_axis.set_title(column["label"])
        objective_axis.set_xlabel("f1")
        objective_axis.set_ylabel("f2")
        parameter_axis.set_xlabel("x1")
        parameter_axis.set_ylabel("x2")
        for axis in (objective_axis, parameter_axis):
            axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    figure.suptitle(f"{spec['source']} — ours, scale {scale} (stars: final points; grey dot: start)")
    figure.tight_layout()
    return save(figure, out_png)
