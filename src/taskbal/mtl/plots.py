"""Figure style ``moblo_synthetic``: the four panels of the thesis' Figure A.1 (Ye 2024, App. A.1.4).

    (a) optimality gap E = dist(z, P) against the UL iteration, for the columns (initialisations)
        listed in ``figure.panel_a`` (the thesis: ω₀ = (0, 3), α₀ ∈ {0, 2}), one line per row (method)
    (b) the same for ``figure.panel_b`` (the thesis: α₀ = 2, ω₀ ∈ {(0, 3), (3, 3)})
    (c) the stationarity gap K(z) of the rows in ``figure.focus_rows`` (the thesis: FORUM), one
        line per column
    (d) the constraint value q(z) of the same rows, one line per column

Each line is the mean over seeds of the curve column (``distance``, ``stationarity``,
``constraint``); the y axes are logarithmic, so values are floored at ``figure.floor`` (default
1e-30: exact zeros, e.g. q = 0 at a point on the LL solution, cannot be drawn on a log axis).
Colours identify rows in (a, b) and columns in (c, d); line styles identify columns in (a, b).

Registered in taskbal.figures.STYLES. This module must not import taskbal.figures (figures.py
imports it to register the style); the shared helper comes from taskbal.curves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..curves import seed_mean_and_sd

LINE_STYLES = ("-", "--", ":", "-.")
PANELS = (("a", "distance", "optimality gap E"), ("b", "distance", "optimality gap E"),
          ("c", "stationarity", "stationarity gap K(z)"), ("d", "constraint", "constraint q(z)"))


def _mean_curve(per_seed: dict[int, pd.DataFrame], column: str):
    if not per_seed or any(column not in frame.columns for frame in per_seed.values()):
        return None
    iterations, mean, _ = seed_mean_and_sd(per_seed, column)
    keep = np.isfinite(mean)
    return iterations[keep], mean[keep]


def plot_moblo_synthetic(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                         scale: str, finals: dict | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_path

    options = spec.get("figure") or {}
    column_keys = [column["key"] for column in spec["columns"]]
    labels = {column["key"]: column["label"] for column in spec["columns"]}
    panel_columns = {"a": options.get("panel_a", column_keys), "b": options.get("panel_b", column_keys)}
    for panel, keys in panel_columns.items():
        unknown = [key for key in keys if key not in labels]
        if unknown:
            raise ValueError(f"figure.panel_{panel}: unknown column key {unknown[0]!r}; known: {column_keys}")
    row_labels = [row["label"] for row in spec["rows"]]
    focus_rows = options.get("focus_rows", row_labels[-1:])
    unknown_rows = [row for row in focus_rows if row not in row_labels]
    if unknown_rows:
        raise ValueError(f"figure.focus_rows: unknown row {unknown_rows[0]!r}; known: {row_labels}")
    floor = float(options.get("floor", 1e-30))
    row_colour = {label: f"C{i % 10}" for i, label in enumerate(row_labels)}
    column_colour = {key: f"C{i % 10}" for i, key in enumerate(column_keys)}
    column_style = {key: LINE_STYLES[i % len(LINE_STYLES)] for i, key in enumerate(column_keys)}

    figure = Figure(figsize=(12, 9))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2).ravel()
    for axis, (panel, value, y_label) in zip(axes, PANELS):
        if panel in panel_columns:
            lines = [(row, key, row_colour[row], column_style[key], f"{row}, {labels[key]}")
                     for key in panel_columns[panel] for row in row_labels]
        else:
            lines = [(row, key, column_colour[key], LINE_STYLES[i % len(LINE_STYLES)], f"{row}, {labels[key]}")
                     for i, row in enumerate(focus_rows) for key in column_keys]
        for row, key, colour, style, label in lines:
            curve = _mean_curve(curves.get((row, key), {}), value)
            if curve is None:
                continue
            iterations, mean = curve
            axis.plot(iterations, np.maximum(mean, floor), color=colour, linestyle=style, linewidth=1.4, label=label)
        axis.set_yscale("log")
        axis.set_xlabel("UL iteration")
        axis.set_ylabel(y_label)
        axis.set_title(f"({panel}) {y_label}")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.suptitle(f"{spec['source']} — ours, scale {scale}")
    figure.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    return out_png
