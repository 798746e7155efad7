"""Figures drawn from training curves: one panel per column, one line per row."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402


def plot_curves(spec: dict, curves: dict[tuple[str, str], dict[int, pd.DataFrame]], out_png: Path,
                scale: str, y: str = "test_mse", title_suffix: str = "") -> Path:
    """Mean over seeds of ``y`` against the iteration, with a band of ±1 sd over seeds."""
    columns = spec["columns"]
    figure, axes = plt.subplots(1, len(columns), figsize=(5.5 * len(columns), 4.2), squeeze=False)
    for axis, column in zip(axes[0], columns):
        for row in spec["rows"]:
            per_seed = curves.get((row["label"], column["key"]))
            if not per_seed:
                continue
            stacked = np.stack([frame[y].to_numpy(dtype=float) for frame in per_seed.values()])
            iterations = next(iter(per_seed.values()))["iteration"].to_numpy()
            mean, sd = stacked.mean(0), stacked.std(0)
            axis.plot(iterations, mean, label=row["label"], linewidth=1.4)
            axis.fill_between(iterations, mean - sd, mean + sd, alpha=0.15)
        axis.set_title(column["label"])
        axis.set_xlabel("meta-training iteration")
        axis.set_ylabel(spec.get("y_label", "meta-test MSE"))
        if spec.get("log_y", True):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"{spec['source']} — ours, scale {scale}{title_suffix}")
    figure.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return out_png
