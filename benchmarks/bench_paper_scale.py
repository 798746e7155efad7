"""What the image tables cost at paper scale on a GPU cluster: jobs, and GPU-hours estimated by FLOP count.

No GPU is needed: for every distinct training run of a table at paper scale (``taskbal.config.table_cells``,
deduplicated as the workflow does), one meta-update is built at the run's real shapes on generated images
(``taskbal.data.generated_images``: the work depends on the shapes, not the pixels) and its floating-point
operations are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions,
forward and backward, inside vmap too). Large meta-batches are counted on ``--count-tasks`` tasks and scaled
linearly (every learner's work is a sum over tasks; the weightings' own work is small).

GPU-hours follow from an anchor, a run whose GPU time is published: TOW's Table 2 gives 5.03 V100-hours for
MAML with uniform weights on mini-ImageNet with the 4-layer CNN, the run of TOW Table 1's "MAML, uniform"
cell, 100,000 meta-updates with validation. Its FLOPs per V100-second are the throughput assumed for every
other run (FLOPs x iterations / throughput). Small convolutions keep a GPU far from its peak, and the anchor's
throughput already includes that and its validation passes, so this is an estimate of the order, not a
quote: a run with much larger kernels (CAVIA(128), 32-task meta-batches) will use the GPU better than the
anchor and take less than estimated. TOW's own runs are not counted: their cost depends on the iLQR line
search; for the MAML runs of TOW Table 1 the benchmark takes the paper's own V100-hours (Table 2: Omniglot
1.35 / 1.55 / 7.50 h, mini-ImageNet CNN 5.03 / 5.24 / 38.12 h, ResNet-10 7.16 / 7.18 / 67.78 h for uniform,
exploration and exploitation, TOW), and ProtoNet with TOW is counted as ProtoNet with uniform weights times
the paper's TOW / uniform ratio for that dataset (5.6 Omniglot, 7.6 mini-ImageNet). Runs with the same shapes
(mini- and tiered-ImageNet) are counted once.

    python benchmarks/bench_paper_scale.py [--tables tow_table1,simol_table2,...] [--count-tasks 4]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from taskbal.config import load_table, run_id, seeds_of, table_cells
from taskbal.data.generated_images import write_splits
from taskbal.train import Run

TABLES = ("tow_table1", "tow_table2", "simol_table2", "simol_table3", "simol_table4", "nash_table4")
ANCHOR = ("tow_table1", "MAML, uniform", "miniimagenet_cnn")  # 5.03 V100-hours (TOW Table 2)
ANCHOR_HOURS = 5.03
# TOW Table 2's V100-hours of MAML's runs in TOW Table 1, by (dataset, weighting, network)
PUBLISHED_HOURS = {("omniglot", "mean", "conv4"): 1.35, ("omniglot", "explore_exploit", "conv4"): 1.55,
                   ("omniglot", "tow", "conv4"): 7.50, ("mini_imagenet", "mean", "conv4"): 5.03,
                   ("mini_imagenet", "explore_exploit", "conv4"): 5.24, ("mini_imagenet", "tow", "conv4"): 38.12,
                   ("mini_imagenet", "mean", "resnet10"): 7.16, ("mini_imagenet", "explore_exploit", "resnet10"): 7.18,
                   ("mini_imagenet", "tow", "resnet10"): 67.78}


def shape_experiment(experiment: dict, tasks: int) -> dict:
    """The run's experiment on generated images of its shapes, ``tasks`` per meta-update, one step."""
    data = experiment["data"]
    channels = 1 if data.get("dataset") == "omniglot" else data.get("channels", 3)
    shaped = json.loads(json.dumps(experiment))
    shaped["data"] = {"family": "generated_images", "ways": data["ways"], "shots": data["shots"],
                      "query": data["query"], "image_size": data.get("image_size") or 84, "channels": channels,
                      "train_tasks": tasks, "val_tasks": 1, "test_tasks": 1, "split_seed": 0}
    shaped["outer"] = {**shaped["outer"], "meta_batch": tasks, "iterations": 1}
    return shaped


