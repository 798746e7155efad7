"""Tables: best row, significance, verdicts against the paper, ordering; the written files."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from taskbal.figures import STYLES, plot_curves, sweep_points
from taskbal.tables import build_table, write_table

SPEC = {
    "name": "demo_table", "source": "Demo paper, Table 9", "title": "A caption.", "lower_is_better": True,
    "rows": [{"label": "A", "paper": {"overall": [1.0, 0.1], "worst10": [3.0, 0.2]}},
             {"label": "B", "paper": {"overall": [2.0, 0.1], "worst10": [4.0, 0.2]}},
             {"label": "C", "paper": {"overall": [3.0, 0.1], "worst10": None}},
             {"label": "Lit", "run": False, "paper": {"overall": [0.5, 0.1]}}],
    "columns": [{"key": "overall", "label": "overall", "metric": "overall"},
                {"key": "worst10", "label": "worst-10%", "metric": "worst10"}],
}


def cells_with_means(means: dict[str, float], seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, size=(3, 100))  # shared task difficulty, paired across rows
    out = {}
    for row, mean in means.items():
        values = {s: base[s] * mean + rng.normal(0, 0.01, 100) for s in range(3)}
        for column in ("overall", "worst10"):
            out[(row, column)] = values
    return out


def line(frame, row, column):
    return frame[(frame.row == row) & (frame.column == column)].iloc[0]


def test_best_row_star_verdicts_and_ordering():
    frame = build_table(SPEC, cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0}), "quick")
    assert len(frame) == 8 and (frame.scale == "quick").all()
    a = line(frame, "A", "overall")
    assert a.best and a.significant and a.p_value < 0.1
    assert a.verdict == "inside" and line(frame, "C", "overall").verdict == "outside"
    assert line(frame, "C", "worst10").verdict == "no paper value"
    assert line(frame, "Lit", "worst10").verdict == "not run"  # no runs and no paper value
    assert not frame[frame.row != "A"].significant.any() and frame[frame.row != "A"].p_value.isna().all()
    assert (frame[frame.row != "Lit"].n_seeds == 3).all() and line(frame, "A", "worst10").n == 3 * 10
    assert line(frame, "Lit", "overall").verdict == "not run"
    assert a.ordering == "kept" and a.best_agrees and a.kendall_tau == 1.0


def test_no_star_between_identical_rows_and_changed_ordering():
    frame = build_table(SPEC, cells_with_means({"A": 2.0, "B": 2.0000001, "C": 1.0}), "tiny")
    c = line(frame, "C", "overall")
    assert c.best and line(frame, "C", "overall").ordering == "changed" and not c.best_agrees
    # A and B are the same up to noise: among A, B alone neither may carry a significant star.
    two = dict(SPEC, rows=SPEC["rows"][:2])
    frame = build_table(two, {k: v for k, v in cells_with_means({"A": 2.0, "B": 2.0}).items()}, "tiny")
    assert not frame.significant.any()


def test_written_files(tmp_path):
    frame = build_table(SPEC, cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0}), "quick")
    paths = write_table(frame, SPEC, tmp_path / "demo_table", "quick",
                        {"scale_description": "quick: 2,000 iterations", "seeds": "0, 1, 2"})
    assert sorted(p.name for p in paths) == ["demo_table.csv", "demo_table.md", "demo_table.tex"]
    markdown = (tmp_path / "demo_table.md").read_text()
    assert "quick: 2,000 iterations" in markdown and "Demo paper, Table 9" in markdown
    assert "(paper 1.0 ± 0.1, inside; consistent)" in markdown and "**" in markdown
    assert "Each seed's value (seeds 0, 1, 2, in that order)" in markdown
    assert "paper's own published numbers" in markdown
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "demo_table.csv"), frame, check_dtype=False)
    assert "\\textbf" in (tmp_path / "demo_table.tex").read_text()
    assert not list(tmp_path.glob(".*tmp"))


def test_plot_curves_writes_a_png(tmp_path):
    spec = {"source": "Demo, Figure 1", "rows": [{"label": "A"}, {"label": "B"}],
            "columns": [{"key": "5shot", "label": "5-shot"}]}
    iterations = np.arange(0, 101, 10)
    curves = {(row, "5shot"): {s: pd.DataFrame({"iteration": iterations, "train_loss": 1.0, "val_mse": 1.0,
                                                "test_mse": 3.0 / (1 + iterations / 50) + s * 0.1})
                               for s in range(3)} for row in ("A", "B")}
    out = plot_curves(spec, curves, tmp_path / "fig.png", "tiny")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_higher_is_better_picks_the_highest_and_ranks_accordingly():
    spec = dict(SPEC, lower_is_better=True)
    accuracy = dict(SPEC, lower_is_better=False)
    cells = cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0})
    assert line(build_table(spec, cells, "tiny"), "A", "overall").best
    frame = build_table(accuracy, cells, "tiny")
    assert line(frame, "C", "overall").best and line(frame, "C", "overall").significant
    # the paper's 1 < 2 < 3 is read as C best too: the ordering is kept
    assert line(frame, "C", "overall").ordering == "kept"
    # a column that ranks the other way (a spread over tasks in a table of accuracies)
    spread = dict(accuracy, columns=[dict(SPEC["columns"][0], lower_is_better=True), SPEC["columns"][1]])
    frame = build_table(spread, cells, "tiny")
    assert line(frame, "A", "overall").best and line(frame, "C", "worst10").best


def test_pairing_mismatch_names_the_column_and_rows():
    cells = cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0})
    cells[("B", "overall")] = {s: v[:50] for s, v in cells[("B", "overall")].items()}
    try:
        build_table(SPEC, cells, "tiny")
    except ValueError as error:
        assert "'overall'" in str(error) and "'A'" in str(error) and "'B'" in str(error)
    else:
        raise AssertionError("samples of different lengths were paired")


def test_every_paper_value_is_labelled_and_special_characters_are_escaped(tmp_path):
    spec = dict(SPEC, rows=SPEC["rows"] + [{"label": "D_1 & co | x", "paper": {"overall": [9.0, 0.5]}}])
    cells = cells_with_means({"A": 1.0, "B": 2.0, "C": 3.0})
    frame = build_table(spec, cells, "quick")
    write_table(frame, spec, tmp_path / "t", "quick", {"scale_description": "quick: 2,000 iterations"})
    markdown = (tmp_path / "t.md").read_text()
    main_table = markdown.split("Each seed's value")[0]
    table_lines = [l for l in main_table.splitlines() if l.startswith("| ") and not l.startswith("| method")]
    assert len(table_lines) == 5
    for row_line in table_lines:
        for cell in row_line.strip("| ").split(" | ")[1:]:
            assert "(paper " in cell or "(paper: n/a)" in cell, cell
    assert "**\\*" in markdown  # A's star, outside the bold and escaped
    assert "(paper 9.0 ± 0.5)" in markdown and "D\\_1 & co \\| x" in markdown
    tex = (tmp_path / "t.tex").read_text()
    assert "D\\_1 \\& co | x" in tex and "worst-10\\%" in tex and "quick: 2,000 iterations" in tex
    assert "\\textbf{" in tex and "$^{*}$" in tex and "\\toprule" in tex
    reread = pd.read_csv(tmp_path / "t.csv")
    assert set(reread.verdict) == set(frame.verdict)  # verdicts survive a CSV round trip


def test_plot_curves_aligns_seeds_with_different_lengths(tmp_path):
    spec = {"source": "Demo, Figure 1", "rows": [{"label": "A"}], "log_y": True,
            "columns": [{"key": "5shot", "label": "5-shot"}, {"key": "2shot", "label": "2-shot"}]}
    short, long = np.arange(0, 51, 10), np.arange(0, 101, 10)
    curves = {("A", "5shot"): {0: pd.DataFrame({"iteration": short, "test_mse": 1.0 / (1 + short)}),
                               1: pd.DataFrame({"iteration": long, "test_mse": 2.0 / (1 + long)})}}
    out = plot_curves(spec, curves, tmp_path / "sub" / "fig.png", "tiny", title_suffix=" (2 seeds)")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["fig.png"]


def test_paper_values_keep_the_paper_s_precision(tmp_path):
    # YAML reads the paper's "1.70" as 1.7; the table must still print 1.70, as the paper does.
    spec = dict(SPEC, rows=[{"label": "A", "paper": {"overall": [1.70, 0.11]}},
                            {"label": "B", "paper": {"overall": [0.43, 0.10]}}], columns=SPEC["columns"][:1])
    frame = build_table(spec, cells_with_means({"A": 1.0, "B": 2.0}), "tiny")
    write_table(frame, spec, tmp_path / "t", "tiny", {})
    markdown = (tmp_path / "t.md").read_text()
    assert "(paper 1.70 ± 0.11," in markdown and "(paper 0.43 ± 0.10," in markdown
    assert "(1.70 $\\pm$ 0.11)" in (tmp_path / "t.tex").read_text()


def test_seed_level_columns_and_verdicts_follow_the_seeds():
    """Each seed's value in the CSV; the seed interval decides 'consistent', not the pooled-task CI."""
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(3)
    # Row A: seeds far apart (training runs differ), tasks tight within each seed.
    spread = {s: 1.0 + 0.3 * (s - 1) + rng.normal(0, 0.01, 100) for s in range(3)}
    cells = {("A", "overall"): spread, ("B", "overall"): {s: v + 1.0 + rng.normal(0, 0.05, 100)
                                                          for s, v in spread.items()}}
    spec = dict(SPEC, rows=[{"label": "A", "paper": {"overall": [1.25, 0.02]}},
                            {"label": "B", "paper": {"overall": [2.0, 0.1]}}], columns=SPEC["columns"][:1])
    frame = build_table(spec, cells, "quick")
    a = line(frame, "A", "overall")
    per_seed = [spread[s].mean() for s in range(3)]
    assert json.loads(a.seed_values) == per_seed and json.loads(a.seeds) == [0, 1, 2]
    low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(per_seed), scale=scipy_stats.sem(per_seed))
    assert a.seed_ci == pytest.approx((high - low) / 2)
    assert a.ours_ci < 0.1 < a.seed_ci  # tasks cannot see the spread between runs
    assert a.verdict == "outside" and a.seed_verdict == "consistent"
    # The star follows the seed-paired test of A against B.
    b_per_seed = json.loads(line(frame, "B", "overall").seed_values)
    assert a.best and a.p_value == pytest.approx(scipy_stats.ttest_rel(per_seed, b_per_seed).pvalue)
    assert a.significant == (a.p_value < 0.1) and not np.isnan(a.p_value_tasks)
    one = build_table(spec, {k: {0: v[0]} for k, v in cells.items()}, "quick")
    assert (one.seed_verdict == "one seed").all() and one.p_value.isna().all()


