"""The file contract: where every job's files live and what they are called.

The Snakemake rules declare these paths and the commands and runners write and read them, so
both sides take the names from here. A run's files sit in ``results/runs/<scale>/<run>/seed<seed>/``:

    final.pt    trained state and the resolved experiment (train)
    curve.csv   training curve, one row per recorded iteration (train)
    train.json  training summary: iterations, wall time, final curve values (train)
    resume.pt   resume state of an unfinished training; removed when it ends (train)
    .untracked/ final.pt, curve.csv, train.json of a finished training whose MLflow logging failed;
                the job's next run logs them instead of training again (train)
    .mlflow-run-train, .mlflow-run-evaluate  the MLflow run of a job that has not finished; its
                next attempt continues that run
    eval.csv    one row per evaluated unit: meta-test task, task, objective (evaluate)
    eval.json   evaluation summary, numbers only (evaluate)
    on-<split>/eval.csv, eval.json  the same run evaluated on another split's test tasks: a column with
                ``evaluate_on`` (TOW Table 3's CUB column: mini-ImageNet runs on CUB's episodes) (evaluate_on)

Split files: ``results/splits/<scale>/<split>.npz`` with the sidecar ``<split>.json`` that records
how it was made and its SHA-256. Grid searches (taskbal.grid): ``results/grids/<scale>/<selection>.json``
(one selection: the chosen point and every point's value) and ``<grid>.md`` / ``<grid>.csv`` (the grid's
page). This module imports nothing heavy: the Snakefile reads it.
"""
from __future__ import annotations

import re
from pathlib import Path

FINAL = "final.pt"
CURVE = "curve.csv"
TRAIN_SUMMARY = "train.json"
RESUME = "resume.pt"
UNTRACKED = ".untracked"
TRACKED_RUN = ".mlflow-run-{kind}"  # the MLflow run id of an unfinished train or evaluate job
EVAL = "eval.csv"
EVAL_SUMMARY = "eval.json"

RESULTS = "results"
RUN_DIR = RESULTS + "/runs/{scale}/{run}/seed{seed}"
EVALUATED_ON_DIR = RUN_DIR + "/on-{split}"  # a run's evaluation on another split's test tasks
SPLIT_FILE = RESULTS + "/splits/{scale}/{split}.npz"
SPLIT_SIDECAR = RESULTS + "/splits/{scale}/{split}.json"
SELECTION_FILE = RESULTS + "/grids/{scale}/{selection}.json"
GRID_PAGE = RESULTS + "/grids/{scale}/{grid}"  # + .md and .csv

_RUN_FILE = re.compile(r"(?:^|/)(?P<run>[^/]+)/seed(?P<seed>\d+)/(?:on-(?P<on>[^/]+)/)?(?P<name>[^/]+)$")
EVALUATION_FILES = (EVAL, EVAL_SUMMARY)


def run_dir(scale: str, run: str, seed: int | str) -> str:
    return RUN_DIR.format(scale=scale, run=run, seed=seed)


def run_file(scale: str, run: str, seed: int | str, name: str, evaluated_on: str | None = None) -> str:
    """A file of a run's seed; with ``evaluated_on`` (a split id), its evaluation file (eval.csv, eval.json)
    on that split's test tasks rather than its own."""
    if evaluated_on is None:
        return f"{run_dir(scale, run, seed)}/{name}"
    if name not in EVALUATION_FILES:
        raise ValueError(f"{name}: a run has only {' and '.join(EVALUATION_FILES)} per evaluated split")
    return f"{EVALUATED_ON_DIR.format(scale=scale, run=run, seed=seed, split=evaluated_on)}/{name}"


def split_file(scale: str, split: str) -> str:
    return SPLIT_FILE.format(scale=scale, split=split)


def split_sidecar(scale: str, split: str) -> str:
    return SPLIT_SIDECAR.format(scale=scale, split=split)


def selection_file(scale: str, selection: str) -> str:
    return SELECTION_FILE.format(scale=scale, selection=selection)


def evaluated_on(folder: str | Path) -> str | None:
    """The split id of an ``on-<split>`` evaluation folder, None for a run's own folder."""
    name = Path(folder).name
    return name[len("on-"):] if name.startswith("on-") else None


def run_and_seed(path: str | Path) -> tuple[str, int, str | None, str]:
    """(run, seed, evaluated-on split or None, file name) of a path ``…/<run>/seed<seed>/<name>`` or
    ``…/<run>/seed<seed>/on-<split>/<name>``; anything else is an error."""
    match = _RUN_FILE.search(Path(path).as_posix())
    if not match:
        raise ValueError(f"{path}: not a run file (expected …/<run>/seed<seed>/<name>)")
    return match["run"], int(match["seed"]), match["on"], match["name"]
