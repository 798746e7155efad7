"""The training loop: same seed → same numbers; a killed run resumes to the same numbers."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import small_experiment
from taskbal.evaluate import evaluate
from taskbal.train import FINAL_FILE, RESUME_FILE, train


def final_state(out_dir):
    return torch.load(out_dir / FINAL_FILE, weights_only=False)["learner"]["model"]


def assert_same_model(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


WEIGHTINGS = [{"name": "mean"}, {"name": "simol"}, {"name": "improvement"}, {"name": "pcgrad"},
              {"name": "mgda"}, {"name": "cagrad"}]


@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=lambda w: w["name"])
def test_same_seed_gives_identical_numbers(tmp_path, small_split, weighting):
    experiment = small_experiment(weighting)
    a = train(experiment, 1, small_split, tmp_path / "a", progress=False)
    b = train(experiment, 1, small_split, tmp_path / "b", progress=False)
    assert_same_model(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a/curve.csv"), pd.read_csv(tmp_path / "b/curve.csv"))
    assert a["final_test_mse"] == b["final_test_mse"]
    c = train(experiment, 2, small_split, tmp_path / "c", progress=False)
    assert c["final_test_mse"] != a["final_test_mse"]


@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=lambda w: w["name"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, small_split, weighting):
    experiment = small_experiment(weighting, iterations=12)
    train(experiment, 0, small_split, tmp_path / "whole", progress=False)
    stopped = train(experiment, 0, small_split, tmp_path / "parts", progress=False, stop_after=5,
                    checkpoint_every=1000)
    assert stopped == {"stopped_at": 5} and (tmp_path / "parts" / RESUME_FILE).exists()
    summary = train(experiment, 0, small_split, tmp_path / "parts", progress=False)
    assert summary["resumed_from"] == 5
    assert not (tmp_path / "parts" / RESUME_FILE).exists()
    assert_same_model(final_state(tmp_path / "whole"), final_state(tmp_path / "parts"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole/curve.csv"),
                                  pd.read_csv(tmp_path / "parts/curve.csv"))


def test_killed_process_resumes_to_the_same_numbers(tmp_path, small_split, tool_env):
    """SIGKILL a real training process after its first checkpoint, restart it, compare."""
    experiment = small_experiment({"name": "simol"}, iterations=1500)
    command = [sys.executable, "-m", "taskbal", "train", "--spec", json.dumps(experiment), "--seed", "0",
               "--split", str(small_split), "--checkpoint-every", "50", "--run-id", "r", "--scale", "test",
               "--no-track"]
    killed_dir = tmp_path / "killed"
    command += ["--final", str(killed_dir / FINAL_FILE), "--curve", str(killed_dir / "curve.csv"),
                "--summary", str(killed_dir / "train.json")]
    process = subprocess.Popen(command, env=tool_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed_dir / RESUME_FILE).exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run past the checkpoint, so the restart really repeats work
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert (killed_dir / RESUME_FILE).exists() and not (killed_dir / FINAL_FILE).exists()

    subprocess.run(command, env=tool_env, check=True, capture_output=True)
    resumed_from = json.loads((killed_dir / "train.json").read_text())["resumed_from"]
    assert 0 < resumed_from < 1500
    train(experiment, 0, small_split, tmp_path / "whole", progress=False)
    assert_same_model(final_state(tmp_path / "whole"), final_state(killed_dir))


def test_evaluation_agrees_with_the_last_curve_point(tmp_path, small_split):
    summary = train(small_experiment(), 0, small_split, tmp_path, progress=False)
    result = evaluate(tmp_path / FINAL_FILE, small_split, tmp_path, device="cpu")
    per_task = pd.read_csv(tmp_path / "eval.csv")
    assert len(per_task) == 40 and set(per_task.columns) >= {"task", "mse", "amplitude", "phase"}
    assert result["mse_mean"] == pytest.approx(summary["final_test_mse"], rel=1e-6)
    worst = per_task["mse"].nlargest(4).mean()
    assert result["mse_worst10"] == pytest.approx(worst, rel=1e-6)


def test_grouped_test_tasks_record_the_worst_group_and_std_along_training(tmp_path):
    """The skewed sinusoid's curve has the worst amplitude bin and the std over bins at every point (Nash-GBML
    Figs. 2, 11, 12); the last point is the table's value of that seed, from eval.csv."""
    from taskbal.data.skewed_sinusoid import write_splits
    from taskbal.stats import group_statistic

    data = dict(family="skewed_sinusoid", shots=5, query=5, eval_query=10, train_tasks=100, val_tasks=10,
                test_tasks=60, split_seed=3)
    write_splits(tmp_path / "skewed.npz", data)
    experiment = small_experiment(iterations=4)
    experiment["data"] = data
    train(experiment, 0, tmp_path / "skewed.npz", tmp_path, progress=False)
    summary = evaluate(tmp_path / FINAL_FILE, tmp_path / "skewed.npz", tmp_path, device="cpu")
    curve, per_task = pd.read_csv(tmp_path / "curve.csv"), pd.read_csv(tmp_path / "eval.csv")
    assert list(curve["iteration"]) == [0, 4] and curve["test_mse_worst_group"].notna().all()
    assert (curve["test_mse_worst_group"] >= curve["test_mse"]).all()
    last = curve.iloc[-1]
    assert last["test_mse_worst_group"] == pytest.approx(summary["mse_worst_group"], rel=1e-6)
    std = group_statistic(per_task["mse"].to_numpy(), per_task["group"].to_numpy(), "std_group", True)
    assert last["test_mse_std_group"] == pytest.approx(std, rel=1e-5)