def test_an_interval_wider_than_the_values_it_compares_is_too_wide_not_consistent():
    """One exploding seed makes the seed interval overlap any value of the paper's size: 'too wide', while an
    interval that wide that still misses the paper's value stays 'inconsistent'."""
    from taskbal.tables import seed_verdict

    rng = np.random.default_rng(5)
    tight = {s: 1.0 + 0.05 * s + rng.normal(0, 0.01, 50) for s in range(5)}
    exploded = {**tight, 4: tight[4] * 1e4}
    spec = dict(SPEC, rows=[{"label": "A", "paper": {"overall": [1.0, 0.05]}},
                            {"label": "B", "paper": {"overall": [1.0, 0.05]}}], columns=SPEC["columns"][:1])
    frame = build_table(spec, {("A", "overall"): tight, ("B", "overall"): exploded}, "quick")
    a, b = line(frame, "A", "overall"), line(frame, "B", "overall")
    assert a.seed_verdict == "consistent" and a.seed_ci < 0.1
    assert b.seed_ci > b.ours_mean > 1000 and b.seed_verdict == "too wide"
    assert seed_verdict(10.0, 11.0, [-12.0, 0.5]) == "inconsistent"  # misses the paper's value all the same
    assert seed_verdict(10.0, 11.0, [-0.5, 0.5]) == "too wide"
    assert seed_verdict(10.0, 9.0, [2.0, 0.5]) == "consistent"  # wide, but narrower than our mean


