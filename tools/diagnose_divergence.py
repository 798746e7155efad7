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

Inside the inner loop of each training step it also records (``inner_*`` columns): the mean support loss
of the meta-batch at every inner step k (``inner_support_loss_k``, before step k's update), and with a
Nash-GBML penalty its mean value over the players at every inner step (``inner_penalty_k``: 0 at k = 0,
where every player is still at θ); for Meta-SGD the learned per-parameter rates
(``rate_min``, ``rate_median``, ``rate_max``, ``rate_negative``: the fraction below 0), read before the
outer step. ``--stop-after N`` ends the run after N outer steps (steps.csv only, no curve or verdict).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from taskbal.config import load_table, resolve_experiment
from taskbal.data import family_module
from taskbal.loop import fit
from taskbal.settings import settings_from_assignments
from taskbal.train import Run


class RecordingRun(Run):
    """A Run that keeps a row of step statistics per outer step (nothing it trains changes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[dict] = []
        self.amplitudes = torch.as_tensor(self.tasks.arrays["train_amplitude"])
        self.inner: dict | None = None  # filled by the probes during a training step's meta-gradients
        probe_inner_loop(self)

    def task_gradients(self, batch, iteration, indices):
        first = len(self.steps) == iteration
        self.inner = {} if first else None
        rates = rate_statistics(self.learner) if first else {}
        try:
            tasks = super().task_gradients(batch, iteration, indices)
        finally:
            inner, self.inner = self.inner, None
        if first:  # the first call of this step (weightings may call again after it)
            norms = tasks.grads.norm(dim=1)
            amplitudes = self.amplitudes[indices]
            worst, steepest = int(tasks.losses.argmax()), int(norms.argmax())
            self.steps.append({"iteration": iteration, "loss_mean": tasks.losses.mean().item(),
                               "loss_max": tasks.losses.max().item(), "amplitude_of_loss_max": amplitudes[worst].item(),
                               "task_grad_norm_max": norms.max().item(),
                               "task_grad_norm_median": norms.median().item(),
                               "amplitude_of_grad_norm_max": amplitudes[steepest].item(),
                               **{f"inner_{key}": value for key, value in (inner or {}).items()}, **rates})
        return tasks

    def apply_direction(self, direction):
        self.steps[-1]["direction_norm"] = direction.norm().item()
        super().apply_direction(direction)

    def state_dict(self):
        return {**super().state_dict(), "steps": self.steps}


class PenaltyProbe:
    """The learner's penalty, unchanged, recording the mean penalty value of each inner step."""

    def __init__(self, penalty, run: RecordingRun):
        self.penalty, self.run = penalty, run

    def __getattr__(self, name):
        return getattr(self.penalty, name)

    def __call__(self, anchor, task_params, step, *args, **kwargs):
        values = self.penalty(anchor, task_params, step, *args, **kwargs)
        if self.run.inner is not None:
            self.run.inner[f"penalty_{step}"] = values.detach().mean().item()
        return values


def probe_inner_loop(run: RecordingRun) -> None:
    """Record the support losses of every inner step and the penalty's values (nothing computed changes)."""
    learner = run.learner
    task_losses = learner.task_losses

    def recorded_task_losses(params, x, y):
        losses = task_losses(params, x, y)
        if run.inner is not None:
            step = sum(key.startswith("support_loss_") for key in run.inner)
            run.inner[f"support_loss_{step}"] = losses.detach().mean().item()
        return losses

    learner.task_losses = recorded_task_losses
    if getattr(learner, "penalty", None) is not None:
        learner.penalty = PenaltyProbe(learner.penalty, run)


def rate_statistics(learner) -> dict:
    """Meta-SGD's learned per-parameter inner rates: min, median, max and the fraction below 0."""
    rates = getattr(learner, "rates", None)
    if not rates:
        return {}
    flat = torch.cat([rate.detach().reshape(-1) for rate in rates])
    return {"rate_min": flat.min().item(), "rate_median": flat.median().item(), "rate_max": flat.max().item(),
            "rate_negative": (flat < 0).float().mean().item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table"), parser.add_argument("row"), parser.add_argument("column")
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="override: section.option=value")
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-after", type=int, default=None,
                        help="end after this many outer steps: steps.csv only (no curve, no verdict)")
    args = parser.parse_args(argv)

    spec = load_table(args.table)
    row = next((r for r in spec["rows"] if r["label"] == args.row), None)
    column = next((c for c in spec["columns"] if c["key"] == args.column), None)
    if row is None or column is None:
        raise SystemExit(f"{args.table}: no row {args.row!r} or column {args.column!r}; rows "
                         f"{[r['label'] for r in spec['rows']]}, columns {[c['key'] for c in spec['columns']]}")
    experiment = resolve_experiment(spec, args.scale, row.get("set"), column.get("set"),
                                    settings_from_assignments(args.set))
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
    (out / "run" / "resume.pt").unlink(missing_ok=True)  # always a fresh run (a stopped one leaves a resume state)
    summary = fit(build, experiment, args.seed, out / "run", checkpoint_every=10**9, progress=True,
                  stop_after=args.stop_after)
    steps = pd.DataFrame(runs[-1].steps)
    steps.to_csv(out / "steps.csv", index=False)
    (out / "experiment.json").write_text(json.dumps(experiment, indent=1) + "\n")
    if "stopped_at" in summary:
        print(f"stopped after {summary['stopped_at']} steps; {out / 'steps.csv'}")
        return
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
