"""The one resumable training loop every runner trains through.

A runner builds a *trainable*: its step, its state and its metrics. This loop owns everything
around them, so that resuming, curves and summaries behave alike for meta-learning, multi-task
learning, the black-box optimisers and the toy problems:

* seeding (``seed_everything`` before the trainable is built, ``step_generator`` per iteration);
* checkpoints: ``resume.pt`` every ``checkpoint_every`` iterations, written atomically; a run started
  again resumes from it and ends with exactly the numbers of an uninterrupted run;
* the curve: a row at iteration 0, every ``curve_every`` iterations and at the end; the trainable
  turns the step statistics since the last row into the row;
* ``stop_after`` (tests of resume: stop after that many iterations of this process, outputs unwritten);
* the outputs: ``final.pt`` (the trainable's final state with the experiment and seed), ``curve.csv``
  and ``train.json`` (iterations, wall time, the resumed-from iteration, the trainable's summary,
  ``divergence``: whether and where the loss diverged (taskbal.divergence), ``machine``: the GPU
  or CPU model and torch build it ran on, each of them if a resume moved it, and ``peak_memory_mb``: the
  loop's peak memory, as ``peak_memory_measure`` says (``machine.PeakMemory``)).

A trainable has

    iterations: int, curve_every: int
    step(iteration) -> dict            one iteration; statistics for the curve
    curve_row(iteration, window) -> dict   the curve row after ``iteration`` steps (``window``: the
                                       statistics of the steps since the previous row)
    state_dict() / load_state_dict(state)  everything a resumed run needs
    final_state() -> dict              what final.pt holds besides the experiment and seed
    summary(rows) -> dict              the runner's entries of train.json (numbers only: MLflow metrics)

and may have ``stopped`` (True ends the run early: a diverged optimiser keeps its last finite point; a
meta-learning run stops at the curve row that finds a meta-parameter non-finite),
``stats_at_row_point`` (True: a step's statistics describe the point it starts from, so they join the
row recorded at that iteration rather than the next one), ``progress_line(row)`` (beside the progress
bar) and ``final_line(summary)`` (the log's last line).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import divergence
from .artifacts import CURVE, FINAL, RESUME, TRAIN_SUMMARY
from .io import atomic_path, remove_leftover_temporaries, write_json
from .machine import PeakMemory
from .machine import describe as describe_machine


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_generator(seed: int, iteration: int) -> torch.Generator:
    """A generator that depends only on (seed, iteration): a resumed run draws what it would have."""
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration)


_ROW_LISTENERS: ContextVar[tuple] = ContextVar("row_listeners", default=())


@contextmanager
def reporting_rows(listener: Callable[[list[dict]], None]) -> Iterator[None]:
    """Inside, the loop hands each new curve row to ``listener`` as soon as it is complete (live
    tracking), whatever runner trains: the runners need not pass it along."""
    token = _ROW_LISTENERS.set((*_ROW_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _ROW_LISTENERS.reset(token)


def _report(rows: list[dict]) -> None:
    if rows:
        for listener in _ROW_LISTENERS.get():
            listener(rows)


def save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Progress:
    """tqdm's bar with an ETA in the job log (or nothing)."""

    def __init__(self, enabled: bool, total: int, initial: int, seed: int):
        self.bar = tqdm(total=total, initial=initial, desc=f"train seed {seed}", unit="it", mininterval=5.0,
                        disable=not enabled, dynamic_ncols=False, ascii=True)

    def update(self, row: dict | None, trainable) -> None:
        self.bar.update(1)
        if row is not None and hasattr(trainable, "progress_line"):
            self.bar.set_postfix_str(trainable.progress_line(row))

    def close(self) -> None:
        self.bar.close()


def step_timing(step_seconds: list[float]) -> dict:
    """Seconds per meta-update of this attempt: the median (robust to the first steps' warm-up and to
    other jobs on the machine) and the mean; on a GPU each step is timed after synchronising."""
    if not step_seconds:
        return {}
    return {"step_seconds_median": float(np.median(step_seconds)), "step_seconds_mean": float(np.mean(step_seconds)),
            "steps_timed": len(step_seconds)}