def test_a_seed_whose_error_overflowed_makes_the_cell_inconsistent_not_a_one_seed_cell():
    """Five seeds, one of them infinite (Meta-SGD's test MSE overflowing float32): the mean is infinite,
    there is no interval over seeds, and the cell is judged, not mistaken for a single-seed cell."""
    from taskbal.tables import seed_verdict

    rng = np.random.default_rng(6)
    finite = {s: 1.0 + rng.normal(0, 0.01, 50) for s in range(5)}
    overflowed = {**finite, 4: np.full(50, np.inf)}
    spec = dict(SPEC, rows=[{"label": "A", "paper": {"overall": [1.0, 0.05]}}], columns=SPEC["columns"][:1])
    cell = line(build_table(spec, {("A", "overall"): overflowed}, "quick"), "A", "overall")
    assert np.isinf(cell.ours_mean) and np.isnan(cell.seed_ci) and cell.n_seeds == 5
    assert cell.seed_verdict == "inconsistent"
    assert seed_verdict(float("nan"), float("nan"), [1.0, 0.05]) == "inconsistent"
    assert seed_verdict(1.0, float("nan"), [1.0, 0.05]) == "one seed"


def test_a_second_reading_is_judged_against_the_paper_value_of_its_paper_column():
    spec = dict(SPEC, rows=SPEC["rows"][:2],
                columns=[SPEC["columns"][0], {"key": "overall_b", "label": "overall, reading b",
                                              "metric": "overall", "paper_column": "overall"}])
    cells = cells_with_means({"A": 1.0, "B": 2.0})
    cells.update({("A", "overall_b"): cells[("B", "overall")], ("B", "overall_b"): cells[("A", "overall")]})
    frame = build_table(spec, cells, "quick")
    b_reading = line(frame, "A", "overall_b")
    assert (b_reading.paper_mean, b_reading.paper_ci) == (1.0, 0.1) and b_reading.verdict == "outside"
    assert line(frame, "A", "overall").verdict == "inside"
    # Each reading has its own ordering verdict: reading b swaps the rows.
    assert line(frame, "A", "overall").ordering == "kept" and b_reading.ordering == "changed"


