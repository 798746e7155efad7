"""Divergence (taskbal.divergence): the rule on synthetic curves, its checks, train.json and MLflow's
view of it through the one loop, and the table's marking of diverged seeds."""
from __future__ import annotations

import heapq
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import small_experiment
from taskbal import divergence
from taskbal.config import load_table, table_cells
from taskbal.data import sinusoid
from taskbal.loop import fit
from taskbal.tables import build_table, to_markdown

RULE = divergence.rule_of({})


def curve(losses: list[float], every: int = 100) -> list[dict]:
    """Curve rows as the loop records them: row 0 has no loss yet."""
    return [{"iteration": 0, "val_mse": 4.0}] + [{"iteration": every * (i + 1), "train_loss": loss, "val_mse": loss}
                                                 for i, loss in enumerate(losses)]


def test_a_jump_far_above_the_running_minimum_that_stays_is_divergence_where_it_starts():
    # Falls to 1.4, then climbs back and stays: 2.9 at iteration 700 is more than twice the running
    # minimum, and no later value comes back within 1.25 × 1.4.
    rows = curve([5.0, 3.0, 2.0, 1.5, 1.4, 2.1, 2.9, 3.5, 2.0])
    verdict = divergence.detect(rows, RULE)
    assert verdict.diverged and verdict.iteration == 700
    assert verdict.description == ("diverged at iteration 700: train_loss 2.9 > 2 × its running minimum 1.4, "
                                   "and never back within 1.25 × it")
    assert verdict.summary() == {"divergence": verdict.description, "diverged_at": 700}
    # A larger factor tolerates it; `after` skips jumps before that iteration; a laxer recovery
    # threshold counts the last value as a recovery.
    assert not divergence.detect(rows, {**RULE, "factor": 3.0}).diverged
    assert divergence.detect(rows, {**RULE, "after": 800}).iteration == 800
    assert not divergence.detect(rows, {**RULE, "recovery": 1.5}).diverged
    # The row order of the input does not matter.
    assert divergence.detect(rows[::-1], RULE).iteration == 700


def test_a_spike_that_a_later_row_undoes_is_named_but_not_divergence():
    verdict = divergence.detect(curve([5.0, 2.0, 1.4, 30.0, 4.0, 1.6, 1.2, 9.0, 1.1]), RULE)
    assert verdict.checked and not verdict.diverged
    assert verdict.description == "none; train_loss spikes at iteration 400 (back by 600), 800 (back by 900)"
    assert verdict.summary() == {"divergence": verdict.description}
    # A finite jump at the last point cannot be told from divergence: named, not judged.
    last = divergence.detect(curve([5.0, 2.0, 1.4, 1.3, 9.0]), RULE)
    assert not last.diverged
    assert last.description == "none; train_loss spikes at iteration 500 (the last curve point: not judged)"


