"""Claim verdicts of figure pages, and the group metrics of Nash-GBML-style tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taskbal.claims import claims_markdown, findings, judge, paper_numbers
from taskbal.stats import summarise
from taskbal.tables import column_sample

CLAIM = {"text": "A ends lower than B", "value": "distance", "better": "A", "than": "B", "column": "main",
         "lower_is_better": True}


def finals(a: list[float], b: list[float]) -> dict:
    return {("A", "main"): {s: {"distance": v} for s, v in enumerate(a)},
            ("B", "main"): {s: {"distance": v} for s, v in enumerate(b)}}


def test_claim_holds_and_is_significant_when_every_seed_agrees():
    result = judge(CLAIM, finals([0.1, 0.2, 0.15, 0.12], [1.0, 1.1, 0.9, 1.2]), level=0.1)
    assert result["verdict"] == "holds" and result["significant"]
    assert result["better_mean"] == pytest.approx(0.1425)


def test_claim_does_not_hold_when_the_order_is_reversed():
    result = judge(CLAIM, finals([1.0, 1.1], [0.1, 0.2]), level=0.1)
    assert result["verdict"] == "does not hold"
    higher = judge({**CLAIM, "lower_is_better": False}, finals([1.0, 1.1], [0.1, 0.2]), level=0.1)
    assert higher["verdict"] == "holds"


def test_claim_of_rows_not_run_and_missing_key():
    assert judge(CLAIM, {("A", "main"): {0: {"distance": 1.0}}}, level=0.1)["verdict"] == "not run"
    with pytest.raises(ValueError, match="distance.*row 'A'"):
        judge(CLAIM, {("A", "main"): {0: {"other": 1.0}}, ("B", "main"): {0: {"distance": 1.0}}}, level=0.1)


def test_claims_page_labels_the_claim_as_the_paper_s():
    spec = {"name": "toy", "source": "Paper, Figure 1", "claims": [CLAIM], "rows": [{"label": "A"}, {"label": "B"}],
            "columns": [{"key": "main", "label": "main"}]}
    page = claims_markdown(spec, findings(spec, finals([0.1, 0.2], [1.0, 1.1])), "tiny", {"seeds": "0, 1"}, "toy.png")
    assert "claim (the paper's)" in page and "| holds" in page and "toy.png" in page


SWEEP = {"name": "sweep", "source": "Paper, Figure 3", "rows": [{"label": "A"}, {"label": "B"}],
         "columns": [{"key": "b5", "label": "B = 5"}, {"key": "b10", "label": "B = 10"},
                     {"key": "b25", "label": "B = 25"}]}


def sweep_finals(a: dict[str, list[float]], b: dict[str, list[float]]) -> dict:
    out = {("A", column): {s: {"distance": v} for s, v in enumerate(values)} for column, values in a.items()}
    out.update({("B", column): {s: {"distance": v} for s, v in enumerate(values)} for column, values in b.items()})
    return out


def test_a_claim_about_every_column_is_judged_per_column():
    """A sweep's claim ("outperforms in most settings") gets one verdict per swept value; a column that was not
    run at this scale (B = 10 here) is 'not run'."""
    claim = {k: v for k, v in CLAIM.items() if k != "column"}
    spec = dict(SWEEP, claims=[dict(claim, columns="all"), dict(claim, text="only two", columns=["b25", "b5"])])
    found = findings(spec, sweep_finals({"b5": [0.5, 0.6], "b25": [0.1, 0.2]}, {"b5": [0.4, 0.5], "b25": [1.0, 1.1]}))
    verdicts = [(v["column"], v["verdict"]) for v in found["claims"]]
    assert verdicts == [("b5", "does not hold"), ("b10", "not run"), ("b25", "holds"),
                        ("b25", "holds"), ("b5", "does not hold")]
    assert found["claims"][0]["text"] == "A ends lower than B (here: B = 5)"
    assert found["claims"][3]["text"] == "only two (here: B = 25)"
    page = claims_markdown(spec, found, "tiny", {}, "sweep.png")
    assert "(here: B = 10) | distance (b10) |" in page


@pytest.mark.parametrize("change, message", [
    ({"better": "AA"}, "'AA' is not a row of sweep"),
    ({"column": "b7"}, "'b7' is not a column of sweep"),
])
def test_a_claim_naming_a_row_or_column_the_figure_lacks_is_an_error(change, message):
    """A typo would otherwise read as 'not run'."""
    spec = dict(SWEEP, claims=[{**CLAIM, "column": "b5", **change}])
    with pytest.raises(ValueError, match=message):
        findings(spec, sweep_finals({"b5": [0.5]}, {"b5": [0.4]}))


def test_paper_numbers_of_a_figure_get_a_verdict_against_our_mean():
    spec = {"name": "toy", "source": "Paper, Figure 1", "claims": [], "lower_is_better": True,
            "figure": {"style": "x", "paper_value": "distance"},
            "rows": [{"label": "A", "paper": {"main": [0.2, 0]}}, {"label": "B", "paper": {"main": [0.5, 0]}},
                     {"label": "C", "paper": {"main": [1.0, 0]}}]}
    results = {r["row"]: r for r in paper_numbers(spec, finals([0.1, 0.2], [1.0, 1.1]), "distance", True)}
    assert results["A"]["verdict"] == "reached" and results["A"]["ours"] == pytest.approx(0.15)
    assert results["B"]["verdict"] == "not reached" and results["B"]["ratio"] == pytest.approx(2.1)
    assert results["C"]["verdict"] == "not run"
    page = claims_markdown(spec, findings(spec, finals([0.1, 0.2], [1.0, 1.1])), "tiny", {}, "toy.png")
    assert "| A | main | 0.2 | 0.15" in page and "| not reached |" in page


def test_group_metrics_by_hand():
    values = {0: np.array([1.0, 3.0, 10.0, 14.0]), 1: np.array([2.0, 2.0, 4.0, 6.0])}
    groups = {0: np.array([0, 0, 1, 1]), 1: np.array([0, 0, 1, 1])}
    worst = summarise(values, "worst_group", True, groups)
    assert worst.mean == pytest.approx((12.0 + 5.0) / 2)  # group means: seed 0 (2, 12), seed 1 (2, 5)
    spread = summarise(values, "std_group", True, groups)
    assert spread.mean == pytest.approx((5.0 + 1.5) / 2)  # population sd of two means = half their gap
    best_is_highest = summarise(values, "worst_group", False, groups)
    assert best_is_highest.mean == pytest.approx(2.0)
    with pytest.raises(ValueError, match="group"):
        summarise(values, "worst_group", True, None)


def test_column_sample_filters_rows_and_picks_the_value():
    frame = pd.DataFrame({"task": ["mnist", "fashion", "mnist"], "accuracy": [0.9, 0.8, 0.7], "group": [0, 1, 0]})
    values, groups = column_sample({0: frame}, {"key": "c", "value": "accuracy", "where": {"task": "mnist"}})
    np.testing.assert_allclose(values[0], [0.9, 0.7])
    np.testing.assert_array_equal(groups[0], [0, 0])
    with pytest.raises(ValueError, match="'nope' is not a column"):
        column_sample({0: frame}, {"key": "c", "value": "nope"})


def test_a_claim_of_no_difference_holds_within_its_margin():
    similar = {**CLAIM, "relation": "similar", "margin": 0.05}
    assert judge(similar, finals([0.50, 0.52], [0.48, 0.51]), level=0.1)["verdict"] == "holds"
    assert judge(similar, finals([0.50, 0.52], [0.40, 0.41]), level=0.1)["verdict"] == "does not hold"


def test_a_claim_of_a_difference_needs_more_than_its_margin_either_way():
    different = {**CLAIM, "relation": "different", "margin": 0.05}
    assert judge(different, finals([0.50, 0.52], [0.40, 0.41]), level=0.1)["verdict"] == "holds"
    assert judge(different, finals([0.40, 0.41], [0.50, 0.52]), level=0.1)["verdict"] == "holds"
    assert judge(different, finals([0.50, 0.52], [0.48, 0.51]), level=0.1)["verdict"] == "does not hold"


def test_a_claim_may_read_another_value_for_the_other_row():
    """A trend within one run: its value at the end of training against its value at the start."""
    run = {("A", "main"): {s: {"curve_end_w": end, "curve_start_w": start}
                           for s, (end, start) in enumerate([(0.1, 0.3), (0.15, 0.2), (0.12, 0.25)])}}
    trend = {"text": "w decreases", "value": "curve_end_w", "than_value": "curve_start_w", "better": "A", "than": "A",
             "column": "main", "lower_is_better": True}
    result = judge(trend, run, level=0.1)
    assert result["verdict"] == "holds" and result["than_mean"] == pytest.approx(0.25)
    assert judge({**trend, "lower_is_better": False}, run, level=0.1)["verdict"] == "does not hold"
