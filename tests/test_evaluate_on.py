"""A column's ``evaluate_on``: the same trained runs tested on another split's tasks (TOW Table 3's CUB column),
from the table config through the plan and the file contract to the ``evaluate`` command."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import REPO, small_experiment
from taskbal import artifacts
from taskbal.config import load_table, split_id, table_cells
from taskbal.plan import load_plan


def test_run_files_name_the_split_a_run_is_evaluated_on():
    own = artifacts.run_file("tiny", "r-1", 0, artifacts.EVAL)
    other = artifacts.run_file("tiny", "r-1", 0, artifacts.EVAL_SUMMARY, "s-2")
    assert other == "results/runs/tiny/r-1/seed0/on-s-2/eval.json"
    assert artifacts.run_and_seed(own) == ("r-1", 0, None, "eval.csv")
    assert artifacts.run_and_seed(other) == ("r-1", 0, "s-2", "eval.json")
    assert artifacts.evaluated_on("results/runs/tiny/r-1/seed0/on-s-2") == "s-2"
    assert artifacts.evaluated_on("results/runs/tiny/r-1/seed0") is None
    with pytest.raises(ValueError, match="final.pt"):
        artifacts.run_file("tiny", "r-1", 0, artifacts.FINAL, "s-2")  # a run is trained once, on its own split


@pytest.mark.parametrize("scale", ["paper", "tiny"])
def test_the_cub_column_tests_the_mini_imagenet_runs_on_cub(scale, tmp_path):
    spec = load_table("tow_table3", REPO / "config/tables")
    cells = {(cell.row, cell.column): cell for cell in table_cells(spec, scale)}
    rows = {row for row, _ in cells}
    assert len(rows) == 5 and all((row, "cub") in cells for row in rows)
    for row in rows:
        mini, cub = cells[row, "miniimagenet"], cells[row, "cub"]
        assert cub.run == mini.run and cub.split == mini.split  # trained once, on mini-ImageNet
        assert mini.evaluated_on is None and cub.evaluated_on == split_id({"data": cub.evaluation_data})
        assert cub.evaluation_data == {**mini.experiment["data"], "dataset": "cub", "split_variant": "anyshot"}
        on_cub = f"results/runs/{scale}/{cub.run}/seed0/on-{cub.evaluated_on}"
        assert cub.file(scale, 0, artifacts.EVAL) == f"{on_cub}/eval.csv"
        assert cub.file(scale, 0, artifacts.CURVE) == mini.file(scale, 0, artifacts.CURVE)
    plan = load_plan(REPO / "config/tables", REPO / "workflow/schemas", [], cache_dir=tmp_path)
    cub_split = next(iter({cell.evaluated_on for cell in cells.values() if cell.evaluated_on}))
    assert plan.splits[scale, cub_split]["dataset"] == "cub"  # the split rule can build it
    assert any("cub" in path for path in plan.split_inputs[scale, cub_split])  # after CUB's download


def test_evaluate_writes_the_other_splits_results_beside_the_runs_own(small_split, tmp_path, tool_env):
    """`taskbal evaluate` into a run's on-<split>/ folder: the other split's tasks, the run's own eval.csv
    untouched; a folder that names another split than --split is refused before anything runs."""
    import subprocess

    from taskbal.data.sinusoid import write_splits
    from taskbal.train import train

    experiment = small_experiment(iterations=4)
    seed_dir = tmp_path / "runs/tiny/sinusoid-run/seed0"
    train(experiment, 0, small_split, seed_dir, progress=False)
    other = tmp_path / "sinusoid-other.npz"
    write_splits(other, dict(shots=5, query=5, train_tasks=32, val_tasks=4, test_tasks=12, split_seed=99))

    def evaluate(split, folder):
        return subprocess.run(
            ["taskbal", "evaluate", "--final", str(seed_dir / "final.pt"), "--split", str(split),
             "--per-task", str(folder / "eval.csv"), "--summary", str(folder / "eval.json"), "--seed", "0",
             "--run-id", "sinusoid-run", "--scale", "tiny", "--tables", "t", "--no-track"],
            capture_output=True, text=True, env=tool_env, cwd=tmp_path)

    assert evaluate(small_split, seed_dir).returncode == 0
    done = evaluate(other, seed_dir / "on-sinusoid-other")
    assert done.returncode == 0, done.stderr
    own, elsewhere = pd.read_csv(seed_dir / "eval.csv"), pd.read_csv(seed_dir / "on-sinusoid-other/eval.csv")
    assert len(own) == 40 and len(elsewhere) == 12  # each split's own test tasks
    assert json.loads((seed_dir / "on-sinusoid-other/eval.json").read_text())["test_tasks"] == 12
    wrong = evaluate(other, seed_dir / "on-sinusoid-5shot")
    assert wrong.returncode != 0 and "evaluation on split sinusoid-5shot" in wrong.stderr
    assert not (seed_dir / "on-sinusoid-5shot").exists()
