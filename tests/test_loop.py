"""The one resumable loop (taskbal.loop) under every runner: the same seed gives the same files, and
a training process SIGKILLed right after a checkpoint, started again, ends with exactly the files of
an uninterrupted run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import small_experiment
from taskbal.data import blackbox_moo, direction_locomotion, moblo_synthetic, simol_toy, sinusoid
from taskbal.mtl import blobs
from taskbal.runners import RUNNERS, runner_of

MTL_DATA = {"family": "mtl_blobs", "tasks": 2, "classes": 3, "dim": 6, "train": 96, "val": 30, "val2": 30,
            "test": 60, "corruption": 0.5}
SINUSOID_DATA = small_experiment()["data"]

# Per runner: a small experiment whose run checkpoints several times, and the writer of its split file.
EXPERIMENTS = {
    "meta": (small_experiment({"name": "simol"}, iterations=16), sinusoid.write_splits),
    "mtl": ({"runner": "mtl", "data": MTL_DATA, "weighting": {"name": "mgda"},
             "mtl": {"iterations": 16, "hidden": [12, 8], "batch_size": 16, "curve_every": 3, "select_on": "val2"}},
            blobs.write_splits),
    "blackbox_moo": ({"runner": "blackbox_moo",
                      "data": {"family": "blackbox_moo", "problem": "shift_l_half_ellipsoid", "dim": 5},
                      "weighting": {"name": "asmg", "step_size": 0.1},
                      "problem": {"population": 6, "iterations": 16, "curve_every": 3}}, blackbox_moo.write_splits),
    "simol_toy": ({"runner": "simol_toy", "data": {"family": "simol_toy", "front_points": 101},
                   "weighting": {"name": "simol"},
                   "problem": {"start": [-8.5, -5.0], "iterations": 16, "batch_size": 1, "curve_every": 3}},
                  simol_toy.write_splits),
    "moblo_synthetic": ({"runner": "moblo_synthetic", "data": {"family": "moblo_synthetic"},
                         "weighting": {"name": "forum"},
                         "problem": {"alpha0": 0.0, "omega0": [0.0, 3.0], "iterations": 16, "curve_every": 3}},
                        moblo_synthetic.write_splits),
    "meta_rl": ({"runner": "meta_rl",
                 "data": {"family": "direction_locomotion", "env": "half_cheetah", "train_tasks": 8, "val_tasks": 1,
                          "test_tasks": 2, "horizon": 4},
                 "weighting": {"name": "simol", "hidden": [8, 8]},
                 "rl": {"iterations": 16, "meta_batch": 2, "rollouts": 2, "curve_every": 3, "hidden": [8, 8]}},
                direction_locomotion.write_splits),
}

def office_split(path, data):
    """A split of generated Office-31 images (the prompt-tuning runner's data)."""
    import json as json_module
    from pathlib import Path

    from fake_split_layouts import office_tree
    from taskbal.data import image_domains
    from taskbal.data.datasets import build_splits

    root = Path(path).parent / "office"
    office_tree(root / "office31/office-31", {"amazon": "amazon/images", "dslr": "dslr/images",
                                              "webcam": "webcam/images"}, per_class=5)
    (root / "office31/.verified").write_text(json_module.dumps({"source": "generated for a test"}))
    build_splits("office31", root / "office31", root / "splits/office31/libmtl.json")
    return image_domains.write_splits(path, {**data, "resources": str(root), "dataset_splits": str(root / "splits")})


TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
EXPERIMENTS["prompt_tuning"] = (
    {"runner": "prompt_tuning", "data": {"family": "image_domains", "dataset": "office31", "image_size": 32},
     "clip": {"dim": 8, "batch_size": 4, "architecture": TINY_CLIP}, "weighting": {"name": "asmg", "step_size": 0.5},
     "problem": {"population": 4, "iterations": 16, "curve_every": 3}}, office_split)

# Runs `taskbal train`, killing the process with SIGKILL as soon as its second checkpoint is on disk.
KILL_AFTER_SECOND_CHECKPOINT = """
import os, signal, sys
from taskbal import loop
from taskbal.data import FAMILIES
from taskbal.mtl import blobs
FAMILIES["mtl_blobs"] = blobs
written = []
save = loop.save_atomic
def save_then_die(obj, path):
    save(obj, path)
    written.append(path)
    if path.name == "resume.pt" and len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
loop.save_atomic = save_then_die
from taskbal.cli import main
main(sys.argv[1:])
"""


@pytest.fixture(autouse=True)
def blobs_family(monkeypatch):
    from taskbal.data import FAMILIES

    monkeypatch.setitem(FAMILIES, "mtl_blobs", blobs)


def test_every_runner_is_covered():
    assert set(EXPERIMENTS) == set(RUNNERS)


@pytest.fixture(params=sorted(EXPERIMENTS))
def case(request, tmp_path):
    experiment, write_splits = EXPERIMENTS[request.param]
    split = tmp_path / "split.npz"
    write_splits(split, experiment["data"])
    return experiment, split


def train_command(experiment, split, out):
    return ["train", "--spec", json.dumps(experiment), "--seed", "3", "--split", str(split),
            "--final", str(out / "final.pt"), "--curve", str(out / "curve.csv"), "--summary", str(out / "train.json"),
            "--checkpoint-every", "4", "--run-id", "r", "--scale", "test", "--no-track", "--device", "cpu"]


def assert_same_outputs(a, b):
    pd.testing.assert_frame_equal(pd.read_csv(a / "curve.csv"), pd.read_csv(b / "curve.csv"))
    first, second = (torch.load(p / "final.pt", weights_only=False) for p in (a, b))
    assert first.keys() == second.keys()
    for key in first:
        assert_equal_nested(first[key], second[key], key)


def assert_equal_nested(x, y, where):
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x:
            assert_equal_nested(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_equal_nested(u, v, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    elif hasattr(x, "shape"):  # NumPy arrays
        assert (x == y).all(), where
    else:
        assert x == y, where


def test_same_seed_gives_the_same_files(case, tmp_path):
    experiment, split = case
    runner = runner_of(experiment)
    for name in ("a", "b"):
        runner.train(experiment, 3, split, tmp_path / name, checkpoint_every=4, progress=False)
    assert_same_outputs(tmp_path / "a", tmp_path / "b")
    # every runner's train.json times its meta-updates alone (the timing tables read it)
    summary = json.loads((tmp_path / "a" / "train.json").read_text())
    assert summary["steps_timed"] == summary["iterations"]
    assert 0 < summary["step_seconds_median"] <= summary["seconds"]
    assert summary["step_seconds_mean"] * summary["steps_timed"] <= summary["seconds"]


def test_killed_process_resumes_to_the_same_files(case, tmp_path, tool_env):
    experiment, split = case
    killed = tmp_path / "killed"
    command = train_command(experiment, split, killed)
    process = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_CHECKPOINT, *command], env=tool_env,
                             capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert (killed / "resume.pt").exists() and not (killed / "final.pt").exists()

    subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_CHECKPOINT.replace("len(written) == 2", "False"),
                    *command], env=tool_env, check=True, capture_output=True)
    assert json.loads((killed / "train.json").read_text())["resumed_from"] == 8
    assert not (killed / "resume.pt").exists()
    runner_of(experiment).train(experiment, 3, split, tmp_path / "whole", checkpoint_every=4, progress=False)
    assert_same_outputs(tmp_path / "whole", killed)


def test_every_curve_row_is_reported_once_complete_also_across_a_resume(case, tmp_path):
    """Live tracking sees each row of curve.csv, complete (for runners whose step statistics join the row
    recorded before the step, after that step), in order; a resumed run reports the rest."""
    from taskbal.loop import reporting_rows

    experiment, split = case
    runner = runner_of(experiment)
    reported = []
    with reporting_rows(lambda rows: reported.extend(dict(row) for row in rows)):
        runner.train(experiment, 3, split, tmp_path / "run", checkpoint_every=4, stop_after=8, progress=False)
        runner.train(experiment, 3, split, tmp_path / "run", checkpoint_every=4, progress=False)
    curve = pd.read_csv(tmp_path / "run/curve.csv").set_index("iteration")
    # Rows after the checkpoint at 8 are reported again by the resumed attempt, with the same values.
    assert sorted({row["iteration"] for row in reported}) == curve.index.tolist()
    for row in reported:
        expected = curve.loc[row["iteration"]]
        got = pd.Series({key: row.get(key, float("nan")) for key in curve.columns}, dtype=float)
        pd.testing.assert_series_equal(got, expected.astype(float), check_names=False)