SWEEP_SPEC = {"source": "Demo, Figure 3", "rows": [{"label": "A"}, {"label": "B"}],
              "figure": {"style": "sweep", "x_label": "B", "panels": [{"curve": "test_mse", "label": "average"},
                                                                       {"curve": "worst", "label": "worst"}]},
              "columns": [{"key": "b25", "label": "B = 25", "x": 25}, {"key": "b5", "label": "B = 5", "x": 5},
                          {"key": "b10", "label": "B = 10", "x": 10}]}


def sweep_curves(rows=("A", "B"), columns=("b5", "b25"), seeds=(0, 1, 2)):
    """Curves whose last point is 1 + x/100 + seed (and whose earlier points must be ignored)."""
    x = {"b5": 5, "b10": 10, "b25": 25}
    return {(row, column): {s: pd.DataFrame({"iteration": [0, 10, 20], "test_mse": [9.0, 8.0, 1 + x[column] / 100 + s],
                                             "worst": [9.0, 8.0, 2 + s]}) for s in seeds}
            for row in rows for column in columns}


def test_sweep_draws_the_end_of_training_against_each_column_s_x(tmp_path):
    """Each point: the mean over seeds of the curve's last value, at the column's x, in x order; a column not run
    at this scale (B = 10) has no point; the bars are the Student-t 95 % CI over seeds."""
    from scipy import stats as scipy_stats

    x, mean, ci = sweep_points(SWEEP_SPEC, "A", {"curve": "test_mse"}, sweep_curves())
    assert list(x) == [5, 25] and mean == pytest.approx([2.05, 2.25])
    assert ci[0] == pytest.approx(scipy_stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))
    out = STYLES["sweep"](SWEEP_SPEC, sweep_curves(), tmp_path / "sweep.png", "tiny")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600
    one_seed = sweep_points(SWEEP_SPEC, "B", {"curve": "worst"}, sweep_curves(seeds=(0,)))
    assert list(one_seed[1]) == [2.0, 2.0] and np.isnan(one_seed[2]).all()  # no interval from one seed


