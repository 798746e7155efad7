"""Grid searches (taskbal.grid): the selection rule, the plan's search runs and shared selections, the
train command taking the selected values, and the select command on a tiny grid."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from taskbal import artifacts, cli
from taskbal.config import load_table, run_id, table_cells
from taskbal.grid import (
    MARKER,
    apply_selection,
    choose,
    grid_points,
    page_markdown,
    score_point,
    search_experiments,
    selection_record,
    stall_counts,
    with_stalls,
)
from taskbal.plan import PlanError, load_plan

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow/schemas"

TINY_GRID = {
    "name": "tiny_grid", "source": "a test", "title": "a tiny grid",
    "search": {"weighting.lambda_grad": [0.1, 1.0], "weighting.theta_lr": [0.01, 0.1, 1.0]},
    "select": {"value": "val_mse", "lower_is_better": True}, "seeds": [0, 1],
    "scales": {"paper": {}, "quick": {"set": {"outer": {"iterations": 7}}},
               "tiny": {"search": {"weighting.theta_lr": [0.5]}}},
}


def point(values, diverged=None, index=0):
    return score_point({"weighting.theta_lr": index}, f"run{index}", dict(enumerate(values)), diverged or {})


def test_points_are_the_product_in_the_configs_order_and_a_scale_may_search_fewer():
    assert grid_points(TINY_GRID, "paper") == [
        {"weighting.lambda_grad": a, "weighting.theta_lr": b} for a in (0.1, 1.0) for b in (0.01, 0.1, 1.0)]
    assert grid_points(TINY_GRID, "tiny") == [{"weighting.theta_lr": 0.5}]


def test_the_best_mean_over_seeds_is_chosen_and_a_tie_keeps_the_earlier_point():
    points = [point([2.0, 4.0], index=0), point([1.0, 3.0], index=1), point([3.0, 1.0], index=2)]
    assert points[1]["mean"] == 2.0
    assert choose(points, lower_is_better=True) == 1  # 2.0 at index 1 and index 2: the earlier wins
    assert choose(points, lower_is_better=False) == 0


def test_a_point_with_a_diverged_or_non_finite_seed_is_never_chosen():
    diverged = point([0.1, 0.2], diverged={1: 1500}, index=0)
    nan = point([0.1, math.nan], index=1)
    fine = point([5.0, 5.0], index=2)
    assert diverged["excluded"] == "seed 1 diverged at iteration ~1,500"
    assert nan["excluded"] == "seed 1 gave no finite value" and nan["mean"] == 0.1
    assert choose([diverged, nan, fine], lower_is_better=True) == 2
    assert choose([diverged, nan], lower_is_better=True) is None


def test_a_selection_record_names_the_point_and_keeps_every_point():
    base = {"data": {"family": "sinusoid"}, "weighting": {"name": "simol"}}
    scored = [point([3.0], index=0), point([1.0], index=1)]
    record = selection_record(TINY_GRID, "paper", base, scored)
    assert record["selected"] == {"weighting.theta_lr": 1} and record["selected_mean"] == 1.0
    assert record["points"] == scored and record["selection"].startswith("tiny_grid-")
    page = page_markdown(TINY_GRID, "paper", [record], {record["selection"]: ["t1: SIMOL, overall"]}, {})
    assert "**1**" in page and "t1: SIMOL, overall" in page
    nothing = selection_record(TINY_GRID, "paper", base, [point([math.nan], index=0)])
    assert nothing["selected"] is None


def test_the_page_names_points_that_stalled_or_blew_up_without_changing_the_selection():
    """A grid's stall rule judges each point's search runs for its page (taskbal.divergence); the selection
    stays the paper's, the value alone."""
    weights = {"run0": [1.0, 0.001, 0.001, 0.002], "run1": [1.0, 0.9, 1.1, 0.8], "run2": [20.0, 40.0, 50.0, 1.0]}
    base = {"data": {"family": "sinusoid"}, "weighting": {"name": "simol"}}
    scored = [point([0.5, 0.7], index=0), point([1.0, 1.2], index=1), point([4.0, 4.1], index=2)]
    record = selection_record(TINY_GRID, "paper", base, scored)
    assert record["selected"] == {"weighting.theta_lr": 0}  # the stalled point is still the best by value
    rule = {"metric": "simol_r_mean", "below": 0.01, "above": 10.0, "share": 0.5}
    curve = lambda run, seed: pd.DataFrame({"iteration": [0, 100, 200, 300, 400],  # noqa: E731
                                            "simol_r_mean": [math.nan] + weights[run]})
    judged = with_stalls([record], rule, curve, lambda run, seed: {"divergence": "none"})
    notes = [p["stalled"] for p in judged[0]["points"]]
    assert notes[0].startswith("seeds 0, 1 stalled: simol_r_mean < 0.01 at 75%, 75%")
    assert notes[1] == "" and notes[2].startswith("seeds 0, 1 blew up: simol_r_mean > 10 at 75%, 75%")
    assert stall_counts(judged[0]) == ("1 stalled, 1 blew up (of 3 points); the selected point: " + notes[0])
    grid = {**TINY_GRID, "stall": {"metric": "simol_r_mean", "below": 0.01, "above": 10}}
    page = page_markdown(grid, "paper", judged, {}, {})
    assert "- stall rule: 1 stalled, 1 blew up (of 3 points)" in page and notes[2] in page
    assert "'blew up' a seed whose simol_r_mean" in page and "the selection does not use it" in page
    assert with_stalls([record], None, curve, None) == [record]  # a grid without the rule judges nothing
    assert "stall rule" not in page_markdown(TINY_GRID, "paper", [record], {}, {})


