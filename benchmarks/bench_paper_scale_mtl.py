"""What the thesis' multi-task and prompt-tuning tables cost at paper scale on a GPU: jobs, and GPU-hours
estimated by FLOP count, the way ``bench_paper_scale.py`` estimates the episodic tables.

No GPU and no dataset are needed: every distinct training run of a table at paper scale is built at its
real shapes on random inputs held in memory (Office and CelebA images, NYUv2 scenes, QM9 molecules of 18
atoms, QM9's mean), and the floating-point operations of one training step are counted with
``torch.utils.flop_counter.FlopCounterMode`` (forward and backward, every task's backward pass, the
bi-level methods' lower-level steps; NORMAL's neck by hand). A step is counted on ``--count-batch``
samples per task and scaled linearly to the run's batch; the evaluations along training (the curve
split at every curve point) and the final test pass are counted as forward passes. CLIP prompt tuning
counts one text-encoder pass over the classes' prompts per population member and iteration, and the
image encoder once per image. Grid searches add their points' runs at the cost of the run they select for.

GPU-hours = FLOPs / a sustained throughput, at two: 0.42 TFLOP/s, what ``bench_paper_scale.py``'s anchor
achieved (TOW's MAML with the 4-layer CNN, 5.03 V100-hours for 100,000 meta-updates), an upper estimate
for these networks, which keep a GPU much busier; and 10 TFLOP/s, near the float32 peak of a V100 or an
RTX 3090 (the thesis' GPU), a lower one. Estimates of the order, not quotes.

    python benchmarks/bench_paper_scale_mtl.py [--tables thesis_table3_3,...] [--count-batch 2]
"""
from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from taskbal.config import load_table, seeds_of, table_cells

TABLES = ("thesis_table3_3", "thesis_table3_4", "thesis_table3_5", "thesis_table4_1", "thesis_table5_1",
          "thesis_table5_2", "thesis_table5_3", "thesis_table5_4")
ANCHOR_TFLOPS = 0.42  # bench_paper_scale.py's anchor: FLOPs per V100-second achieved by TOW's MAML run
PEAK_TFLOPS = 10.0  # about a V100's or an RTX 3090's float32 peak: the lower estimate
# Per family: (task names, outputs per task, input shape, shared inputs, kind, inputs evaluated (validation,
# test: every domain's together where each domain is a task), all inputs).
OFFICE31 = (["amazon", "dslr", "webcam"], 31, (3, 224, 224), False, "classification", (822, 822), 4110)
OFFICE_HOME = (["Art", "Clipart", "Product", "Real_World"], 65, (3, 224, 224), False, "classification",
               (3118, 3118), 15588)
CELEBA = ([f"attribute_{i}" for i in range(40)], 2, (3, 64, 64), True, "classification", (19867, 19962), 202599)
NYUV2 = (["segmentation", "depth", "normal"], None, (3, 288, 384), True, "dense", (0, 654), 1449)
QM9 = ([f"target_{i}" for i in range(11)], 1, None, True, "regression", (10000, 10000), 130831)


DENSE_DOWNSCALE = 1  # NYUv2's scenes counted at 1/k of their height and width, FLOPs times k² (--dense-downscale)


