"""Figures drawn from training curves, one line per row.

``curves`` (the default style): one panel per column. Each line is the mean over seeds of a curve
column (the panel's column ``curve``, by default ``test_mse``) against the meta-training iteration,
with a band of ±1 standard deviation over seeds (ddof=0, so a single seed draws no band rather than
failing). Only the iterations that every seed recorded are drawn, so a seed with a longer or denser
curve cannot shift the mean part-way along. ``figure.ema: <smoothing>`` draws the exponential moving
average of the mean and the band (TOW's figures: smoothing factor 0.1).

``sweep``: the x axis is a setting, not the iteration (Nash-GBML Figs. 3-10: the test MSE against
the meta-batch size or the inner step size; thesis Fig. 3.1: time and memory per iteration against T
and p). Each column is one value of the setting (its ``x``), each panel one curve column or one number
of the runs' eval.json / train.json (``figure.panels``), and each line the mean over seeds of that
column's value at the end of training, with the Student-t 95 % CI over seeds as error bars.

``task_curves``: one panel per column, one line per curve.csv column the column lists in ``curves``
(thesis Fig. 5.2: every task's position p_i along training, one panel per dataset), each the mean over
seeds with a band of ±1 sd, for the figure's first row that has runs in that column; the legend names
each line by its curve column with the prefix they share removed.

Every style is called ``plot(spec, curves, out_png, scale, finals)``: the cells' curves and their
numbers (eval.json, train.json and the curve means, per seed), from the rule's declared inputs.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly instead of
pyplot: no global backend switch, no figure registry to leak into, safe to import anywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from .curves import final_values, require_column, seed_mean_and_sd
from .figures_moo import plot_distance_to_pareto_set, plot_toy_trajectories
from .io import atomic_path
from .mtl.plots import plot_moblo_synthetic
from .stats import t_ci95


def plot_curves(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                scale: str, finals: dict | None = None, y: str = "test_mse", title_suffix: str = "") -> Path:
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
            require_column(per_seed, column.get("curve", y), f"row {row['label']!r}, column {column['key']!r}")
            iterations, mean, sd = seed_mean_and_sd(per_seed, column.get("curve", y))
            smoothing = (spec.get("figure") or {}).get("ema")
            if smoothing:
                mean, sd = exponential_moving_average(mean, smoothing), exponential_moving_average(sd, smoothing)
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
    return save(figure, f"{spec['source']} — ours, scale {scale}{title_suffix}", out_png)


def exponential_moving_average(values: np.ndarray, smoothing: float) -> np.ndarray:
    """s_t = smoothing · s_(t−1) + (1 − smoothing) · x_t, s_0 = x_0: TensorBoard's and aim's "smoothing factor"
    (TOW's figures: 0.1, light smoothing). Linear, so the mean over seeds of smoothed curves is this of the mean."""
    out = np.empty(len(values), dtype=float)
    for index, value in enumerate(np.asarray(values, dtype=float)):
        out[index] = value if index == 0 else smoothing * out[index - 1] + (1 - smoothing) * value
    return out


def save(figure: Figure, title: str, out_png: Path) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=120, format="png")  # format given: the temporary name ends in .tmp
    return out_png


def panel_values(per_seed_curves: dict | None, per_seed_finals: dict | None, panel: dict,
                 where: str) -> np.ndarray | None:
    """Each seed's value of a sweep panel for one cell, in seed order: the curve's ``curve`` column at the end
    of training, or the run's number ``value`` (a key of its eval.json or train.json); None for a cell not
    run at this scale."""
    if "value" in panel:
        if not per_seed_finals:
            return None
        missing = [seed for seed, numbers in sorted(per_seed_finals.items()) if panel["value"] not in numbers]
        if missing:
            raise ValueError(f"{where}, seed {missing[0]}: no {panel['value']!r} in its eval.json or train.json")
        return np.array([float(numbers[panel["value"]]) for _, numbers in sorted(per_seed_finals.items())])
    if not per_seed_curves:
        return None
    require_column(per_seed_curves, panel["curve"], where)
    return final_values(per_seed_curves, panel["curve"])