@pytest.mark.parametrize("penalty", [
    {"name": "centroid", "weight": 0.1, "num_tasks_total": 100, "inner_lr": 0.01, "game_size": 4},
    {"name": "robust", "weight": 0.01, "r": 2, "game_size": 4}])
def test_curve_adapts_in_the_evaluation_chunks_cut_at_whole_nash_games(tmp_path, monkeypatch, penalty):
    """The curve adapts its val/test batches in the evaluation job's chunks (a family's eval_chunk, here 18,
    rounded down to whole games of 4: 16) and gets the one-batch row to float rounding, task by task; and
    the evaluation job's per-task errors. A chunk that cut a game (18) would change the tasks' errors."""
    from taskbal.data.skewed_sinusoid import SkewedSinusoidTasks, write_splits
    from taskbal.evaluate import per_task_metrics
    from taskbal.train import Run

    data = dict(family="skewed_sinusoid", shots=5, query=5, eval_query=10, train_tasks=100, val_tasks=10,
                test_tasks=60, split_seed=3)
    write_splits(tmp_path / "skewed.npz", data)
    experiment = small_experiment(iterations=2)
    experiment["data"], experiment["learner"]["penalty"] = data, penalty
    monkeypatch.setattr(SkewedSinusoidTasks, "eval_chunk", 18, raising=False)
    run = Run(experiment, 0, tmp_path / "skewed.npz", torch.device("cpu"))
    run.step(0)
    assert run.eval_chunk == 16
    test = run.eval_batches["test"]
    chunked_row, chunked = run.evaluate_mean_mse(), run.adapted_losses(test)
    run.eval_chunk = None  # one batch: every task of the split adapted at once, in games of 4
    whole_row, whole = run.evaluate_mean_mse(), run.adapted_losses(test)
    assert set(chunked_row) == {"val_mse", "test_mse", "test_mse_worst_group", "test_mse_std_group"}
    assert chunked_row == pytest.approx(whole_row, rel=1e-6)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    metrics = per_task_metrics(run.learner, run.tasks, "test", torch.device("cpu"))
    torch.testing.assert_close(torch.from_numpy(metrics["mse"]), chunked, rtol=1e-5, atol=1e-6)
    run.eval_chunk = 18  # misaligned: games cut at task 18, 36, 54
    with pytest.raises(AssertionError):
        torch.testing.assert_close(run.adapted_losses(test), whole, rtol=1e-5, atol=1e-6)


def test_training_reduces_the_meta_test_error(tmp_path, small_split):
    experiment = small_experiment(iterations=300)
    experiment["outer"]["lr"] = 0.005
    experiment["evaluation"]["curve_every"] = 50
    train(experiment, 0, small_split, tmp_path, progress=False)
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert list(curve["iteration"]) == [0, 50, 100, 150, 200, 250, 300]
    assert curve["test_mse"].iloc[-1] < 0.85 * curve["test_mse"].iloc[0]


def test_train_json_names_the_machine_of_each_stretch_of_a_resumed_run(tmp_path, small_split, monkeypatch):
    """A run resumed on another node records both machines, in order; one machine is named once."""
    from taskbal import loop, machine

    here = machine.describe("cpu")
    assert machine.cpu_model() in here and torch.__version__ in here
    assert f"({torch.backends.cpu.get_cpu_capability()} kernels, " in here
    experiment = small_experiment(iterations=20)
    train(experiment, 0, small_split, tmp_path / "one", progress=False)
    assert json.loads((tmp_path / "one/train.json").read_text())["machine"] == here

    monkeypatch.setattr(loop, "describe_machine", lambda device: "node A")
    train(experiment, 0, small_split, tmp_path / "two", progress=False, checkpoint_every=5, stop_after=10)
    monkeypatch.setattr(loop, "describe_machine", lambda device: "node B")
    train(experiment, 0, small_split, tmp_path / "two", progress=False, checkpoint_every=5)
    assert json.loads((tmp_path / "two/train.json").read_text())["machine"] == "node A; then node B"


def test_outer_gradient_clipping_hands_adam_the_direction_at_the_clipped_norm(small_split, monkeypatch):
    """outer.clip_grad_norm: the outer optimiser sees the direction rescaled to that norm when it is
    longer (torch.nn.utils.clip_grad_norm_), and the unclipped direction otherwise."""
    from taskbal.train import Run

    seen = []
    for clip in (None, 1e-3, 1e6):
        experiment = small_experiment(iterations=1)
        experiment["outer"]["clip_grad_norm"] = clip
        run = Run(experiment, 0, small_split, torch.device("cpu"))
        directions = []
        combine = run.weighting.combine
        monkeypatch.setattr(run.weighting, "combine", lambda tasks: directions.append(combine(tasks)) or directions[-1])
        step = run.optimizer.step
        monkeypatch.setattr(run.optimizer, "step", lambda: seen.append(
            torch.cat([p.grad.flatten() for p in run.learner.parameters()])) or step())
        run.step(0)
        direction = directions[-1].direction
        if clip == 1e-3:
            assert seen[-1].norm().item() == pytest.approx(1e-3, rel=1e-4)
            assert torch.nn.functional.cosine_similarity(seen[-1], direction, dim=0).item() == pytest.approx(1.0)
        else:
            assert torch.equal(seen[-1], direction)
    with pytest.raises(ValueError, match=r"^outer\.clip_grad_norm: must be null \(no clipping\) or a number > 0"):
        experiment["outer"]["clip_grad_norm"] = 0
        Run(experiment, 0, small_split, torch.device("cpu"))
