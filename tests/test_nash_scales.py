"""Nash-GBML Tables 2, 5, 6: the optional `medium` scale, the 1-inner-step reading (the official code's)
as columns judged against the paper's, and the divergence diagnosis' inner-loop probes."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from taskbal.config import load_table, seeds_of, table_cells, without_inert_penalty
from taskbal.plan import PlanError, load_plan

TABLES = ("nash_table2", "nash_table5", "nash_table6")
READING = {"mean_1step": "mean", "worst_1step": "worst", "std_1step": "std"}


@pytest.mark.parametrize("name", TABLES)
def test_the_medium_scale_keeps_the_papers_evaluation_and_cuts_the_iterations(name):
    spec = load_table(name)
    assert {"paper", "medium", "quick", "tiny"} == set(spec["scales"])  # medium comes from nash_table2
    paper = {cell.run: cell.experiment for cell in table_cells(spec, "paper")}
    medium = {cell.run: cell.experiment for cell in table_cells(spec, "medium")}
    assert len(paper) == len(medium)
    for experiment in medium.values():
        data, outer = experiment["data"], experiment["outer"]
        assert outer["iterations"] == 10000
        # every visited training task is a fresh draw, as at paper scale
        assert data["train_tasks"] == outer["iterations"] * outer["meta_batch"]
        assert (data["test_tasks"], data["eval_query"], data["val_tasks"]) == (5000, 1000, 250)
    assert seeds_of(spec, "medium") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", TABLES)
def test_the_one_step_columns_are_a_second_reading_of_the_three_step_columns(name):
    spec = load_table(name)
    columns = {column["key"]: column for column in spec["columns"]}
    assert {key: columns[key].get("paper_column") for key in READING} == READING
    for key, published in READING.items():
        assert columns[key]["metric"] == columns[published]["metric"]
    steps = {(cell.row, cell.column): cell.experiment["learner"]["inner_steps"] for cell in table_cells(spec, "tiny")}
    for (row, column), inner_steps in steps.items():
        assert inner_steps == (1 if column in READING else 3), (row, column)
    # one run per row and reading: the three columns of a reading share it
    runs: dict = {}
    for cell in table_cells(spec, "tiny"):
        runs.setdefault((cell.row, cell.column in READING), set()).add(cell.run)
    assert all(len(shared) == 1 for shared in runs.values())
    assert len({run for (_, one_step), shared in runs.items() if not one_step for run in shared}) == len(spec["rows"])
    assert len({run for (_, one_step), shared in runs.items() if one_step for run in shared}) == len(plain_rows(spec))


def plain_rows(spec: dict) -> list[dict]:
    return [row for row in spec["rows"] if not (row.get("set") or {}).get("learner", {}).get("penalty")]


@pytest.mark.parametrize("name", TABLES)
def test_a_penalty_inert_with_one_inner_step_shares_the_plain_run(name):
    """With one inner step the literal game's penalty is exactly zero (nash_penalty, ``at: inner``): a
    penalised row's 1-step cells are the run of the plain row of its learner and weighting, while
    its 3-step cells are its own run."""
    spec = load_table(name)
    cells = table_cells(spec, "tiny")
    plain_labels = {row["label"] for row in plain_rows(spec)}
    plain_run = {(c.experiment["learner"]["name"], c.experiment["weighting"]["name"]): c.run
                 for c in cells if c.row in plain_labels and c.column == "mean_1step"}
    three_step = {c.row: c for c in cells if c.column == "mean"}
    for cell in cells:
        if cell.column not in READING:
            assert cell.as_written is None
            continue
        learner = cell.experiment["learner"]
        assert learner["penalty"] is None and "penalty_gradients" not in learner
        assert cell.run == plain_run[learner["name"], cell.experiment["weighting"]["name"]], cell.row
        if cell.row in plain_labels:
            assert cell.as_written is None
        else:
            assert cell.as_written["learner"]["penalty"] == three_step[cell.row].experiment["learner"]["penalty"]
            assert cell.run != three_step[cell.row].run


def test_only_a_penalty_that_cannot_act_is_dropped():
    penalty = {"name": "robust", "weight": 0.01, "r": 1}
    learner = {"name": "maml", "inner_steps": 1, "penalty": penalty, "penalty_gradients": "per_copy"}
    experiment = {"data": {"family": "skewed_sinusoid"}, "learner": learner, "weighting": {"name": "mean"}}
    assert without_inert_penalty(experiment)["learner"] == {"name": "maml", "inner_steps": 1, "penalty": None}
    assert experiment["learner"]["penalty"] == penalty  # the table's experiment is left as written
    for acting in ({"inner_steps": 3}, {"inner_steps": 2}, {"penalty": {**penalty, "at": "adapted"}}):
        kept = {**experiment, "learner": {**learner, **acting}}
        assert without_inert_penalty(kept) is kept
    default_steps = {**experiment, "learner": {k: v for k, v in learner.items() if k != "inner_steps"}}
    assert without_inert_penalty(default_steps) is default_steps  # only an explicit step count is read


def test_a_penalty_written_only_in_a_one_step_cell_is_still_checked_before_anything_runs(repo, tmp_path):
    tables = tmp_path / "tables"
    shutil.copytree(repo / "config/tables", tables)
    shutil.copytree(repo / "config/grids", tmp_path / "grids")
    path = tables / "nash_table2.yaml"
    text = path.read_text()
    row = '  - label: "MAML + p_C(0.1)"\n'
    assert row in text
    bad_one_step_penalty = "    set_in_columns: {mean_1step: {learner: {penalty: {weight: -1}}}}\n"
    path.write_text(text.replace(row, row + bad_one_step_penalty, 1))
    with pytest.raises(PlanError) as caught:
        load_plan(tables, repo / "workflow/schemas", [], cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert "nash_table2.yaml" in message and "mean_1step" in message and "learner.penalty.weight" in message


def test_an_unknown_scale_name_is_refused(repo, tmp_path):
    tables = tmp_path / "tables"
    shutil.copytree(repo / "config/tables", tables)
    if (repo / "config/grids").is_dir():
        shutil.copytree(repo / "config/grids", tmp_path / "grids")
    path = tables / "nash_table2.yaml"
    text = path.read_text()
    assert "\n  medium:" in text
    path.write_text(text.replace("\n  medium:", "\n  huge:", 1))
    with pytest.raises(PlanError) as caught:
        load_plan(tables, repo / "workflow/schemas", [], cache_dir=tmp_path / "cache")
    assert "nash_table2.yaml" in str(caught.value) and "huge" in str(caught.value)


def test_every_nash_table_plans_at_the_medium_scale(repo, tmp_path):
    plan = load_plan(repo / "config/tables", repo / "workflow/schemas", [], cache_dir=tmp_path / "cache")
    for name in TABLES:
        runs = {run for (scale, run), tables in plan.tables_of_run.items() if scale == "medium" and name in tables}
        assert len(runs) == len(plan.tables[name]["rows"]) + len(plain_rows(plan.tables[name])), name
    assert "medium" in plan.scales


def test_the_divergence_diagnosis_records_the_inner_loop(repo, tmp_path):
    """tools/diagnose_divergence.py on Meta-SGD + p_C at tiny scale: per-step support losses of every inner
    step, the penalty's values (zero at the first inner step, where every player is at theta) and the rates."""
    out = tmp_path / "diagnosis"
    result = subprocess.run([sys.executable, str(repo / "tools/diagnose_divergence.py"), "nash_table2",
                             "Meta-SGD + p_C(0.1)", "mean", "--scale", "tiny", "--out", str(out)],
                            cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 4
    for column in ("inner_support_loss_0", "inner_support_loss_1", "inner_support_loss_2",
                   "inner_penalty_0", "inner_penalty_1", "inner_penalty_2",
                   "rate_min", "rate_median", "rate_max", "rate_negative"):
        assert column in steps and steps[column].notna().all(), column
    assert (steps.inner_penalty_0 == 0).all() and (steps.inner_penalty_2 > 0).all()
    assert (steps.rate_min >= 0.005 - 1e-6).iloc[0] and (steps.rate_max <= 0.1 + 1e-6).iloc[0]  # the init range
