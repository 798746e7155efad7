"""The Snakemake workflow: lint, the DAG, config validation, and a whole tiny-scale run."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from report_checks import CHROMIUM, check_report
from workspaces import copy_workflow, snakemake


def test_lint_is_clean(repo, tool_env):
    result = snakemake(["--lint"], repo, tool_env)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + (result.stdout + result.stderr)


def test_dry_run_lists_the_whole_dag(repo, tool_env, tmp_path):
    work = copy_workflow(repo, tmp_path)  # a clean copy: the user's results/ must not change the count
    out = snakemake(["-n", "--quiet", "rules"], work, tool_env).stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    # Table 1: 6 methods × 2 shots × 2 inner optimisers; Table 5 adds 3- and 4-layer SIMOL with each
    # optimiser (its 2-layer row is Table 1's run); 5 seeds at quick scale. Appendix D's grid search
    # chooses SIMOL's settings: 80 points, one seed, for each of the 4 settings (trained, not evaluated).
    table_runs = (6 * 2 * 2 + 2 * 2) * 5
    assert counts["train"] == table_runs + 4 * 80
    assert counts["evaluate"] == table_runs
    assert counts["select"] == 4 and counts["grid_page"] == 1
    assert counts["split"] == 2 and counts["table"] == 2 and counts["figure"] == 1
    assert counts["reproduction_report"] == 1


def test_wrong_config_value_stops_with_the_key(repo, tool_env, tmp_path):
    result = snakemake(["-n", "--config", "scale=huge"], repo, tool_env, check=False)
    assert result.returncode != 0
    assert "scale" in (result.stdout + result.stderr) and "huge" in (result.stdout + result.stderr)


def test_wrong_table_value_names_the_file_and_the_key(repo, tool_env, tmp_path):
    work = copy_workflow(repo, tmp_path)
    path = work / "config/tables/simol_table1.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["rows"][1]["set"]["weighting"]["name"] = "mgdaa"
    path.write_text(yaml.safe_dump(spec))
    result = snakemake(["-n"], work, tool_env, check=False)
    assert result.returncode != 0
    assert "simol_table1.yaml" in (result.stdout + result.stderr) and "mgdaa" in (result.stdout + result.stderr)
    assert "mini-batch MGDA" in (result.stdout + result.stderr)  # the row
    assert not (work / "results").exists()  # nothing partial


@pytest.mark.slow
def test_tiny_scale_runs_the_whole_dag(repo, tool_env, tmp_path):
    work = copy_workflow(repo, tmp_path)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    snakemake(["--config", "scale=tiny", "--quiet"], work, tool_env)

    table1 = pd.read_csv(work / "results/tables/tiny/simol_table1.csv")
    # 4 columns in each reading of the inner optimiser, and the SGD reading's again with the outer step clipped
    assert len(table1) == 6 * 12 and table1["ours_mean"].notna().all()
    assert (table1["n_seeds"] == 2).all()
    assert set(table1["row"]) == {"min average loss (MAML)", "mini-batch MGDA", "mini-batch CAGrad",
                                  "mini-batch PCGrad", "mini-batch improvement function", "SIMOL"}
    assert (table1["scale"] == "tiny").all()
    markdown = (work / "results/tables/tiny/simol_table1.md").read_text()
    assert "tiny" in markdown and "paper" in markdown
    assert (work / "results/tables/tiny/simol_table1.tex").exists()
    table5 = pd.read_csv(work / "results/tables/tiny/simol_table5.csv")
    assert len(table5) == 3 * 4 and table5["ours_mean"].notna().all()
    # The 2-layer row of Table 5 is Table 1's SIMOL 2-shot run: the same numbers.
    t1 = table1[(table1["row"] == "SIMOL") & (table1["column"] == "overall_2shot")]["ours_mean"].item()
    t5 = table5[(table5["row"] == "2 layers") & (table5["column"] == "overall")]["ours_mean"].item()
    assert t1 == t5
    assert (work / "results/figures/tiny/simol_figure2.png").stat().st_size > 10_000
    check_grid_search(work)

    with sqlite3.connect(work / "results/mlflow/mlflow.db") as db:
        runs = db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
        tags = dict(db.execute("select key, count(*) from tags group by key").fetchall())
    # one training and one evaluation run per (run, seed): (24 + 12 clipped + 4) runs × 2 seeds; and the grid's
    # search runs (trained only): 2 points × 6 settings × 1 seed
    assert runs == 2 * 80 + 12
    for key in ("tables", "method", "seed", "scale", "git_commit"):
        assert tags.get(key) == runs, key

    rerun = snakemake(["--config", "scale=tiny", "-n"], work, tool_env)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    if CHROMIUM is None:
        pytest.skip("the report was built but not checked in a browser: needs Debian's chromium (.ci/run installs it)")
    check_report(work, "tiny", ["simol_table1", "simol_table5"], "simol_figure2", "simol_figure1",
                 tmp_path / "report.png")


def check_grid_search(work: Path) -> None:
    """SIMOL's rows trained with the values Appendix D's search selected, and the pages say which."""
    import torch

    page = (work / "results/grids/tiny/simol_appendix_d.md").read_text()
    assert page.count("- selected: **λ̂' = ") == 6  # 5 / 2 shots × Adam / SGD / SGD with the outer step clipped
    assert "simol_table5: 4 layers, overall" in page
    points = pd.read_csv(work / "results/grids/tiny/simol_appendix_d.csv")
    assert len(points) == 12 and points["selected"].sum() == 6 and points["val_mse"].notna().all()
    # the grid's stall rule judged every point from its search runs' curves (declared by the page rule)
    assert page.count("- stall rule: ") == 6 and "stalled" in points.columns
    assert "grid search: SIMOL, by SIMOL (Yu et al., ICLR 2023), Appendix D" in \
        (work / "results/tables/tiny/simol_table1.md").read_text()
    for selection in (work / "results/grids/tiny").glob("simol_appendix_d-*.json"):
        record = json.loads(selection.read_text())
        chosen = record["selected"]["weighting.lambda_grad"]
        # the table runs (seed 1: the search runs have seed 0 only) hold the chosen value in their final.pt
        finals = [torch.load(p, weights_only=False)["experiment"] for p in
                  (work / "results/runs/tiny").glob("sinusoid-simol-*/seed1/final.pt")]
        using = [e for e in finals if e["data"]["shots"] == record["base"]["data"]["shots"]
                 and e["learner"]["inner_optimizer"] == record["base"]["learner"]["inner_optimizer"]
                 and e["outer"].get("clip_grad_norm") == record["base"]["outer"].get("clip_grad_norm")]
        assert using and all(e["weighting"]["lambda_grad"] == chosen and "grid_search" not in e for e in using)


NASH_FIGURES = [f"nash_figure{n}" for n in range(2, 13)]


@pytest.mark.slow
def test_tiny_scale_builds_the_other_papers_targets(repo, tool_env, tmp_path):
    """Nash-GBML Table 2 (every GBML learner, both penalties, TR-MAML) and Figures 2-12 (trajectories from
    Table 2's runs; batch- and step-size sweeps), SIMOL Figure 1 (toy runner), thesis Figure A.1 (bi-level
    MOML / FORUM) and Figure 4.1 (black-box ASMG) through their named rules."""
    work = copy_workflow(repo, tmp_path)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    targets = ["nash_table2", "simol_figure1", "thesis_figure_a1", "thesis_figure4_1", *NASH_FIGURES]
    snakemake(["--config", "scale=tiny", "--quiet", "--", *targets], work, tool_env)

    table2 = pd.read_csv(work / "results/tables/tiny/nash_table2.csv")
    spec = yaml.safe_load((work / "config/tables/nash_table2.yaml").read_text())
    assert len(table2) == len(spec["rows"]) * len(spec["columns"])
    assert table2["ours_mean"].notna().all() and (table2["n_seeds"] == 2).all()
    assert {"MAML", "Meta-SGD", "CAVIA", "TR-MAML"} <= set(table2["row"])
    for name in targets[1:]:
        page = (work / f"results/figures/tiny/{name}.md").read_text()
        assert "tiny" in page and "paper" in page.lower(), name
        assert (work / f"results/figures/tiny/{name}.png").stat().st_size > 10_000, name
    rerun = snakemake(["--config", "scale=tiny", "-n", "--", *targets], work, tool_env)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    check_nash_figures(work, table2)


def check_nash_figures(work, table2):
    """Figures 2, 11, 12 draw Table 2's runs (no training of their own); each sweep's claims are judged per
    swept value, those of the columns left out at tiny scale 'not run'."""
    records = {name: json.loads((work / f"results/figures/tiny/{name}.json").read_text()) for name in NASH_FIGURES}
    table_runs = set(json.loads((work / "results/tables/tiny/nash_table2.json").read_text())["provenance"]["runs"]
                     .split(", "))
    for name in ("nash_figure2", "nash_figure11", "nash_figure12"):
        assert set(records[name]["provenance"]["runs"].split(", ")) <= table_runs, name
    figure2 = {(f["row"], f["label"]): f["mean"] for f in records["nash_figure2"]["finals"]}
    mean = table2[(table2["row"] == "MAML") & (table2["column"] == "mean")]["ours_mean"].item()
    assert figure2[("MAML", "average MSE (final)")] == pytest.approx(mean, rel=1e-5)
    for name in NASH_FIGURES[1:9]:
        verdicts = [claim["verdict"] for claim in records[name]["claims"]]
        assert len(verdicts) == 4 * len(records[name]["columns"]), name  # 2 penalties x mean, worst, per value
        assert verdicts.count("not run") == 4 * (len(records[name]["columns"]) - 2), name


OFFLINE_DATA = "../shared/data"  # config/config.yaml's offline_data, relative to the repository root


@pytest.mark.slow
@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / OFFLINE_DATA / "omniglot").is_dir(),
                    reason=f"no offline copy of Omniglot at {OFFLINE_DATA}/omniglot (a checkout without the shared "
                           "data folder)")
def test_tiny_scale_builds_tow_table1(repo, tool_env, tmp_path):
    """TOW Table 1 through its named rule: real Omniglot from the offline copy (verified image by image),
    generated mini-ImageNet files in the upstream pickle format (the standard classes) as a local copy;
    MAML and ProtoNet with the four weightings on conv4, MAML on ResNet-10; and the figures drawn from Table 1's
    runs and a few of their own: Figure 1 (curves), Figure 2 and Table 3 (any-shot episodes; Table 3's runs also
    tested on CUB's layout, generated and placed as fetched), Figure 3 (exact V_t), Figures 4–5 (weights of
    monitored tasks), Figure 6 (10 iLQR iterations)."""
    from fake_split_layouts import cub_tree, mini_imagenet_pickles

    (tmp_path / "work").mkdir()
    work = copy_workflow(repo, tmp_path / "work")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    # the standard 64 / 16 / 20 classes, 16 small images each (1 support + 15 queries), resized to 84 by the split
    mini = mini_imagenet_pickles(tmp_path / "mini", per_class=16, side=12)
    # CUB's extracted archive with a record saying where it came from: its published checksum cannot match a
    # generated archive, so the test places the data as `snakemake data_cub` leaves it
    cub_tree(work / "resources/cub", per_class=16)
    (work / "resources/cub/.verified").write_text(json.dumps(
        {"dataset": "cub", "files": {}, "source": "generated CUB-200-2011 layout (test images, not the real birds)"}))
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"offline_data": str((repo / OFFLINE_DATA).resolve()),
                                     "datasets": {"mini_imagenet": {"local": str(mini)}}}))
    args = ["--configfile", "config/config.yaml", str(extra), "--config", "scale=tiny"]
    targets = ["tow_table1", "tow_table2", "tow_table3", "tow_figure1", "tow_figure2", "tow_figure3", "tow_figure4",
               "tow_figure5", "tow_figure6"]
    snakemake([*args, "--quiet", "--", *targets], work, tool_env)

    spec = yaml.safe_load((work / "config/tables/tow_table1.yaml").read_text())
    table = pd.read_csv(work / "results/tables/tiny/tow_table1.csv")
    assert len(table) == len(spec["rows"]) * len(spec["columns"]) == 24
    protonet_resnet = table["row"].str.startswith("ProtoNet") & (table["column"] == "miniimagenet_resnet10")
    assert table.loc[~protonet_resnet, "ours_mean"].notna().all()  # 20 runs: every cell the paper reports
    assert table.loc[protonet_resnet, "ours_mean"].isna().all()
    ours = table.loc[~protonet_resnet, "ours_mean"]
    assert ((ours >= 0) & (ours <= 100)).all() and ours.nunique() > 1  # accuracies in percent, not all alike
    markdown = (work / "results/tables/tiny/tow_table1.md").read_text()
    assert "quoted by the paper from Finn et al. 2017" in markdown and "Snell et al. 2017" in markdown
    assert "Not run here: " in markdown and "the paper runs ResNet-10 with MAML only" in markdown
    assert "offline copy" in markdown and "32,460 images verified" in markdown  # where the Omniglot images came from
    record = json.loads((work / "resources/omniglot/.verified").read_text())
    assert record["source"].startswith(f"offline copy {(repo / OFFLINE_DATA).resolve()}/omniglot")
    rerun = snakemake([*args, "-n", "--", *targets], work, tool_env)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    check_tow_table2(work, table)
    check_tow_figures(work)


def check_tow_figures(work):
    """Figures 3 and 6 reuse Table 1's runs for the lines they share and train the exact V_t / 10-iteration
    variants; Figures 4–5 record the weights TOW plans for the monitored windows at every curve point."""
    def runs(name, kind="figures"):
        return set(json.loads((work / f"results/{kind}/tiny/{name}.json").read_text())["provenance"]["runs"]
                   .split(", "))
    table1 = runs("tow_table1", "tables")
    assert len(runs("tow_figure3") - table1) == 2 and len(runs("tow_figure6") - table1) == 1
    for name, windows in (("tow_figure4", ["same_train", "different_train", "same_test", "different_test"]),
                          ("tow_figure5", ["any_train", "any_test"])):
        (run,) = runs(name)
        curve = pd.read_csv(work / f"results/runs/tiny/{run}/seed0/curve.csv")
        for window in windows:  # 2 tasks per monitored meta-batch at tiny scale: weights near 1/2
            weights = curve[f"monitor_weight_{window}"]
            assert weights.notna().all() and weights.between(0, 1).all(), (name, window)
        page = (work / f"results/figures/tiny/{name}.md").read_text()
        assert "curve_end_monitor_weight" in page and ("| holds" in page or "| does not hold" in page)
    page = (work / "results/figures/tiny/tow_figure3.md").read_text()
    assert "within 1 point" in page and ("| holds" in page or "| does not hold" in page)
    any_shot = runs("tow_figure2")
    assert len(any_shot) == 8 and all("-anyshot-" in run for run in any_shot)  # 2 learners x 4 weightings
    table3 = pd.read_csv(work / "results/tables/tiny/tow_table3.csv").set_index(["row", "column"])["ours_mean"]
    assert len(runs("tow_table3", "tables") - any_shot) == 1  # Meta-SGD; the others are Figure 2's runs
    mini, cub = table3.xs("miniimagenet", level="column"), table3.xs("cub", level="column")
    assert mini.notna().sum() == cub.notna().sum() == 5 and cub.dropna().between(0, 100).all()
    markdown = (work / "results/tables/tiny/tow_table3.md").read_text()
    assert "quoted by the paper from H. B. Lee et al. 2020" in markdown and "generated CUB-200-2011" in markdown
    for run in runs("tow_table3", "tables"):  # trained once; tested on mini-ImageNet's and on CUB's tasks
        (cub_eval,) = (work / f"results/runs/tiny/{run}/seed0").glob("on-fewshot_images-anyshot-*/eval.csv")
        assert len(pd.read_csv(cub_eval)) == 4  # tiny: 4 test tasks
    for run in any_shot:
        curve = pd.read_csv(work / f"results/runs/tiny/{run}/seed0/curve.csv")
        assert curve["val_accuracy"].between(0, 1).all()


def check_tow_table2(work, table1):
    """TOW Table 2 times Table 1's own MAML runs (no training of its own): seconds per meta-update from their
    train.json, and each weighting's ratio to uniform, seed by seed."""
    record = json.loads((work / "results/tables/tiny/tow_table2.json").read_text())
    table1_runs = set(json.loads((work / "results/tables/tiny/tow_table1.json").read_text())["provenance"]["runs"]
                      .split(", "))
    assert set(record["provenance"]["runs"].split(", ")) <= table1_runs
    table2 = pd.read_csv(work / "results/tables/tiny/tow_table2.csv").set_index(["row", "column"])
    assert len(table2) == 4 * 6 and table2["ours_mean"].notna().all()
    assert (table2.xs("omniglot_ratio", level="column")["ours_mean"]["Uniform"]) == 1.0
    for column in ("omniglot", "miniimagenet_cnn", "miniimagenet_resnet10"):
        seconds = table2.xs(f"{column}_seconds", level="column")["ours_mean"]
        ratio = table2.xs(f"{column}_ratio", level="column")["ours_mean"]
        assert (seconds > 0).all()
        assert ratio["TOW"] > 1  # planning ahead costs more than the uniform step it adds to
    assert "TOW" in set(table1["row"].str.split(", ").str[1])
    figure = json.loads((work / "results/figures/tiny/tow_figure1.json").read_text())
    assert set(figure["provenance"]["runs"].split(", ")) <= table1_runs  # Table 1's runs, no training of its own
    assert len(figure["claims"]) == 15 and all(c["verdict"] in ("holds", "does not hold") for c in figure["claims"])
    assert (work / "results/figures/tiny/tow_figure1.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_scale_builds_the_imagenet_tables(repo, tool_env, tmp_path):
    """Nash-GBML Table 4 and SIMOL Tables 2-3 through their named rules on generated mini- and
    tiered-ImageNet files in the upstream pickle formats (the standard classes, resized by the split):
    MAML, Meta-SGD, CAVIA(32) and CAVIA(128) with FiLM, plain and with either penalty, in both readings of
    the printed rates, worst and std. dev. over test episodes; MAML with mean / MGDA / CAGrad / SIMOL's conv
    re-weighting network, FOMAML, Reptile, ProtoNet and SIMOL+PN, overall and worst-10 %."""
    from fake_split_layouts import mini_imagenet_pickles, tiered_imagenet_pickles

    (tmp_path / "work").mkdir()
    work = copy_workflow(repo, tmp_path / "work")
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    mini = mini_imagenet_pickles(tmp_path / "mini", per_class=20, side=12)  # 5 shots + 15 queries: the split files
    tiered = tiered_imagenet_pickles(tmp_path / "tiered", per_class=20, side=12)
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"datasets": {"mini_imagenet": {"local": str(mini)},
                                                  "tiered_imagenet": {"local": str(tiered)}}}))
    args = ["--configfile", "config/config.yaml", str(extra), "--config", "scale=tiny"]
    targets = ["nash_table4", "simol_table2", "simol_table3", "simol_table4"]
    snakemake([*args, "--quiet", "--", *targets], work, tool_env)

    spec = yaml.safe_load((work / "config/tables/nash_table4.yaml").read_text())
    table = pd.read_csv(work / "results/tables/tiny/nash_table4.csv")
    assert len(table) == len(spec["rows"]) * len(spec["columns"]) == 72
    assert table["ours_mean"].notna().all() and (table["n_seeds"] == 1).all()
    cells = table.set_index(["row", "column"])["ours_mean"]
    for row in table["row"].unique():
        assert cells[(row, "worst")] <= cells[(row, "mean")] and 0 <= cells[(row, "std")] <= 50
    assert set(table["metric"]) == {"overall", "worst_task", "std_task"}
    for name in ("simol_table2", "simol_table3"):
        spec = yaml.safe_load((work / f"config/tables/{name}.yaml").read_text())
        table = pd.read_csv(work / f"results/tables/tiny/{name}.csv")
        assert len(table) == len(spec["rows"]) * len(spec["columns"]) == 96, name
        run = table[table["ours_mean"].notna()]
        assert len(run) == 26 * 2 and ((run["ours_mean"] >= 0) & (run["ours_mean"] <= 100)).all(), name
        assert set(table.loc[table["ours_mean"].isna(), "row"]) >= {"IMAML", "MTL", "TS-MAML", "Meta-MinibatchProx"}
        markdown = (work / f"results/tables/tiny/{name}.md").read_text()
        assert "quoted by the paper from Zhou et al. 2019" in markdown and "ProtoNet has no inner loop" in markdown
    rerun = snakemake([*args, "-n", "--", *targets], work, tool_env)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    check_simol_table4(work)


def check_simol_table4(work):
    """SIMOL Table 4 on generated images: MAML's and SIMOL's seconds per meta-update and ratio, the batch
    methods extrapolated from MAML's step (no runs of their own), the data named as generated."""
    table = pd.read_csv(work / "results/tables/tiny/simol_table4.csv").set_index(["row", "column"])["ours_mean"]
    for suffix in ("", "_finn"):
        assert table[("MAML", f"ratio{suffix}")] == 1.0 and table[("SIMOL", f"ratio{suffix}")] > 0
        assert table[("batch MGDA", f"seconds{suffix}")] == pytest.approx(238266 * table[("MAML", f"seconds{suffix}")])
        assert table[("batch CAGrad", f"ratio{suffix}")] == pytest.approx(238266)
    markdown = (work / "results/tables/tiny/simol_table4.md").read_text()
    assert "generated images (uniform random pixels; for timing only)" in markdown
    assert "Extrapolated, not run: batch MGDA: one task's meta-gradient" in markdown