def test_a_falling_or_noisy_loss_is_not_divergence():
    rng = np.random.default_rng(0)
    noisy = list(np.exp(-np.linspace(0, 3, 50)) * 5 + 0.5 + rng.uniform(0, 0.3, 50))
    verdict = divergence.detect(curve(noisy), RULE)
    assert verdict.checked and not verdict.diverged and verdict.summary() == {"divergence": "none"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_is_divergence(bad):
    verdict = divergence.detect(curve([3.0, 2.0, bad, 1.0]), RULE)
    assert verdict.iteration == 300 and f"train_loss is {bad}" in verdict.description


def test_a_run_blown_up_before_its_second_row_is_judged_against_its_initial_validation_error():
    # Nash Table 6's medium Meta-SGD, seed 1: validation MSE 6.26 at initialisation, then 65,385 at
    # iteration 2,000 and never back. Row 0 is the level it climbed from (the training loss has none there).
    rows = [{"iteration": 0, "val_mse": 6.26}] + [{"iteration": i, "train_loss": 1e4, "val_mse": v} for i, v in
                                                   ((2000, 65385.4), (4000, 112330.0), (6000, 108506.0),
                                                    (8000, 33543.4), (10000, 33150.5))]
    verdict = divergence.detect(rows, {**RULE, "metric": "val_mse"})
    assert verdict.diverged and verdict.iteration == 2000
    assert "val_mse 6.539e+04 > 2 × its running minimum 6.26" in verdict.description
    # Without row 0 the blown-up value would be the running minimum and the run would pass.
    assert not divergence.detect(rows[1:], {**RULE, "metric": "val_mse"}).diverged
    # The training loss is still judged from the first step's row on; a missing row-0 value is skipped.
    assert not divergence.detect([{"iteration": 0, "train_loss": math.nan}, *rows[1:]], RULE).diverged


def test_a_curve_without_the_metric_is_not_checked():
    verdict = divergence.detect([{"iteration": 0}, {"iteration": 5, "loss_a": 1.0}], RULE)
    assert not verdict.checked and not verdict.diverged
    assert verdict.summary() == {"divergence": "not checked: the curve has no train_loss"}


@pytest.mark.parametrize("table", ["nash_table2", "nash_table5", "nash_table6", "nash_figure2", "nash_figure6"])
def test_the_nash_sinusoid_runs_are_judged_on_their_validation_tasks_not_their_skewed_training_loss(table):
    # TR-MAML's shape at medium scale: its mean training loss climbs as p moves to the high-amplitude bins
    # while the validation MSE (tasks drawn like the test tasks) falls. Only the training-loss rule calls it
    # divergence; a blow-up of the validation MSE is still caught.
    rows = [{"iteration": 0, "val_mse": 4.37}] + [
        {"iteration": 2000 * (i + 1), "train_loss": train, "val_mse": val}
        for i, (train, val) in enumerate([(0.72, 2.97), (0.99, 2.67), (1.51, 2.41), (2.13, 2.00), (2.33, 1.47)])]
    assert divergence.detect(rows, RULE).diverged
    for cell in table_cells(load_table(table), "medium"):
        rule = divergence.rule_of(cell.experiment)
        assert rule["metric"] == "val_mse", cell
        assert not divergence.detect(rows, rule).diverged
        blown_up = rows[:3] + [{**row, "val_mse": row["val_mse"] * 1e6} for row in rows[3:]]
        assert divergence.detect(blown_up, rule).iteration == 6000


@pytest.mark.parametrize("section, field", [
    ({"factor": 1.0}, "divergence.factor"), ({"factor": math.inf}, "divergence.factor"),
    ({"factor": True}, "divergence.factor"), ({"after": -1}, "divergence.after"),
    ({"after": 1.5}, "divergence.after"), ({"metric": ""}, "divergence.metric"),
    ({"recovery": 0.9}, "divergence.recovery"), ({"factor": 1.5, "recovery": 2}, "divergence.recovery"),
    ({"factr": 3}, "divergence.factr"), ("tight", "divergence")])
def test_a_bad_rule_names_its_field_before_anything_runs(section, field):
    from taskbal.runners import check_experiment

    experiment = small_experiment()
    experiment["divergence"] = section
    with pytest.raises(ValueError, match=f"^{field}[: ]"):
        check_experiment(experiment)


class Exploding:
    """A trainable whose loss falls, then blows up after ``blow_up`` steps."""

    iterations, curve_every = 40, 5

    def __init__(self, blow_up: int | None):
        self.blow_up, self.loss = blow_up, 4.0

    def step(self, iteration):
        self.loss = self.loss * 0.9 if self.blow_up is None or iteration < self.blow_up else self.loss * 1.5
        return {"train_loss": self.loss}

    def curve_row(self, iteration, window):
        row = {"iteration": iteration}
        if window:
            row["train_loss"] = float(np.mean([w["train_loss"] for w in window]))
        return row

    def state_dict(self):
        return {"loss": self.loss}

    def load_state_dict(self, state):
        self.loss = state["loss"]

    def final_state(self):
        return {}

    def summary(self, rows):
        return {"final_train_loss": rows[-1]["train_loss"]}


def test_the_loop_records_the_verdict_in_train_json(tmp_path):
    fit(lambda: Exploding(blow_up=20), {"demo": 1}, 0, tmp_path / "spike", progress=False)
    summary = json.loads((tmp_path / "spike" / "train.json").read_text())
    # The row after iteration 25 averages steps 21-25 (0.73 … 3.7): about 3 × the previous row's 0.6.
    assert summary["diverged_at"] == 25 and summary["divergence"].startswith("diverged at iteration 25:")
    fit(lambda: Exploding(blow_up=None), {"demo": 1}, 0, tmp_path / "calm", progress=False)
    calm = json.loads((tmp_path / "calm" / "train.json").read_text())
    assert calm["divergence"] == "none" and "diverged_at" not in calm


def test_a_real_meta_learning_run_with_a_huge_inner_step_is_marked_diverged(tmp_path):
    """MAML with plain SGD inner steps of lr 30 overshoots: its loss leaves the finite numbers."""
    from taskbal.runners.meta import train

    experiment = small_experiment(iterations=8)
    experiment["learner"]["inner_lr"] = 30.0
    experiment["evaluation"]["curve_every"] = 2
    split = tmp_path / "split.npz"
    sinusoid.write_splits(split, experiment["data"])
    summary = train(experiment, 0, split, tmp_path / "run", progress=False)
    assert summary["diverged_at"] == 2, summary["divergence"]
    assert summary["nonfinite_at"] == 2  # its meta-parameters too: the run ends at that row
    assert list(pd.read_csv(tmp_path / "run" / "curve.csv")["iteration"]) == [0, 2]
    written = json.loads((tmp_path / "run" / "train.json").read_text())
    assert written["divergence"] == summary["divergence"]
    # The train job hands this summary to its MLflow run: the verdict a tag, the iteration a metric.
    import mlflow

    from taskbal.tracking import LiveRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    live = LiveRun(experiment="demo", run_name="train demo seed0", params=experiment, tags={}, uri=uri)
    live.finish(written)
    logged = mlflow.MlflowClient(tracking_uri=uri).get_run(live.run_id).data
    assert logged.tags["divergence"] == summary["divergence"] and logged.metrics["diverged_at"] == 2


def test_a_run_stopped_at_non_finite_meta_parameters_loses_nothing_that_training_on_would_give(tmp_path,
                                                                                                 monkeypatch):
    """The reference: the same run made to train on to the end. Its rows up to the stop are the stopped run's,
    every later one is NaN or infinite in every measured column, and its final parameters are still not
    finite; a healthy run is never stopped."""
    from taskbal.runners.meta import train
    from taskbal.train import Run

    experiment = small_experiment(iterations=8)
    experiment["learner"]["inner_lr"] = 30.0
    experiment["evaluation"]["curve_every"] = 2
    split = tmp_path / "split.npz"
    sinusoid.write_splits(split, experiment["data"])
    train(experiment, 0, split, tmp_path / "stopped", progress=False)
    stopped = pd.read_csv(tmp_path / "stopped" / "curve.csv")
    monkeypatch.setattr(Run, "stopped", property(lambda self: False))
    on = train(experiment, 0, split, tmp_path / "on", progress=False)
    full = pd.read_csv(tmp_path / "on" / "curve.csv")
    assert len(full) == 5 and on["nonfinite_at"] == 2
    pd.testing.assert_frame_equal(full.iloc[:len(stopped)], stopped)
    later = full.iloc[len(stopped):].drop(columns="iteration")
    assert not np.isfinite(later.to_numpy(float)).any()
    def tensors(state):
        return [t for v in state.values() for t in (tensors(v) if isinstance(v, dict) else [v]) if torch.is_tensor(t)]

    learner = tensors(torch.load(tmp_path / "on" / "final.pt", weights_only=False)["learner"])
    assert learner and not all(torch.isfinite(t).all() for t in learner)
    monkeypatch.undo()
    calm = small_experiment(iterations=8)
    calm["evaluation"]["curve_every"] = 2
    summary = train(calm, 0, split, tmp_path / "calm", progress=False)
    assert "nonfinite_at" not in summary and len(pd.read_csv(tmp_path / "calm" / "curve.csv")) == 5


def test_the_table_names_the_diverged_seeds_and_their_mean_without_them():
    rng = np.random.default_rng(1)
    values = {s: 1.0 + s + rng.normal(0, 0.01, 50) for s in range(3)}  # seed 2 has the largest error
    spec = {"name": "demo", "source": "Demo, Table 1", "title": "A caption.",
            "rows": [{"label": "A", "paper": {"overall": [1.0, 0.1]}}],
            "columns": [{"key": "overall", "label": "overall", "metric": "overall"}]}
    trained = {("A", "overall"): {0: {"divergence": "none"}, 1: {"divergence": "none"},
                                  2: {"divergence": "diverged at iteration 2000: …", "diverged_at": 2000}}}
    line = build_table(spec, {("A", "overall"): values}, "quick", trained).iloc[0]
    assert line.diverged == "seed 2 diverged at iteration ~2,000"
    assert line.mean_without_diverged == pytest.approx(np.mean([values[0].mean(), values[1].mean()]))
    assert line.ours_mean == pytest.approx(np.mean([v.mean() for v in values.values()]))  # every seed
    page = to_markdown(build_table(spec, {("A", "overall"): values}, "quick", trained), spec, "quick", {})
    assert f"seed 2 diverged at iteration ~2,000; without: {line.mean_without_diverged:.3f}" in page
    calm = {("A", "overall"): {s: {"divergence": "none"} for s in range(3)}}
    line = build_table(spec, {("A", "overall"): values}, "quick", calm).iloc[0]
    assert line.diverged == "none" and math.isnan(line.mean_without_diverged)
    unknown = build_table(spec, {("A", "overall"): values}, "quick", None).iloc[0]  # no train.json verdicts
    assert unknown.diverged == "not checked" and math.isnan(unknown.mean_without_diverged)


def test_the_report_shows_the_diverged_seeds_in_their_cell():
    from taskbal.report import record_of, table_html

    values = {s: np.full(20, 1.0 + s) for s in range(3)}
    spec = {"name": "demo", "source": "Demo, Table 1", "title": "A caption.",
            "rows": [{"label": "A", "paper": {"overall": [1.0, 0.1]}}, {"label": "B"}],
            "columns": [{"key": "overall", "label": "overall", "metric": "overall"}]}
    trained = {("A", "overall"): {0: {}, 1: {"diverged_at": 300}, 2: {}}}
    frame = build_table(spec, {("A", "overall"): values, ("B", "overall"): values}, "quick", trained)
    page = table_html(json.loads(record_of(spec, "quick", {}, cells=frame)))
    assert page.count('class="diverged"') == 1
    assert '<span class="diverged">seed 1 diverged at iteration ~300; without: 2.000</span>' in page


def test_a_figure_page_names_the_curves_of_diverged_seeds():
    from taskbal.cli import diverged_curves

    spec = {"columns": [{"key": "5shot", "label": "5-shot"}, {"key": "5shot_sgd", "label": "5-shot, SGD inner steps"}]}
    trained = {("MAML", "5shot"): {0: {"divergence": "none"}},
               ("MAML", "5shot_sgd"): {0: {"divergence": "none"}, 2: {"diverged_at": 1600}}}
    assert diverged_curves(spec, trained) == "MAML, 5-shot, SGD inner steps: seed 2 diverged at iteration ~1,600"
    assert diverged_curves(spec, {("MAML", "5shot"): {0: {}}}) == ""
    # with the runs' eval.csv: a seed far above its validation MSE on the test tasks is named too
    import pandas as pd

    trained[("MAML", "5shot")][1] = {"divergence": "none", "final_val_mse": 3.0}
    per_task = {("MAML", "5shot"): {0: pd.DataFrame({"mse": [0.5, 0.5]}), 1: pd.DataFrame({"mse": [6e4, 6e4]})},
                ("MAML", "5shot_sgd"): {0: pd.DataFrame({"mse": [0.5]}), 2: pd.DataFrame({"mse": [math.inf]})}}
    assert diverged_curves(spec, trained, per_task) == (
        "MAML, 5-shot: seed 1 exploded on the test tasks (mean test MSE 6e+04, validation 3); "
        "MAML, 5-shot, SGD inner steps: seed 2 diverged at iteration ~1,600")


def few_tasks(mean: float) -> np.ndarray:
    """Test errors of 40 tasks (too few for the share of the worst 1% to be judged) with the given mean."""
    return np.full(40, mean)


def test_a_seed_whose_mean_test_error_is_far_above_its_validation_error_exploded_on_the_test_tasks():
    summaries = {0: {"final_val_mse": 1.0}, 1: {"final_val_mse": 3.35}, 2: {"final_val_mse": 2.0},
                 3: {}, 4: {"final_val_mse": math.nan}}
    errors = {0: few_tasks(1.4), 1: few_tasks(60600.0), 2: few_tasks(math.inf), 3: few_tasks(1e9), 4: few_tasks(1e9)}
    # 3 has no validation MSE (another kind of run), 4 a non-finite one (the training rule's case): not judged
    found = divergence.exploded_seeds(errors, summaries)
    assert {seed: (e.test, e.validation) for seed, e in found.items()} == {1: (60600.0, 3.35), 2: (math.inf, 2.0)}
    assert all(math.isnan(e.share) for e in found.values())
    assert divergence.exploded_seeds({0: few_tasks(10.0)}, {0: {"final_val_mse": 1.0}}) == {}  # at the factor
    diverged = {0: {"final_val_mse": 1.0, "diverged_at": 300}}  # named as diverged, not as exploded
    assert divergence.exploded_seeds({0: few_tasks(1e9)}, diverged) == {}
    assert list(divergence.exploded_seeds({0: few_tasks(10.0)}, {0: {"final_val_mse": 1.0}}, factor=5)) == [0]
    assert divergence.exploded_line({1: found[1]}) == \
        "seed 1 exploded on the test tasks (mean test MSE 6.06e+04, validation 3.35)"
    for bad in (1, 0.5, math.inf, "10", True):
        with pytest.raises(ValueError, match="explosion_factor"):
            divergence.explosion_factor({"explosion_factor": bad})


def test_the_share_of_the_worst_tasks_matches_a_sum_of_the_largest_errors():
    rng = np.random.default_rng(0)
    for n in (100, 101, 250, 5000):
        errors = rng.lognormal(0.0, 2.0, n)
        largest = heapq.nlargest(math.ceil(n / 100), errors.tolist())
        assert divergence.worst_share(errors) == pytest.approx(sum(largest) / math.fsum(errors), rel=1e-12)
    assert math.isnan(divergence.worst_share(np.ones(99)))  # too few tasks to judge
    assert math.isnan(divergence.worst_share(np.r_[np.ones(199), math.inf]))
    assert math.isnan(divergence.worst_share(np.zeros(200)))


def test_a_seed_whose_mean_a_few_test_tasks_dominate_exploded_on_the_test_tasks_below_the_factor():
    """A partial explosion: 2 of 200 tasks at 150, the rest at 1, so the mean (2.49) is under 10 × the
    validation MSE but the worst 1% carry 60% of the error; a heavy tail that carries 29% is not named."""
    validation = {0: {"final_val_mse": 1.0}}
    partial = np.r_[np.full(198, 1.0), 150.0, 150.0]
    heavy = np.r_[np.full(198, 1.0), 40.0, 40.0]
    found = divergence.exploded_seeds({0: partial}, validation)
    assert list(found) == [0] and found[0].share == pytest.approx(300 / 498)
    assert divergence.exploded_line(found) == ("seed 0 exploded on the test tasks (mean test MSE 2.49, "
                                               "validation 1; its worst 1% of tasks carry 60% of it)")
    assert divergence.exploded_seeds({0: heavy}, validation) == {}
    assert divergence.exploded_seeds({0: partial[-99:]}, validation) == {}  # 99 tasks: the share is not judged
    assert divergence.exploded_seeds({0: partial}, validation, share=0.7) == {}  # a table's own share
    assert divergence.explosion_share({"explosion_share": 0.7}) == 0.7
    # in a table: named with its share, left out of the mean without; the page gives the rule
    import pandas as pd

    frames = {s: pd.DataFrame({"mse": np.full(200, 1.0 + 0.1 * s)}) for s in range(3)}
    frames[1] = pd.DataFrame({"mse": partial})
    trained = {("A", "overall"): {s: {"divergence": "none", "final_val_mse": 1.0} for s in range(3)}}
    frame = build_table(exploding_table_spec(), {("A", "overall"): frames}, "quick", trained)
    assert frame.iloc[0].diverged == divergence.exploded_line({1: found[0]})
    assert frame.iloc[0].mean_without_diverged == pytest.approx(np.mean([1.0, 1.2]))
    page = to_markdown(frame, exploding_table_spec(), "quick", {})
    assert "worst 1% of test tasks carry more than 50% of its test MSE" in page
    for bad in (0.01, 0, 1.5, math.nan, "0.5", True):
        with pytest.raises(ValueError, match="explosion_share"):
            divergence.explosion_share({"explosion_share": bad})


def exploding_table_spec(**extra) -> dict:
    return {"name": "demo", "source": "Demo, Table 1", "title": "A caption.", **extra,
            "rows": [{"label": "A", "paper": {"overall": [1.0, 0.1]}}],
            "columns": [{"key": "overall", "label": "overall", "metric": "overall"}]}


def test_the_table_names_a_seed_that_exploded_on_the_test_tasks_and_leaves_it_out_of_the_mean_without():
    import pandas as pd

    frames = {s: pd.DataFrame({"mse": np.full(40, 1.0 + 0.1 * s)}) for s in range(3)}
    frames[1] = pd.DataFrame({"mse": np.r_[np.full(39, 1.0), 1e6]})  # one test task blows up: mean 2.5·10⁴
    trained = {("A", "overall"): {s: {"divergence": "none", "final_val_mse": 1.0} for s in range(3)}}
    line = build_table(exploding_table_spec(), {("A", "overall"): frames}, "quick", trained).iloc[0]
    assert line.diverged == "seed 1 exploded on the test tasks (mean test MSE 2.5e+04, validation 1)"
    assert line.mean_without_diverged == pytest.approx(np.mean([1.0, 1.2]))
    page = to_markdown(build_table(exploding_table_spec(), {("A", "overall"): frames}, "quick", trained),
                       exploding_table_spec(), "quick", {})
    assert "seed 1 exploded on the test tasks" in page and "above 10 × its validation MSE" in page
    # a seed that diverged in training is named once, as diverged; both are left out of the mean without
    trained[("A", "overall")][2] = {"divergence": "diverged …", "diverged_at": 400, "final_val_mse": 0.01}
    line = build_table(exploding_table_spec(), {("A", "overall"): frames}, "quick", trained).iloc[0]
    assert line.diverged == ("seed 2 diverged at iteration ~400; "
                             "seed 1 exploded on the test tasks (mean test MSE 2.5e+04, validation 1)")
    assert line.mean_without_diverged == pytest.approx(1.0)
    # the table's own factor; and a column tested on another split's tasks is not judged against validation
    line = build_table(exploding_table_spec(explosion_factor=1e5), {("A", "overall"): frames}, "quick",
                       trained).iloc[0]
    assert line.diverged == "seed 2 diverged at iteration ~400"
    spec = exploding_table_spec()
    spec["columns"][0]["evaluate_on"] = {"shots": 1}
    assert build_table(spec, {("A", "overall"): frames}, "quick", trained).iloc[0].diverged.count("exploded") == 0


def test_a_real_run_tested_on_tasks_far_outside_its_training_tasks_is_marked_exploded(tmp_path):
    """A trained MAML run, evaluated on its own test tasks and on the same tasks with 20 × the
    amplitude: the rule passes the first and marks the second, from the real train.json and eval.csv."""
    import pandas as pd

    from taskbal.evaluate import evaluate
    from taskbal.io import read_arrays, write_arrays
    from taskbal.runners.meta import train

    experiment = small_experiment(iterations=8)
    split = tmp_path / "split.npz"
    sinusoid.write_splits(split, experiment["data"])
    summary = train(experiment, 0, split, tmp_path / "run", progress=False)
    meta, arrays = read_arrays(split)
    arrays["test_amplitude"] = arrays["test_amplitude"] * 20.0
    far = tmp_path / "far.npz"
    write_arrays(far, arrays, {**meta, "task": "the test tasks' amplitudes × 20"})
    evaluate(tmp_path / "run" / "final.pt", split, tmp_path / "own")
    evaluate(tmp_path / "run" / "final.pt", far, tmp_path / "far")
    trained = {("A", "overall"): {0: summary}}
    for folder, marked in (("own", False), ("far", True)):
        frames = {0: pd.read_csv(tmp_path / folder / "eval.csv")}
        line = build_table(exploding_table_spec(), {("A", "overall"): frames}, "quick", trained).iloc[0]
        assert ("exploded on the test tasks" in line.diverged) is marked, (folder, line.diverged)