class ShapeTasks:
    """Random inputs of a family's real shapes, ``count`` per split (the MTL family contract)."""

    splits = ("train", "val", "test")

    def __init__(self, family: tuple, count: int):
        names, classes, shape, shared, kind, _, _ = family
        if kind == "dense":
            shape = (shape[0], shape[1] // DENSE_DOWNSCALE, shape[2] // DENSE_DOWNSCALE)
        self.task_names, self.shared_inputs, self.kind, self.classes = names, shared, kind, classes
        rng = np.random.default_rng(0)
        if shape is None:  # QM9: molecules of 18 atoms (QM9's mean), random bonds
            from taskbal.mtl.mpnn import BONDS, FEATURES, MAX_ATOMS, PACKED, POSITION, PRESENT

            x = np.zeros((count, MAX_ATOMS, PACKED), dtype=np.float32)
            x[:, :18, PRESENT] = 1
            x[:, :18, FEATURES] = rng.random((count, 18, FEATURES.stop - FEATURES.start))
            x[:, :18, POSITION] = rng.standard_normal((count, 18, 3))
            x[:, :18, BONDS.start:BONDS.start + 18] = rng.integers(0, 2, (count, 18, 18))
        else:
            x = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        self.x = x
        self.targets = {name: self.target(name, rng, count, shape) for name in names}

    def target(self, name, rng, count, shape):
        if self.kind == "classification":
            return rng.integers(0, self.classes, count)
        if self.kind == "regression":
            return rng.standard_normal(count).astype(np.float32)
        height, width = shape[1:]
        if name == "segmentation":
            return rng.integers(0, 13, (count, height, width))
        return rng.random((count, 1 if name == "depth" else 3, height, width)).astype(np.float32) + 0.1

    def arrays(self, split, task):
        return self.x, self.targets[task]

    def objective(self, task):
        if self.kind == "dense":
            return {"kind": {"segmentation": "segmentation", "depth": "depth", "normal": "normals"}[task],
                    "classes": 13 if task == "segmentation" else None}
        return {"kind": self.kind, "classes": self.classes} if self.kind == "classification" else {"kind": "regression"}


def family_of(experiment: dict) -> tuple:
    data = experiment["data"]
    if data["family"] == "image_domains":
        return OFFICE31 if data["dataset"] == "office31" else OFFICE_HOME
    return {"celeba_attributes": CELEBA, "nyuv2_tasks": NYUV2, "qm9_tasks": QM9}[data["family"]]


def neck_flops(experiment: dict, samples: int, family: tuple) -> float:
    """NORMAL's ODE neck, forward and backward, per training step (counted by hand: PyTorch's FLOP counter's
    module tracker fails on it): u once and g per Euler step, two FC layers each (4 · width · hidden FLOPs
    per position), for every task, at every feature-map position of a dense encoder, backward twice the
    forward."""
    from taskbal.mtl.model import encoder_width

    options = experiment["weighting"]
    width = encoder_width(experiment["mtl"]["encoder"], 0, list(experiment["mtl"].get("hidden") or []))
    hidden = options.get("ode_hidden") or width
    positions = 1
    if family[2] is not None and experiment["mtl"]["encoder"].endswith("_dilated"):
        positions = -(-family[2][1] // 8) * -(-family[2][2] // 8)  # output stride 8
    steps = 1 if options.get("order") == 1 else options.get("ode_steps", 10) + 1
    return 3.0 * steps * 4 * width * hidden * positions * samples * len(family[0])


def mtl_flops(experiment: dict, count: int) -> tuple[float, float]:
    """(FLOPs of one training step at the run's batch, forward FLOPs of one evaluated sample). NORMAL is
    counted as EW plus its neck (:func:`neck_flops`)."""
    from taskbal.mtl.data import MultiTaskData
    from taskbal.mtl.trainer import build_model, build_step, method_and_options, settings

    if experiment["weighting"]["name"] == "normal":
        as_ew = copy.deepcopy(experiment)
        as_ew["weighting"] = {"name": "mean"}
        step, per_sample = mtl_flops(as_ew, count)
        family = family_of(experiment)
        batch = experiment["mtl"]["batch_size"]
        neck = neck_flops(experiment, batch if family[3] else batch * len(family[0]), family)
        return step + neck, per_sample + neck / batch / 3
    shaped = copy.deepcopy(experiment)
    conf = settings(shaped)
    batch = conf["batch_size"]
    shaped["mtl"] = {**shaped["mtl"], "batch_size": count, "upper_batch_size": count, "weights": None}
    conf = settings(shaped)
    data = MultiTaskData(ShapeTasks(family_of(experiment), count))
    name, options = method_and_options(shaped)
    torch.manual_seed(0)
    model = build_model(conf, data, name, options)
    step = build_step(shaped, conf, model, data, 0)
    with FlopCounterMode(display=False) as counter:
        step.step(0)
    step_flops = counter.get_total_flops() * batch / count
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # one input through the encoder and the
        x = data.tensors["test"][0][0]                                 # heads it serves (all, or its task's)
        features = model.encode(x, 0)
        for task in range(data.num_tasks if data.shared_inputs else 1):
            model.from_features(features, task, size=x.shape[-2:])
    area = DENSE_DOWNSCALE ** 2 if family_of(experiment)[4] == "dense" else 1  # a convolution's FLOPs ∝ pixels
    return step_flops * area, counter.get_total_flops() / count * area


def mtl_hours(experiment: dict, count: int, cache: dict) -> float:
    key = json.dumps({k: v for k, v in experiment.items() if k != "seed"}, sort_keys=True)
    if key not in cache:
        cache[key] = mtl_flops(experiment, count)
    step, per_sample = cache[key]
    conf = experiment["mtl"]
    validation, test = family_of(experiment)[5]
    curve_points = conf["iterations"] // conf["curve_every"] if conf.get("curve_split") else 0
    flops = step * conf["iterations"] + per_sample * (validation * curve_points + test)
    return flops / (ANCHOR_TFLOPS * 1e12) / 3600


def clip_hours(experiment: dict, cache: dict) -> float:
    """Image features once, then population × iterations text passes over the classes' prompts (and a
    validation pass per curve point)."""
    from taskbal.blackbox.prompt_tuning import load_clip

    key = experiment["data"]["dataset"]
    classes = family_of(experiment)[1]
    if key not in cache:
        import open_clip

        clip, _ = load_clip(experiment["clip"]["model"], None, None)
        tokens = open_clip.get_tokenizer(experiment["clip"]["model"])(["X X X X class name."] * classes)
        with torch.no_grad(), FlopCounterMode(display=False) as text:
            clip.encode_text(tokens)
        with torch.no_grad(), FlopCounterMode(display=False) as image:
            clip.encode_image(torch.zeros(1, 3, 224, 224))
        cache[key] = (text.get_total_flops(), image.get_total_flops())
    text, image = cache[key]
    problem = experiment["problem"]
    images = family_of(experiment)[6]
    passes = problem["population"] * problem["iterations"] + problem["iterations"] // problem["curve_every"] + 1
    return (image * images + text * passes) / (ANCHOR_TFLOPS * 1e12) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--count-batch", type=int, default=2)
    parser.add_argument("--dense-downscale", type=int, default=1,
                        help="count NYUv2's scenes at 1/k of their height and width and the FLOPs times k² (faster)")
    args = parser.parse_args()
    global DENSE_DOWNSCALE
    DENSE_DOWNSCALE = args.dense_downscale
    torch.set_num_threads(1)
    cache: dict = {}
    print(f"GPU-hours at {ANCHOR_TFLOPS} TFLOP/s (bench_paper_scale.py's anchor: upper) and at {PEAK_TFLOPS} "
          "TFLOP/s (lower)")
    print(f"{'table':16s} {'runs':>5s} {'train+eval jobs':>16s} {'GPU-hours':>18s}  per run (h, upper)")
    for name in args.tables.split(","):
        spec = load_table(name)
        seeds = len(seeds_of(spec, "paper"))
        per_run, searched = {}, {}
        for cell in table_cells(spec, "paper"):
            experiment = {k: v for k, v in cell.experiment.items() if k != "grid_search"}  # selected values: defaults
            if cell.run not in per_run:
                per_run[cell.run] = (clip_hours(experiment, cache) if experiment["runner"] == "prompt_tuning"
                                     else mtl_hours(experiment, args.count_batch, cache))
            if cell.selection:  # the grid's search runs, each counted at the cost of the run they select for
                grid = spec["grid_configs"][cell.selection.rsplit("-", 1)[0]]  # selections are <grid>-<hash>
                points = int(np.prod([len(values) for values in grid["search"].values()])) * len(grid["seeds"])
                searched[cell.selection] = points * per_run[cell.run]
        hours = sum(per_run.values()) * seeds + sum(searched.values())
        runs = len(per_run) * seeds
        search_runs = f" + {len(searched)} grid searches" if searched else ""
        lower = hours * ANCHOR_TFLOPS / PEAK_TFLOPS
        print(f"{name:16s} {runs:5d} {2 * runs:16d} {hours:9.0f} / {lower:6.0f}  "
              f"{min(per_run.values()):.2f}-{max(per_run.values()):.2f}{search_runs}", flush=True)


if __name__ == "__main__":
    main()