def sweep_points(spec: dict, row: str, panel: dict, curves: dict,
                 finals: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean over seeds, 95 % CI over seeds) of a panel's value for one row, over the panel's columns (its
    ``columns``, default all) this row was run in (a column left out at this scale has no point)."""
    points = []
    for column in spec["columns"]:
        if panel.get("columns") and column["key"] not in panel["columns"]:
            continue
        key = (row, column["key"])
        where = f"row {row!r}, column {column['key']!r}"
        values = panel_values(curves.get(key), (finals or {}).get(key), panel, where)
        if values is None:
            continue
        if "x" not in column:
            raise ValueError(f"figure style sweep: column {column['key']!r} has no x (the swept value)")
        points.append((float(column["x"]), float(values.mean()), t_ci95(values)))  # NaN for one seed
    x, mean, ci = (np.array(v) for v in zip(*sorted(points))) if points else (np.array([]),) * 3
    return x, mean, ci


def plot_sweep(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
               scale: str, finals: dict | None = None) -> Path:
    """Final statistics against a swept setting: one panel per ``figure.panels`` entry, x = each column's
    ``x``, one line per row with 95 % CI error bars over seeds. A panel is ``{curve, label}`` (a curve.csv
    column at the end of training) or ``{value, label}`` (a number of the runs' eval.json or train.json, as
    ``step_seconds_median`` or ``peak_memory_mb``), with optionally its own ``columns`` (one sweep of several
    in a figure: thesis Figure 3.1 sweeps T in two panels and p in two), ``x_label``, ``y_label`` and
    ``log_x``."""
    settings = spec.get("figure") or {}
    panels = settings.get("panels")
    if not panels:
        raise ValueError("figure style sweep: figure.panels must list the curve columns to draw ({curve, label})")
    figure = Figure(figsize=(5.0 * len(panels), 4.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels):
        ticks: set[float] = set()  # the swept values run at this scale
        for i, row in enumerate(spec["rows"]):
            x, mean, ci = sweep_points(spec, row["label"], panel, curves, finals)
            ticks.update(x.tolist())
            if x.size:
                axis.errorbar(x, mean, yerr=np.nan_to_num(ci), label=row["label"], color=f"C{i % 10}",
                              marker="o", markersize=4, linewidth=1.4, capsize=3)
        if panel.get("log_x", settings.get("log_x")):
            axis.set_xscale("log")
            axis.xaxis.set_minor_locator(NullLocator())  # only the swept values are labelled
        axis.set_xticks(sorted(ticks), [f"{t:,.0f}" if t >= 1e4 else f"{t:g}" for t in sorted(ticks)])
        axis.set_title(panel["label"])
        axis.set_xlabel(panel.get("x_label", settings.get("x_label", "setting")))
        axis.set_ylabel(panel.get("y_label", spec.get("y_label", "meta-test MSE")))
        if spec.get("log_y", False):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save(figure, f"{spec['source']} — ours, scale {scale} (end of training; bars: 95 % CI over seeds)",
                out_png)


def shared_prefix(names: list[str]) -> str:
    """The longest prefix ending in '_' that every name has (``position_amazon``, ``position_dslr``: ``position_``)."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[:prefix.rfind("_") + 1] if len(names) > 1 else ""


def plot_task_curves(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                     scale: str, finals: dict | None = None) -> Path:
    """Several curve columns of one run per panel: mean over seeds with a band of ±1 sd over seeds."""
    columns = spec["columns"]
    figure = Figure(figsize=(5.5 * len(columns), 4.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    for axis, column in zip(axes, columns):
        names = column.get("curves") or []
        if not names:
            raise ValueError(f"figure style task_curves: column {column['key']!r} lists no `curves`")
        row = next((row["label"] for row in spec["rows"] if curves.get((row["label"], column["key"]))), None)
        if row is None:
            continue
        per_seed = curves[row, column["key"]]
        prefix = shared_prefix(names)
        for index, name in enumerate(names):
            require_column(per_seed, name, f"row {row!r}, column {column['key']!r}")
            iterations, mean, sd = seed_mean_and_sd(per_seed, name)
            axis.plot(iterations, mean, label=name[len(prefix):], color=f"C{index % 10}", linewidth=1.4)
            axis.fill_between(iterations, mean - sd, mean + sd, color=f"C{index % 10}", alpha=0.15, linewidth=0)
        axis.set_title(f"{column['label']} ({row})")
        axis.set_xlabel("training iteration")
        axis.set_ylabel(spec.get("y_label", "value"))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save(figure, f"{spec['source']} — ours, scale {scale}", out_png)


# Figure styles a figure config can name in ``figure: {style: ...}``: each draws one figure from
# the curves of its cells, plot(spec, curves, out_png, scale).
STYLES = {
    "curves": plot_curves,
    "sweep": plot_sweep,  # Nash-GBML Figs. 3-10: final test MSE against the batch or step size
    "distance_to_pareto_set": plot_distance_to_pareto_set,  # thesis Figs. 4.1-4.4
    "toy_trajectories": plot_toy_trajectories,  # SIMOL Fig. 1
    "moblo_synthetic": plot_moblo_synthetic,  # thesis Fig. A.1
    "task_curves": plot_task_curves,  # thesis Fig. 5.2: every task's position along training
}
