"""The MLflow UI as a user opens it, in headless Chromium: a real training job logs to the shipped
tracking server, the experiment's link opens the runs table, the run's page draws its training curve
with the points of curve.csv."""
from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from report_checks import CHROMIUM
from taskbal.tracking import runs_url
from test_tracking_server import running_server


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_ui_shows_the_runs_table_and_a_training_curve(repo, small_split, tool_env, tmp_path):
    from playwright.sync_api import sync_playwright

    from conftest import small_experiment

    experiment = small_experiment(iterations=60)
    experiment["evaluation"]["curve_every"] = 10
    out = tmp_path / "run" / "seed0"
    with running_server(repo, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, tool_env, workers=1) as uri:
        subprocess.run([sys.executable, "-m", "taskbal.cli", "train", "--spec", json.dumps(experiment), "--seed", "0",
                        "--split", str(small_split), "--final", str(out / "final.pt"),
                        "--curve", str(out / "curve.csv"),
                        "--summary", str(out / "train.json"), "--run-id", "sine", "--scale", "tiny", "--tables", "t",
                        "--experiment", "taskbal", "--tracking-uri", uri], env=tool_env, check=True,
                       capture_output=True)
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment_id = client.get_experiment_by_name("taskbal").experiment_id
        run = client.search_runs([experiment_id])[0]
        curve = pd.read_csv(out / "curve.csv")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(runs_url(uri, experiment_id))  # the link the README and `make mlflow-ui` give
            page.get_by_text("train sine seed0", exact=True).first.click(timeout=60_000)  # the runs table
            page.get_by_role("tab", name="Model metrics").click(timeout=60_000)
            run_page = page.url
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                   ".filter(e => e.data && e.data.length).length >= 3", timeout=60_000)
            drawn = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap("
                                  "e => (e.data || []).map(t => [Array.from(t.x || []), Array.from(t.y || [])]))")
            page.screenshot(path=str(tmp_path / "mlflow-run.png"))
            browser.close()
    assert f"/runs/{run.info.run_id}" in run_page
    for column in ("train_loss", "val_mse", "test_mse"):
        expected = curve[["iteration", column]].dropna()
        points = [(x, y) for x, y in drawn if x == expected["iteration"].tolist()]
        assert any(y == pytest.approx(expected[column].tolist()) for _, y in points), (column, drawn)
