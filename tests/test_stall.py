"""A stalled run (taskbal.divergence, a table's ``stall`` rule): finite and calm, but the quantity that drives
its learning stays near zero for most of training (SIMOL's task weights, README, Measured)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import small_experiment
from taskbal import divergence
from taskbal.config import load_table
from taskbal.data import sinusoid
from taskbal.tables import build_table, to_markdown

RULE = {"metric": "simol_r_mean", "below": 0.01, "above": None, "share": 0.5}


def weights_curve(values: list[float], every: int = 100) -> pd.DataFrame:
    """A curve.csv as the loop writes it: row 0 (before any step) has no step statistics."""
    return pd.DataFrame({"iteration": [0] + [every * (i + 1) for i in range(len(values))],
                         "val_mse": [4.0] * (len(values) + 1), "simol_r_mean": [math.nan] + values})


def test_the_rule_is_absent_unless_a_table_sets_it_and_defaults_its_share():
    assert divergence.stall_rule({}) is None
    assert divergence.stall_rule({"stall": {"metric": "simol_r_mean", "below": 0.01}}) == RULE
    assert divergence.stall_rule({"stall": {"metric": "m", "below": 1, "share": 0.8}})["share"] == 0.8


@pytest.mark.parametrize("section, field", [
    ({"below": 0.01}, "stall.metric"), ({"metric": "", "below": 0.01}, "stall.metric"),
    ({"metric": "m"}, "stall.below"), ({"metric": "m", "below": math.nan}, "stall.below"),
    ({"metric": "m", "below": True}, "stall.below"), ({"metric": "m", "below": 0.1, "share": 1.0}, "stall.share"),
    ({"metric": "m", "below": 0.1, "share": -0.1}, "stall.share"),
    ({"metric": "m", "below": 0.1, "when": 3}, "stall.when"),
    ({"metric": "m", "above": math.inf}, "stall.above"), ({"metric": "m", "above": "10"}, "stall.above"),
    ({"metric": "m", "below": 0.1, "above": 0.1}, "stall.above"),
    ("simol_r_mean", "stall"),
])
def test_a_bad_rule_names_its_field(section, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        divergence.stall_rule({"stall": section})


def test_a_seed_is_stalled_when_the_metric_is_below_the_level_at_more_than_the_share_of_its_rows():
    curves = {
        0: weights_curve([1.0, 0.5, 0.005, 0.2, 1.1, 0.9]),            # one low row of six: a dip, recovered
        1: weights_curve([1.0, 0.03, 0.005, 0.0, 1e-5, 2e-6, 1e-6]),   # five of seven: stalled from 300
        2: weights_curve([1.0, 0.001, 0.001, 2.0]),                    # two of four: not more than half
        3: pd.DataFrame({"iteration": [0, 100], "val_mse": [4.0, 3.0]}),  # no such column: not judged
        4: weights_curve([0.0, 0.0, 0.0]),                             # stalled, but diverged: named as that
    }
    summaries = {4: {"diverged_at": 200}}
    found = divergence.stalled_seeds(curves, summaries, RULE)
    assert sorted(found) == [1]
    assert found[1].share == pytest.approx(5 / 7) and found[1].first == 300
    assert divergence.stalled_line(found) == ("seed 1 stalled: simol_r_mean < 0.01 at 71% of its curve rows "
                                              "(first at iteration 300)")
    looser = divergence.stalled_seeds(curves, {}, {**RULE, "share": 0.4})
    assert looser.keys() == {1, 2, 4}
    assert divergence.stalled_line(looser) == ("seeds 1, 2, 4 stalled: simol_r_mean < 0.01 at 71%, 50%, 100% of "
                                               "their curve rows (first at iteration 300, 200, 100)")
    assert divergence.stalled_seeds(curves, summaries, None) == {}  # a table without the rule judges nothing
    assert divergence.names_diverged_seeds(divergence.stalled_line(looser))  # the page and report show the line


def test_a_seed_blew_up_when_the_metric_is_above_the_upper_level_at_more_than_the_share_of_its_rows():
    rule = divergence.stall_rule({"stall": {"metric": "simol_r_mean", "below": 0.01, "above": 10}})
    curves = {
        0: weights_curve([1.0, 30.0, 45.0, 80.0, 0.5]),      # three of five above 10: blew up from 200
        1: weights_curve([1.0, 12.0, 0.9, 1.1]),             # one of four: a swing, not a blow-up
        2: weights_curve([0.001, 0.002, 0.003, 50.0]),       # three of four low: stalled, not blown up
        3: weights_curve([20.0, 30.0, 40.0, 0.001, 0.001, 1.0]),  # three high and two low of six: neither
    }
    found = divergence.stalled_seeds(curves, {}, rule)
    assert sorted(found) == [0, 2]
    assert found[0].word == "blew up" and found[0].first == 200 and found[0].share == pytest.approx(0.6)
    assert found[2].word == "stalled"
    assert divergence.stalled_line(found) == (
        "seed 2 stalled: simol_r_mean < 0.01 at 75% of its curve rows (first at iteration 100); "
        "seed 0 blew up: simol_r_mean > 10 at 60% of its curve rows (first at iteration 200)")
    # where both shares pass a low rule's share, the larger names the seed
    both = divergence.stalled_seeds({3: curves[3]}, {}, {**rule, "share": 0.3})
    assert both[3].word == "blew up" and both[3].share == pytest.approx(0.5)
    upper_only = divergence.stall_rule({"stall": {"metric": "simol_r_mean", "above": 10}})
    assert sorted(divergence.stalled_seeds(curves, {}, upper_only)) == [0]
    from taskbal.tables import stall_legend

    legend = stall_legend({"stall": {"metric": "simol_r_mean", "below": 0.01, "above": 10}})
    assert "'stalled' a seed whose simol_r_mean (a column of its training curve) is below 0.01" in legend
    assert "'blew up' a seed whose simol_r_mean (a column of its training curve) is above 10" in legend
    assert "'stalled'" not in stall_legend({"stall": {"metric": "simol_r_mean", "above": 10}})


def stall_spec(**extra) -> dict:
    return {"name": "demo", "source": "Demo, Table 1", "title": "A caption.",
            "rows": [{"label": "SIMOL", "paper": {"overall": [0.34, 0.04]}}, {"label": "MAML"}],
            "columns": [{"key": "overall", "label": "overall", "metric": "overall"}], **extra}


def test_the_table_names_a_stalled_seed_and_leaves_it_out_of_the_mean_without_but_not_out_of_its_value():
    errors = {s: np.full(40, value) for s, value in enumerate([1.2, 3.4, 1.1])}
    cells = {("SIMOL", "overall"): errors, ("MAML", "overall"): errors}
    trained = {key: {s: {"divergence": "none", "final_val_mse": float(v[0])} for s, v in errors.items()}
               for key in cells}
    low = weights_curve([1.0, 0.001, 1e-4, 1e-5])
    curves = {("SIMOL", "overall"): {0: weights_curve([1.0, 0.9, 1.1, 0.8]), 1: low, 2: weights_curve([0.5] * 4)},
              ("MAML", "overall"): {s: pd.DataFrame({"iteration": [0, 100], "val_mse": [4.0, 1.0]}) for s in errors}}
    spec = stall_spec(stall={"metric": "simol_r_mean", "below": 0.01})
    frame = build_table(spec, cells, "quick", trained, curves)
    simol, maml = frame.iloc[0], frame.iloc[1]
    assert simol.diverged == "seed 1 stalled: simol_r_mean < 0.01 at 75% of its curve rows (first at iteration 200)"
    assert simol.mean_without_diverged == pytest.approx(np.mean([1.2, 1.1]))
    assert simol.ours_mean == pytest.approx(np.mean([1.2, 3.4, 1.1]))   # the cell's value keeps every seed
    assert maml.diverged == "none" and math.isnan(maml.mean_without_diverged)  # MAML records no weights
    page = to_markdown(frame, spec, "quick", {})
    assert "seed 1 stalled: simol_r_mean < 0.01" in page and f"without: {np.mean([1.2, 1.1]):.3f}" in page
    assert "'stalled' a seed whose simol_r_mean" in page
    from taskbal.report import record_of, table_html

    html = table_html(json.loads(record_of(spec, "quick", {}, cells=frame)))
    assert '<span class="diverged">seed 1 stalled: simol_r_mean &lt; 0.01' in html
    # without the rule nothing is judged, and the legend says nothing of it
    plain = build_table(stall_spec(), cells, "quick", trained, curves)
    assert plain.iloc[0].diverged == "none" and "'stalled'" not in to_markdown(plain, stall_spec(), "quick", {})


def test_a_figure_page_names_the_curves_of_stalled_seeds():
    from taskbal.cli import diverged_curves

    spec = {"columns": [{"key": "5shot", "label": "5-shot"}], "stall": {"metric": "simol_r_mean", "below": 0.01}}
    trained = {("SIMOL", "5shot"): {0: {"divergence": "none"}, 1: {"divergence": "none"}}}
    curves = {("SIMOL", "5shot"): {0: weights_curve([1.0, 1.0]), 1: weights_curve([1.0, 0.0, 0.0])}}
    assert diverged_curves(spec, trained, None, curves) == (
        "SIMOL, 5-shot: seed 1 stalled: simol_r_mean < 0.01 at 67% of its curve rows (first at iteration 200)")


def test_every_stall_rule_names_a_column_its_tables_simol_runs_record(tmp_path):
    """The configs' rule reads the column a real SIMOL training writes (a renamed statistic would otherwise
    silently judge nothing)."""
    from taskbal.runners.meta import train

    experiment = small_experiment({"name": "simol"}, iterations=4)
    split = tmp_path / "split.npz"
    sinusoid.write_splits(split, experiment["data"])
    train(experiment, 0, split, tmp_path / "run", progress=False)
    recorded = set(pd.read_csv(tmp_path / "run" / "curve.csv").columns)
    metrics = {divergence.stall_rule(load_table(name))["metric"]
               for name in ("simol_table1", "simol_table2", "simol_table4", "simol_table5", "simol_figure2",
                            "simol_figure3")}
    assert metrics == {"simol_r_mean"} and metrics <= recorded
    assert json.loads((tmp_path / "run" / "train.json").read_text())["divergence"] == "none"
