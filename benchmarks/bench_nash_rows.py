"""Cost of Nash-GBML Table 2's runs at the published budget, and what the whole table costs per scale.

For every row of ``config/tables/nash_table2.yaml`` and each reading of the inner loop (the table's 3
inner steps, and the official code's 1: the columns with ``learner: {inner_steps: 1}``), a
``taskbal.train.Run`` is built at paper settings (25 tasks per meta-batch, the paper's 250 val and
5,000 test tasks of 1,000 query points) with a training pool just large enough for the timed steps, so
that the split is cheap to draw. Measured, in CPU time of one thread, as medians of interleaved repeats
(every run's repeat r before any run's repeat r + 1):

- one outer step (``Run.step``), over ``--iterations`` steps after ``--warmup`` steps;
- one curve point: ``Run.evaluate_mean_mse``, the val and test errors of a curve row;
- one evaluation job's work: ``taskbal.evaluate.per_task_metrics`` on the test split.

Predicted CPU minutes of one run at each scale the table defines:

    iterations x step + (1 + ceil(iterations / curve_every)) x curve point + evaluation

with the curve point scaled by the scale's (val + test tasks) x query points and the evaluation by its
test tasks x query points, relative to paper (quick evaluates 100 + 2,450 tasks). Job start-up (imports,
MLflow, files: a few seconds per job) is not included. The table's cost per scale is the sum over rows
of a run's cost times the scale's seeds, per reading and for both, each run once: a penalised row's 1-step cells
are its plain row's run (the penalty cannot act, ``taskbal.config.without_inert_penalty``) and are not timed again.

With ``--compare-rows``, every run that takes its direction in one backward pass of the weighted loss (TR-MAML
+ a penalty: ``Run.weighted_in_one_pass``) is timed beside a twin that takes the Jacobian's k rows instead (the
path before it), and their ratio is printed; the twins do not count in the totals.

    python benchmarks/bench_nash_rows.py [--iterations 200] [--rows 0,3,9] [--steps 3,1] [--repeats 3]
                                         [--compare-rows]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from taskbal.config import load_table, resolve_experiment, run_id, seeds_of, without_inert_penalty
from taskbal.data import family_module
from taskbal.evaluate import per_task_metrics
from taskbal.machine import describe
from taskbal.train import Run

TABLE = "nash_table2"
SCALES = ("paper", "medium", "quick")
DEVICE = torch.device("cpu")


def readings(spec: dict, wanted: list[int]) -> dict[int, dict]:
    """The column ``set`` of each reading of the inner loop, by its number of inner steps."""
    found: dict[int, dict] = {}
    for column in spec["columns"]:
        steps = resolve_experiment(spec, "paper", column.get("set"))["learner"]["inner_steps"]
        found.setdefault(steps, column.get("set") or {})
    missing = [steps for steps in wanted if steps not in found]
    if missing:
        raise SystemExit(f"--steps {missing}: no column of {TABLE} reads the inner loop so (columns: {sorted(found)})")
    return {steps: found[steps] for steps in wanted}


def distinct_runs(spec: dict, rows: list[dict], columns: dict[int, dict]) -> list[tuple[dict, int, dict]]:
    """(row, inner steps, column set) of each run the table trains, the first cell of each; the others are named."""
    first: dict[str, str] = {}
    cells = []
    for row in rows:
        for steps, column in columns.items():
            run = run_id(without_inert_penalty(resolve_experiment(spec, "paper", row.get("set"), column)))
            if run in first:
                print(f"{row['label']}, {steps} step(s): the run of {first[run]} (a penalty that cannot act)")
                continue
            first[run] = f"{row['label']}, {steps} step(s)"
            cells.append((row, steps, column))
    return cells


def evaluation_size(experiment: dict) -> tuple[float, float]:
    """(val + test, test) tasks times query points of a resolved experiment: what a curve point and the
    evaluation adapt."""
    data = experiment["data"]
    return (data["val_tasks"] + data["test_tasks"]) * data["eval_query"], data["test_tasks"] * data["eval_query"]


def cpu_seconds(work) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


class Contender:
    """One (row, reading): its Run and its measured times."""

    def __init__(self, spec: dict, row: dict, steps: int, column: dict, pool: dict, split: Path, warmup: int,
                 rows_path: bool = False):
        self.spec, self.row, self.column, self.steps, self.rows_path = spec, row, column, steps, rows_path
        self.label = row["label"]
        self.overrides = [row.get("set"), column]  # what makes the cell at any scale
        self.experiment = without_inert_penalty(resolve_experiment(spec, "paper", *self.overrides, pool))
        self.run = Run(self.experiment, 0, split, DEVICE)
        if rows_path:
            self.run.weighted_in_one_pass = lambda *args: (None, None)
        one_pass_steps = []  # whether the loop took this run's direction in one weighted backward pass
        weighted = self.run.learner.weighted_meta_gradient
        self.run.learner.weighted_meta_gradient = lambda *args: one_pass_steps.append(1) or weighted(*args)
        for _ in range(warmup):
            self.run.step()
        self.run.learner.weighted_meta_gradient = weighted
        self.takes_one_pass = bool(one_pass_steps)
        self.times: dict[str, list[float]] = {"step": [], "curve": [], "evaluation": []}

    def repeat(self, iterations: int) -> None:
        def steps():
            for _ in range(iterations):
                self.run.step()

        self.times["step"].append(cpu_seconds(steps) / iterations)
        self.times["curve"].append(cpu_seconds(self.run.evaluate_mean_mse))
        self.times["evaluation"].append(cpu_seconds(
            lambda: per_task_metrics(self.run.learner, self.run.tasks, "test", DEVICE)))

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def minutes(self, scale: str) -> float:
        """Predicted CPU minutes of one training + evaluation at ``scale``."""
        experiment = without_inert_penalty(resolve_experiment(self.spec, scale, *self.overrides))
        iterations = experiment["outer"]["iterations"]
        points = 1 + math.ceil(iterations / experiment["evaluation"]["curve_every"])
        curve_size, test_size = evaluation_size(experiment)
        paper_curve, paper_test = evaluation_size(self.experiment)
        seconds = (iterations * self.median("step") + points * self.median("curve") * curve_size / paper_curve
                   + self.median("evaluation") * test_size / paper_test)
        return seconds / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200, help="timed outer steps per repeat")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", help="comma-separated row indices (default: every row)")
    parser.add_argument("--steps", default="3,1", help="readings of the inner loop, by inner steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare-rows", action="store_true",
                        help="time each one-pass run beside a twin that takes the Jacobian's rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_table(TABLE)
    rows = spec["rows"]
    if args.rows:
        keep = {int(index) for index in args.rows.split(",")}
        rows = [row for index, row in enumerate(rows) if index in keep]
    columns = readings(spec, [int(steps) for steps in args.steps.split(",")])
    print(f"{describe(DEVICE)}; pid {os.getpid()}")
    print(f"{TABLE}: {len(rows)} row(s) x readings {list(columns)} inner steps; {args.iterations} timed steps "
          f"after {args.warmup}, median of {args.repeats} interleaved repeats; CPU time")

    meta_batch = resolve_experiment(spec, "paper")["outer"]["meta_batch"]
    pool = {"data": {"train_tasks": meta_batch * (args.warmup + args.repeats * args.iterations)}}
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.npz"
        data = resolve_experiment(spec, "paper", pool)["data"]
        family_module(data["family"]).write_splits(split, data)
        contenders = [Contender(spec, row, steps, column, pool, split, args.warmup)
                      for row, steps, column in distinct_runs(spec, rows, columns)]
        twins = [Contender(spec, one_pass.row, one_pass.steps, one_pass.column, pool, split, args.warmup,
                           rows_path=True)
                 for one_pass in contenders if args.compare_rows and one_pass.takes_one_pass]
        contenders += twins
        for _ in range(args.repeats):
            for contender in contenders:
                contender.repeat(args.iterations)

    header = (f"{'row':28s} {'steps':>5s} {'ms/it':>7s} {'curve pt s':>10s} {'eval s':>7s}  "
              + " ".join(f"{scale + ' min':>10s}" for scale in SCALES))
    print("\n" + header)
    totals = {(scale, steps): 0.0 for scale in SCALES for steps in columns}
    for contender in contenders:
        minutes = {scale: contender.minutes(scale) for scale in SCALES}
        for scale in SCALES:
            if not contender.rows_path:
                totals[(scale, contender.steps)] += minutes[scale] * len(seeds_of(spec, scale))
        label = contender.label + (" [rows]" if contender.rows_path else "")
        print(f"{label:28s} {contender.steps:5d} {1000 * contender.median('step'):7.2f} "
              f"{contender.median('curve'):10.2f} {contender.median('evaluation'):7.2f}  "
              + " ".join(f"{minutes[scale]:10.1f}" for scale in SCALES))
    print("'min' = predicted CPU minutes of one run (training + its evaluation) at that scale, one thread.")
    for twin in twins:
        one_pass = next(c for c in contenders if (c.label, c.steps, c.rows_path) == (twin.label, twin.steps, False))
        print(f"{twin.label}, {twin.steps} step(s): one weighted backward pass {1000 * one_pass.median('step'):.2f} "
              f"ms/it against the Jacobian's rows {1000 * twin.median('step'):.2f} ms/it: "
              f"{twin.median('step') / one_pass.median('step'):.1f}x faster")

    print(f"\nwhole table ({len(rows)} row(s), {len(contenders) - len(twins)} runs a seed), predicted core-hours:")
    for scale in SCALES:
        experiment = resolve_experiment(spec, scale)
        parts = [f"{steps}-step {totals[(scale, steps)] / 60:.1f}" for steps in columns]
        both = sum(totals[(scale, steps)] for steps in columns) / 60
        print(f"  {scale:7s} ({experiment['outer']['iterations']} iterations, curve every "
              f"{experiment['evaluation']['curve_every']}, {len(seeds_of(spec, scale))} seeds): "
              f"{', '.join(parts)}; all readings {both:.1f} core-h")


if __name__ == "__main__":
    main()