def flops_per_update(experiment: dict, count_tasks: int) -> float:
    """FLOPs of one meta-update of ``experiment`` (counted on ``count_tasks`` tasks, scaled to the meta-batch)."""
    batch = experiment["outer"]["meta_batch"]
    tasks = min(batch, count_tasks)
    shaped = shape_experiment(experiment, tasks)
    with tempfile.TemporaryDirectory() as folder:
        split = Path(folder) / "split.npz"
        write_splits(split, shaped["data"])
        run = Run(shaped, 0, split, torch.device("cpu"))
        with FlopCounterMode(display=False) as counter:
            run.step(0)
    return counter.get_total_flops() * batch / tasks


def tow_ratio(experiment: dict) -> float:
    """The paper's ratio of TOW's GPU time to uniform weighting's for this dataset and network (Table 2)."""
    key = (experiment["data"]["dataset"], experiment["model"].get("name", "conv4"))
    return PUBLISHED_HOURS[(key[0], "tow", key[1])] / PUBLISHED_HOURS[(key[0], "mean", key[1])]


def published_hours(experiment: dict, tow_runs: set[str]) -> float | None:
    """TOW Table 2's V100-hours for the MAML runs of TOW Table 1 it reports (``tow_runs``: that table's runs),
    else None."""
    if run_id(experiment) not in tow_runs or experiment["learner"]["name"] != "maml":
        return None
    return PUBLISHED_HOURS.get((experiment["data"]["dataset"], experiment["weighting"]["name"],
                                experiment["model"].get("name", "conv4")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--count-tasks", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    anchor_spec = load_table(ANCHOR[0])
    anchor = next(c for c in table_cells(anchor_spec, "paper") if (c.row, c.column) == ANCHOR[1:])
    anchor_flops = flops_per_update(anchor.experiment, args.count_tasks) * anchor.experiment["outer"]["iterations"]
    throughput = anchor_flops / (ANCHOR_HOURS * 3600)
    print(f"anchor: {ANCHOR[0]} / {ANCHOR[1]} / {ANCHOR[2]}: {anchor_flops:.3g} FLOPs in {ANCHOR_HOURS} V100-hours "
          f"(TOW Table 2) = {throughput / 1e12:.2f} TFLOP/s achieved")
    counted: dict[str, float] = {}
    tow_runs = {cell.run for cell in table_cells(anchor_spec, "paper")}
    print(f"{'table':14s} {'runs':>5s} {'train+eval jobs':>16s} {'GPU-hours':>10s}  per run (h)")
    for name in args.tables.split(","):
        spec = load_table(name)
        if "paper" not in (spec.get("resources") or {}) or not spec["resources"]["paper"].get("gpu"):
            print(f"{name:14s} asks for no GPU at paper scale")
            continue
        runs = {}
        for cell in table_cells(spec, "paper"):
            runs.setdefault(run_id(cell.experiment), cell.experiment)
        seeds = len(seeds_of(spec, "paper"))
        hours, per_run = 0.0, []
        for experiment in runs.values():
            known = published_hours(experiment, tow_runs)
            if known is None:
                planned = experiment["weighting"]["name"] == "tow"
                counted_as = json.loads(json.dumps(experiment))
                if planned:  # counted as uniform weighting, times the paper's TOW / uniform ratio
                    counted_as["weighting"] = {"name": "mean"}
                shape = json.dumps(shape_experiment(counted_as, args.count_tasks), sort_keys=True) + \
                    str(counted_as["outer"]["meta_batch"])
                if shape not in counted:
                    counted[shape] = flops_per_update(counted_as, args.count_tasks)
                known = counted[shape] * experiment["outer"]["iterations"] / throughput / 3600
                if planned:
                    known *= tow_ratio(experiment)
            per_run.append(known)
            hours += known * seeds
        gpu_runs = len(per_run) * seeds
        spread = f"{min(per_run):.2f}-{max(per_run):.2f}" if per_run else "-"
        print(f"{name:14s} {gpu_runs:5d} {2 * gpu_runs:16d} {hours:10.0f}  {spread}", flush=True)


if __name__ == "__main__":
    main()
