"""Runner for multi-task learning (thesis Ye 2024: EW / MGDA / … baselines, NORMAL, MOML, FORUM).

The trainable, the options of the ``mtl`` section and the methods are described in taskbal/mtl/trainer.py;
the family contract (per-task tensors of images/labels) in taskbal/mtl/data.py. ``weighting.name``
is the method: a registered weighting (single-level, shared gradients combined by it), ``normal``,
or ``moml`` / ``forum`` (bi-level; ``mtl.bilevel`` picks hyper-cleaning or task weighting; the
thesis' MoCo baseline is ``moml`` with ``combiner: moco``).

train → out_dir/final.pt (the selected model), curve.csv (per-task training losses, weights, method
statistics, per-task accuracy/loss on ``mtl.curve_split``), train.json; resumes from resume.pt.
evaluate → eval.csv, one row per task of ``mtl.eval_split`` (default test) with its objective's
metrics (taskbal/mtl/objectives.py: classification accuracy (%), f1 (macro-F1, %); segmentation miou,
pixel_accuracy; depth abs_err, rel_err; normals angle_mean, angle_median, within_11_25, within_22_5,
within_30) and loss (a task's row leaves the others' metrics empty); eval.json (numbers only, MLflow logs
them as metrics) with mean_<metric> over the tasks that have it, the per-task values as <metric>_<task>,
and the selected iteration.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import EVAL as EVAL_FILE
from ..artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..io import atomic_path, write_json
from ..mtl.trainer import check_experiment, load_trained_model, settings, task_metrics
from ..mtl.trainer import train as train_mtl
from ..train import pick_device

__all__ = ["train", "evaluate", "check_experiment"]


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, stop_after: int | None = None, progress: bool = True) -> dict:
    check_experiment(experiment)
    return train_mtl(experiment, seed, Path(split_path), Path(out_dir), device=pick_device(device),
                     checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress)


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    model, data, final = load_trained_model(Path(final_path), Path(split_path), pick_device(device))
    split = settings(final["experiment"])["eval_split"]
    rows = task_metrics(model, data, split)
    out_dir = Path(out_dir)
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    metrics = list(dict.fromkeys(key for row in rows for key in row if key != "task"))
    summary = {"selected_iteration": int(final["selected_iteration"]),
               **{f"mean_{key}": float(np.mean([row[key] for row in rows if key in row])) for key in metrics}}
    for row in rows:
        summary.update({f"{key}_{row['task']}": row[key] for key in metrics if key in row})
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