@pytest.mark.parametrize("change, message", [
    (lambda spec: spec["columns"][1].pop("x"), "column 'b5' has no x"),
    (lambda spec: spec["figure"]["panels"][1].update(curve="test_mse_worst_group"),
     "row 'A', column 'b25', seed 0: its curve.csv has no column 'test_mse_worst_group'"),
    (lambda spec: spec["figure"].pop("panels"), "figure.panels must list"),
])
def test_sweep_errors_name_what_is_missing(tmp_path, change, message):
    import copy

    spec = copy.deepcopy(SWEEP_SPEC)
    change(spec)
    with pytest.raises(ValueError, match=message):
        STYLES["sweep"](spec, sweep_curves(), tmp_path / "sweep.png", "tiny")
    assert not (tmp_path / "sweep.png").exists()


def test_timing_columns_read_train_json_divide_by_a_row_and_extrapolate_rows():
    """A column with ``source: train`` reads one number per run from train.json; ``relative_to`` divides
    each seed's value by the reference row's value of that seed; a row with ``extrapolate`` is another
    row's values times a factor, with its reason on the page instead of a run."""
    spec = {"name": "timing", "source": "Demo paper, Table 4", "title": "Seconds.", "lower_is_better": True,
            "rows": [{"label": "MAML", "paper": {"seconds": [2.0, 0.0], "ratio": [1.0, 0.0]}},
                     {"label": "SIMOL", "paper": {"seconds": [2.3, 0.0], "ratio": [1.15, 0.0]}},
                     {"label": "batch MGDA", "extrapolate": {"row": "MAML", "factor": 1000.0, "why": "x 1000 tasks"},
                      "paper": {"seconds": None, "ratio": None}}],
            "columns": [{"key": "seconds", "label": "s", "source": "train", "value": "step_seconds_median"},
                        {"key": "ratio", "label": "x MAML", "source": "train", "value": "step_seconds_median",
                         "relative_to": "MAML"}]}
    timing = {"MAML": {0: 2.0, 1: 4.0}, "SIMOL": {0: 3.0, 1: 4.4}}
    trained = {(row, column): {seed: {"step_seconds_median": value} for seed, value in per_seed.items()}
               for row, per_seed in timing.items() for column in ("seconds", "ratio")}
    frame = build_table(spec, {}, "tiny", trained)
    assert line(frame, "MAML", "seconds").ours_mean == pytest.approx(3.0)
    assert line(frame, "SIMOL", "ratio").ours_mean == pytest.approx((1.5 + 1.1) / 2)
    assert json.loads(line(frame, "SIMOL", "ratio").seed_values) == pytest.approx([1.5, 1.1])
    assert line(frame, "batch MGDA", "seconds").ours_mean == pytest.approx(3000.0)
    assert line(frame, "batch MGDA", "ratio").ours_mean == pytest.approx(1000.0)
    assert line(frame, "MAML", "seconds").best
    del trained[("SIMOL", "seconds")][1]["step_seconds_median"]
    with pytest.raises(ValueError, match="'step_seconds_median' is not a number of train.json of seeds \\[1\\]"):
        build_table(spec, {}, "tiny", trained)


def test_exponential_moving_average_weights_the_previous_value_by_the_smoothing_factor():
    from taskbal.figures import exponential_moving_average

    values = np.array([1.0, 3.0, 2.0, 6.0])
    expected = [1.0]
    for value in values[1:]:
        expected.append(0.1 * expected[-1] + 0.9 * value)
    assert exponential_moving_average(values, 0.1) == pytest.approx(expected)
    assert exponential_moving_average(values, 0.0) == pytest.approx(values)
    # linear: smoothing the mean over seeds equals the mean of the smoothed seeds
    seeds = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, 2.0]])
    assert exponential_moving_average(seeds.mean(0), 0.6) == pytest.approx(
        np.mean([exponential_moving_average(s, 0.6) for s in seeds], axis=0))
