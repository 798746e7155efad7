"""Why a meta-learning run diverges: train one cell of a table as the pipeline does, recording per step
what the curve does not show.

    .venv/bin/python tools/diagnose_divergence.py simol_table1 "min average loss (MAML)" overall_5shot_sgd \
        --scale paper --seed 2 --out diagnosis/ [--set outer.clip_grad_norm=1.0]

The run is taskbal.train's (same split rule, seeding, task order and steps through taskbal.loop); a
subclass of ``Run`` only records, per outer step: the mean and largest query loss of the meta-batch,
the amplitude of the task with the largest loss, the largest per-task meta-gradient norm and that
task's amplitude, and the norm of the direction the outer optimiser is given. It writes ``steps.csv``
(one row per step), the run's own ``curve.csv`` and ``train.json`` (with the divergence verdict), and
prints the steps around the divergence point next to the steps before it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from taskbal.config import load_table, resolve_experiment
from taskbal.data import family_module
from taskbal.loop import fit
from taskbal.train import Run


class RecordingRun(Run):
    """A Run that keeps a row of step statistics per outer step (nothing it trains changes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[dict] = []
        self.amplitudes = torch.as_tensor(self.tasks.arrays["train_amplitude"])

    def task_gradients(self, batch, iteration, indices):
        tasks = super().task_gradients(batch, iteration, indices)
        if len(self.steps) == iteration:  # the first call of this step (weightings may call again after it)
            norms = tasks.grads.norm(dim=1)
            amplitudes = self.amplitudes[indices]
            worst, steepest = int(tasks.losses.argmax()), int(norms.argmax())
            self.steps.append({"iteration": iteration, "loss_mean": tasks.losses.mean().item(),
                               "loss_max": tasks.losses.max().item(), "amplitude_of_loss_max": amplitudes[worst].item(),
                               "task_grad_norm_max": norms.max().item(),
                               "task_grad_norm_median": norms.median().item(),
                               "amplitude_of_grad_norm_max": amplitudes[steepest].item()})
        return tasks

    def apply_direction(self, direction):
        self.steps[-1]["direction_norm"] = direction.norm().item()
        super().apply_direction(direction)

    def state_dict(self):
        return {**super().state_dict(), "steps": self.steps}


def parse_set(values: list[str]) -> dict:
    """``outer.clip_grad_norm=1.0`` → {"outer": {"clip_grad_norm": 1.0}} (values parsed as YAML)."""
    override: dict = {}
    for item in values:
        key, _, value = item.partition("=")
        *sections, option = key.split(".")
        target = override
        for section in sections:
            target = target.setdefault(section, {})
        target[option] = yaml.safe_load(value)
    return override


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table"), parser.add_argument("row"), parser.add_argument("column")
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="override: section.option=value")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    spec = load_table(args.table)
    row = next((r for r in spec["rows"] if r["label"] == args.row), None)
    column = next((c for c in spec["columns"] if c["key"] == args.column), None)
    if row is None or column is None:
        raise SystemExit(f"{args.table}: no row {args.row!r} or column {args.column!r}; rows "
                         f"{[r['label'] for r in spec['rows']]}, columns {[c['key'] for c in spec['columns']]}")
    experiment = resolve_experiment(spec, args.scale, row.get("set"), column.get("set"), parse_set(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = out / "split.npz"
    if not split.exists():
        family_module(experiment["data"]["family"]).write_splits(split, experiment["data"])
    runs: list[RecordingRun] = []

    def build():
        runs.append(RecordingRun(experiment, args.seed, split, torch.device("cpu")))
        return runs[-1]

    torch.set_num_threads(1)
    summary = fit(build, experiment, args.seed, out / "run", checkpoint_every=10**9, progress=True)
    steps = pd.DataFrame(runs[-1].steps)
    steps.to_csv(out / "steps.csv", index=False)
    (out / "experiment.json").write_text(json.dumps(experiment, indent=1) + "\n")
    print(summary["divergence"])
    at = summary.get("diverged_at")
    window = experiment["evaluation"]["curve_every"]
    if at is not None:
        before = steps[steps.iteration < at - window]
        spike = steps[(steps.iteration >= at - window) & (steps.iteration < at)]
        for name, part in (("before", before.tail(10 * window)), ("at the divergence", spike)):
            print(f"{name} (iterations {part.iteration.min()}–{part.iteration.max()}): " + ", ".join(
                f"{key} median {part[key].median():.3g} max {part[key].max():.3g}"
                for key in ("loss_mean", "task_grad_norm_max", "direction_norm")))
        worst = spike.nlargest(5, "task_grad_norm_max")
        print("largest per-task meta-gradients at the divergence:\n" + worst.to_string(index=False))
    print(f"amplitude of the task with the largest meta-gradient, all steps: median "
          f"{np.median(steps.amplitude_of_grad_norm_max):.2f} (amplitudes are drawn from U[0.1, 5])")


if __name__ == "__main__":
    main()