def test_apply_selection_merges_the_chosen_settings_and_checks_the_file():
    experiment = {"weighting": {"name": "simol", "theta_optimizer": "adam"},
                  MARKER: {"grid": "tiny_grid", "selection": "tiny_grid-0123abcd"}}
    selection = {"selection": "tiny_grid-0123abcd",
                 "selected": {"weighting.theta_lr": 0.3, "weighting.lambda_grad": 1}}
    assert apply_selection(experiment, selection) == {
        "weighting": {"name": "simol", "theta_optimizer": "adam", "theta_lr": 0.3, "lambda_grad": 1}}
    with pytest.raises(ValueError, match="needs 'tiny_grid-0123abcd'"):
        apply_selection(experiment, {**selection, "selection": "tiny_grid-ffffffff"})
    with pytest.raises(ValueError, match="no point of grid tiny_grid could be selected"):
        apply_selection(experiment, {**selection, "selected": None})
    with pytest.raises(SystemExit, match="pass its file with --selection"):
        cli.with_selection(experiment, None)


def copy_configs(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"


def test_simol_rows_take_one_selection_per_setting_and_deeper_networks_share_table1s(tmp_path):
    plan = load_plan(REPO / "config/tables", SCHEMAS, [], cache_dir=tmp_path)
    table1 = load_table(REPO / "config/tables/simol_table1.yaml")
    table5 = load_table(REPO / "config/tables/simol_table5.yaml")
    simol = {cell.column: cell for cell in table_cells(table1, "quick") if cell.row == "SIMOL"}
    assert len({cell.selection for cell in simol.values()}) == 4  # 5 / 2 shots x Adam / SGD inner steps
    assert simol["overall_5shot"].selection == simol["worst10_5shot"].selection
    deeper = [cell for cell in table_cells(table5, "quick") if cell.column == "overall"]
    assert {cell.selection for cell in deeper} == {simol["overall_2shot"].selection}
    assert deeper[0].run == simol["overall_2shot"].run  # the 2-layer row is Table 1's SIMOL 2-shot run

    marked = simol["overall_5shot"].experiment
    assert "lambda_grad" not in marked["weighting"] and "theta_lr" not in marked["weighting"]
    assert marked["weighting"]["theta_optimizer"] == "adam"  # not searched at quick scale
    search = plan.selections["quick", simol["overall_5shot"].selection]
    assert len(search["runs"]) == 4 * 4 * 5 and search["seeds"] == [0]
    first = plan.runs["quick", search["runs"][0]]
    assert first["outer"]["iterations"] == 1000 and first["weighting"]["lambda_grad"] == 0.001
    assert first["model"]["hidden"] == [32, 32] and first["data"]["shots"] == 5
    assert plan.selection_of_run["quick", simol["overall_5shot"].run] == simol["overall_5shot"].selection
    paper = plan.selections["paper", next(c.selection for c in table_cells(table1, "paper") if c.selection)]
    assert len(paper["runs"]) == 4 * 4 * 5 * 2  # the paper-scale search includes the θ optimiser
    # The clipped SGD columns run at paper scale only: two more settings there, none at quick.
    at_paper = {cell.column: cell.selection for cell in table_cells(table1, "paper") if cell.row == "SIMOL"}
    assert len(set(at_paper.values())) == 6
    assert at_paper["overall_5shot_sgd_clip"] not in {at_paper["overall_5shot_sgd"], at_paper["overall_5shot"]}
    assert not any(column.endswith("_clip") for column in simol)


def simol_cells(config: Path, scale: str) -> dict:
    """Table 1's SIMOL cells: column → (run, selection)."""
    table = load_table(config / "tables/simol_table1.yaml")
    return {c.column: (c.run, c.selection) for c in table_cells(table, scale) if c.row == "SIMOL"}


def test_a_changed_grid_is_another_selection_and_another_run(tmp_path):
    config = copy_configs(tmp_path)
    before = simol_cells(config, "quick")
    path = config / "grids/simol_appendix_d.yaml"
    grid = yaml.safe_load(path.read_text())
    grid["scales"]["quick"]["set"]["outer"]["iterations"] = 999
    path.write_text(yaml.safe_dump(grid, allow_unicode=True))
    after = simol_cells(config, "quick")
    assert all(before[key][0] != after[key][0] and before[key][1] != after[key][1] for key in before)


def test_a_grid_that_does_not_exist_or_is_malformed_names_its_file(tmp_path):
    config = copy_configs(tmp_path)
    table = config / "tables/simol_table1.yaml"
    table.write_text(table.read_text().replace("grid_search: simol_appendix_d", "grid_search: no_such_grid"))
    with pytest.raises(PlanError, match="grid_search: no grid config .*no_such_grid.yaml"):
        load_plan(config / "tables", SCHEMAS, [], cache_dir=tmp_path)
    table.write_text(table.read_text().replace("grid_search: no_such_grid", "grid_search: simol_appendix_d"))
    grid = config / "grids/simol_appendix_d.yaml"
    grid.write_text(grid.read_text().replace("select: {value: val_mse", "select: {valu: val_mse"))
    with pytest.raises(PlanError, match="simol_appendix_d.yaml: select"):
        load_plan(config / "tables", SCHEMAS, [], cache_dir=tmp_path)
    grid.write_text(grid.read_text().replace("select: {valu: val_mse", "select: {value: val_mse")
                    .replace("weighting.theta_lr: [0.01, 0.03", "weighting.theta_rate: [0.01, 0.03"))
    with pytest.raises(PlanError, match="grid simol_appendix_d point .*theta_rate"):
        load_plan(config / "tables", SCHEMAS, [], cache_dir=tmp_path)


@pytest.mark.parametrize("rule, field", [("{metric: simol_r_mean, below: 0.01, above: .nan}", "stall.above"),
                                         ("{metric: simol_r_mean, below: 0.01, above: 0.001}", "stall.above"),
                                         ("{metric: simol_r_mean}", "stall.below: the rule needs a level"),
                                         ("{metric: simol_r_mean, below: 0.01, over: 10}", "stall")])
def test_a_bad_grid_stall_rule_names_its_field_and_file(tmp_path, rule, field):
    config = copy_configs(tmp_path)
    grid = config / "grids/simol_appendix_d.yaml"
    grid.write_text(grid.read_text().replace("stall: {metric: simol_r_mean, below: 0.01, above: 10}", f"stall: {rule}"))
    with pytest.raises(PlanError, match=rf"simol_appendix_d.yaml: .*{field}"):
        load_plan(config / "tables", SCHEMAS, [], cache_dir=tmp_path)


def test_a_grid_stall_rule_judges_the_page_only_and_changes_no_run(tmp_path):
    config = copy_configs(tmp_path)
    before = simol_cells(config, "paper")
    grid = config / "grids/simol_appendix_d.yaml"
    grid.write_text(grid.read_text().replace("below: 0.01, above: 10}", "below: 0.05}"))
    assert "stall: {metric: simol_r_mean, below: 0.05}" in grid.read_text()
    assert simol_cells(config, "paper") == before


def write_search_run(root: Path, scale: str, run: str, seed: int, values: list[float], diverged_at=None) -> None:
    folder = root / artifacts.run_dir(scale, run, seed)
    folder.mkdir(parents=True)
    pd.DataFrame({"iteration": range(len(values)), "val_mse": values}).to_csv(folder / artifacts.CURVE, index=False)
    (folder / artifacts.TRAIN_SUMMARY).write_text(json.dumps({"diverged_at": diverged_at}))


def test_the_select_command_reads_the_declared_search_runs_and_writes_the_choice(tmp_path, capsys):
    grids = tmp_path / "grids"
    grids.mkdir()
    (grids / "tiny_grid.yaml").write_text(yaml.safe_dump(TINY_GRID))
    base = {"data": {"family": "sinusoid", "shots": 5}, "weighting": {"name": "simol"}, "outer": {"iterations": 10}}
    runs = [(point, run_id(experiment)) for point, experiment in search_experiments(TINY_GRID, base, "quick")]
    finals = [4.0, 3.0, 0.5, 2.0, 1.0, 6.0]  # the third point is best but one of its seeds diverged
    curves, summaries = [], []
    for (_, run), final in zip(runs, finals):
        for seed in (0, 1):
            write_search_run(tmp_path, "quick", run, seed, [9.0, final],
                             diverged_at=300 if final == 0.5 and seed == 1 else None)
            curves.append(str(tmp_path / artifacts.run_file("quick", run, seed, artifacts.CURVE)))
            summaries.append(str(tmp_path / artifacts.run_file("quick", run, seed, artifacts.TRAIN_SUMMARY)))
    out = tmp_path / "selection.json"
    args = ["select", "--grid", str(grids / "tiny_grid.yaml"), "--scale", "quick", "--base", json.dumps(base),
            "--train-summaries", *summaries, "--out", str(out), "--curves"]
    cli.main([*args, *curves])
    record = json.loads(out.read_text())
    assert record["selected"] == {"weighting.lambda_grad": 1.0, "weighting.theta_lr": 0.1}  # mean 1.0
    assert record["points"][2]["excluded"] == "seed 1 diverged at iteration ~300"
    assert record["points"][2]["mean"] == 0.5
    with pytest.raises(SystemExit):
        cli.main([*args, *curves[2:]])
    assert "no curve.csv / train.json of run" in capsys.readouterr().err