def fit(build: Callable[[], object], experiment: dict, seed: int, out_dir: Path | str, *,
        checkpoint_every: int = 500, stop_after: int | None = None, progress: bool = True,
        map_location: str | torch.device = "cpu") -> dict:
    """Train the trainable ``build()`` returns (built after seeding) into ``out_dir``."""
    out_dir = Path(out_dir)
    divergence_rule = divergence.rule_of(experiment)  # a bad rule is an error before training, not after
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    trainable = build()
    total, every = trainable.iterations, trainable.curve_every
    resume_path = out_dir / RESUME
    iteration, rows, window = 0, [], []
    machines = []  # where each stretch of the training ran: a resumed job may run on another node
    if resume_path.exists():
        state = torch.load(resume_path, map_location=map_location, weights_only=False)
        if state.get("experiment") != experiment or state.get("seed") != seed:
            raise ValueError(f"{resume_path}: resume state of a different experiment or seed; delete it to start over")
        iteration, rows, window = state["iteration"], state["rows"], state["window"]
        machines = state.get("machines", [])
        trainable.load_state_dict(state["trainable"])
    else:
        rows.append(trainable.curve_row(0, []))

    here = describe_machine(map_location)
    if not machines or machines[-1] != here:
        machines.append(here)

    def checkpoint() -> None:
        save_atomic({"iteration": iteration, "rows": rows, "window": window, "trainable": trainable.state_dict(),
                     "experiment": experiment, "seed": seed, "machines": machines}, resume_path)

    memory = PeakMemory(map_location)
    memory.start()
    started, start_iteration = time.perf_counter(), iteration
    bar = Progress(progress, total, iteration, seed)
    at_row_point = getattr(trainable, "stats_at_row_point", False)
    # Rows up to a checkpoint were reported by the attempt that wrote it. A row is complete once
    # recorded, or, when the next step's statistics join it (stats_at_row_point), once that step ran.
    reported = max(len(rows) - (1 if at_row_point else 0), 0) if iteration else 0
    step_seconds = []  # each meta-update alone (no curve evaluation, no checkpoint): timing tables read these
    while iteration < total and not getattr(trainable, "stopped", False):
        step_started = time.perf_counter()
        stats = trainable.step(iteration)
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the device's queued work belongs to this step
        step_seconds.append(time.perf_counter() - step_started)
        if at_row_point:
            if rows[-1]["iteration"] == iteration:
                rows[-1].update({key: value for key, value in stats.items() if key not in rows[-1]})
        else:
            window.append(stats)
        iteration += 1
        row = None
        if iteration % every == 0 or iteration == total or getattr(trainable, "stopped", False):
            row = trainable.curve_row(iteration, window)
            rows.append(row)
            window = []
        bar.update(row, trainable)
        complete = len(rows) - (1 if at_row_point else 0)
        if complete > reported:
            _report(rows[reported:complete])
            reported = complete
        if iteration % checkpoint_every == 0 and iteration < total:
            checkpoint()
        if stop_after is not None and iteration - start_iteration >= stop_after and iteration < total:
            checkpoint()
            bar.close()
            return {"stopped_at": iteration}
    bar.close()
    _report(rows[reported:])
    seconds = time.perf_counter() - started
    with atomic_path(out_dir / CURVE) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    save_atomic({**trainable.final_state(), "experiment": experiment, "seed": seed}, out_dir / FINAL)
    summary = {"iterations": total, "seconds": seconds, "resumed_from": start_iteration,
               "iterations_per_second": (iteration - start_iteration) / max(seconds, 1e-9),
               **step_timing(step_seconds), **memory.summary(),
               **trainable.summary(rows), **divergence.detect(rows, divergence_rule).summary(),
               "machine": "; then ".join(machines)}
    write_json(out_dir / TRAIN_SUMMARY, summary)
    resume_path.unlink(missing_ok=True)
    remove_leftover_temporaries(out_dir, (RESUME, FINAL, CURVE, TRAIN_SUMMARY))
    if progress and hasattr(trainable, "final_line"):
        print(trainable.final_line(summary), flush=True)
    return summary
