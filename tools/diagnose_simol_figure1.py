"""Which reading of SIMOL's Figure 1 setting (if any) gives the paper's picture: mini-batch MGDA (a
mini-batch of one objective) "cannot converge to the Pareto front", SIMOL does.

    .venv/bin/python tools/diagnose_simol_figure1.py --name adam --scale paper --seeds 0 1 2 \
        --out diagnosis/fig1 [--columns start1_adam ...] [--rows "mini-batch MGDA" ...] \
        [--set data.f2_tanh_sign=cagrad] [--set-row "SIMOL:weighting.theta_optimizer=sgd"]

Each cell is the pipeline's run of config/tables/simol_figure1.yaml (``experiment ⊕ scale ⊕ row ⊕
column``, then the overrides), trained by the toy runner through taskbal.loop, one process, one torch
thread. The end point alone does not say whether a trajectory settles: a point near the Pareto set is
within O(δ²) of the front when it is δ off the set (the front's normal is orthogonal to the first-order
change there), so a run that keeps moving along the front, or a little off it, still ends ~1e-6 from it.
Per run the script therefore also measures the trajectory's tail (the curve rows of the last
``--tail`` fraction of the iterations; the curve holds one point every ``curve_every`` steps):

    end_distance        distance of (f1, f2)(x_T) to the analytic front (what the claims compare today)
    tail_mean_distance  mean distance to the front over the tail
    tail_max_distance   largest distance to the front over the tail
    tail_sd_f1          standard deviation of f1 over the tail (movement along the front)
    tail_sd_x2          standard deviation of x2 over the tail (movement across the Pareto set)
    tail_spread         √(var f1 + var f2) over the tail: eval.json's value (runners/simol_toy.py)
    stalled             1 when x_T is still in x2 > 0 (the half plane that holds no Pareto point)

and, per cell, the spread of the seeds' end points (standard deviation of f1(x_T) over seeds). It
writes ``runs.csv`` (one line per run, merged with the runs of earlier calls under the same --name) and
``cells.csv`` (means over seeds), and prints the cells.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from taskbal.config import load_table, resolve_experiment
from taskbal.data import family_module
from taskbal.runners import simol_toy as runner
from taskbal.settings import settings_from_assignments

TABLE = "simol_figure1"


def row_overrides(values: list[str]) -> dict[str, dict]:
    """``LABEL:section.option=value`` entries → {label: override}: settings one row only accepts
    (SIMOL's θ optimiser is no option of MGDA)."""
    grouped: dict[str, list[str]] = {}
    for item in values:
        label, _, setting = item.partition(":")
        grouped.setdefault(label, []).append(setting)
    return {label: settings_from_assignments(settings) for label, settings in grouped.items()}


def tail_metrics(curve: pd.DataFrame, iterations: int, tail: float) -> dict:
    """The end point and the tail of one trajectory (see the module docstring)."""
    last = curve.iloc[-1]
    part = curve[curve["iteration"] >= (1.0 - tail) * iterations]
    return {"end_distance": float(last["distance_to_front"]), "end_f1": float(last["f1"]),
            "end_f2": float(last["f2"]), "end_x1": float(last["x1"]), "end_x2": float(last["x2"]),
            "tail_mean_distance": float(part["distance_to_front"].mean()),
            "tail_max_distance": float(part["distance_to_front"].max()),
            "tail_sd_f1": float(part["f1"].std()), "tail_sd_x2": float(part["x2"].std()),
            "tail_spread": runner.tail_summary(curve[["iteration", "f1", "f2", "distance_to_front"]].to_numpy())[
                "tail_spread"], "stalled": int(last["x2"] > 0)}


def run_cell(experiment: dict, seed: int, split: Path, out: Path) -> pd.DataFrame:
    """Train one run (kept if an earlier call trained this very experiment) and return its curve."""
    done = out / "experiment.json"
    if not (done.exists() and json.loads(done.read_text()) == experiment and (out / "curve.csv").exists()):
        runner.train(experiment, seed, split, out, progress=False, checkpoint_every=10**9)
        done.write_text(json.dumps(experiment, indent=1) + "\n")
    return pd.read_csv(out / "curve.csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the reading's name (a folder under --out)")
    parser.add_argument("--scale", default="paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--columns", nargs="+", help="column keys of the table (default: all)")
    parser.add_argument("--rows", nargs="+", help="row labels (default: all)")
    parser.add_argument("--set", action="append", default=[], help="override for every row: section.option=value")
    parser.add_argument("--set-row", action="append", default=[],
                        help="override for one row: LABEL:section.option=value")
    parser.add_argument("--tail", type=float, default=0.1, help="fraction of the iterations that is the tail")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    spec = load_table(TABLE)
    override, per_row = settings_from_assignments(args.set), row_overrides(args.set_row)
    columns = [c for c in spec["columns"] if not args.columns or c["key"] in args.columns]
    rows = [r for r in spec["rows"] if not args.rows or r["label"] in args.rows]
    out = Path(args.out) / args.name
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for column in columns:
        for row in rows:
            experiment = resolve_experiment(spec, args.scale, row.get("set"), column.get("set"), override,
                                            per_row.get(row["label"]))
            split = out / f"split-{experiment['data'].get('f2_tanh_sign', 'paper')}.npz"
            if not split.exists():
                family_module("simol_toy").write_splits(split, experiment["data"])
            for seed in args.seeds:
                folder = out / column["key"] / row["label"].replace(" ", "_") / f"seed{seed}"
                curve = run_cell(experiment, seed, split, folder)
                summary = json.loads((folder / "train.json").read_text())
                records.append({"reading": args.name, "column": column["key"], "row": row["label"], "seed": seed,
                                "diverged_at": summary.get("diverged_at", -1), "seconds": summary["seconds"],
                                **tail_metrics(curve, experiment["problem"]["iterations"], args.tail)})
    runs = pd.DataFrame(records)
    if (out / "runs.csv").exists():  # keep the runs of earlier calls (other seeds, columns or rows)
        runs = pd.concat([pd.read_csv(out / "runs.csv"), runs]).drop_duplicates(["column", "row", "seed"], keep="last")
    runs.to_csv(out / "runs.csv", index=False)
    metrics = ["end_distance", "tail_mean_distance", "tail_max_distance", "tail_sd_f1", "tail_sd_x2", "tail_spread",
               "stalled"]
    cells = runs.groupby(["column", "row"], sort=False)[metrics].mean()
    cells["seeds_sd_end_f1"] = runs.groupby(["column", "row"], sort=False)["end_f1"].std()
    cells["seeds"] = runs.groupby(["column", "row"], sort=False)["seed"].count()
    cells.to_csv(out / "cells.csv")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        print(cells)


if __name__ == "__main__":
    main()
