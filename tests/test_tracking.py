"""MLflow logging: what a job logs can be read back; the tracking URI can be overridden."""
from __future__ import annotations

import mlflow

from taskbal import tracking


def test_logged_run_reads_back(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    artifact = tmp_path / "eval.csv"
    artifact.write_text("task,mse\n0,1.5\n")
    run_id = tracking.log_run(
        experiment="test-exp", run_name="train r seed0",
        params={"data": {"shots": 5}, "weighting": {"name": "simol"}, "seed": 0},
        metrics={"final_test_mse": 0.5},
        history=[{"iteration": 0, "test_mse": 2.0}, {"iteration": 10, "test_mse": 1.0, "nan": float("nan")}],
        artifacts=[artifact], tags={"table": "simol_table1", "seed": "0", "scale": "tiny"}, uri=uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.shots"] == "5" and run.data.params["weighting.name"] == "simol"
    assert run.data.metrics["final_test_mse"] == 0.5
    assert run.data.tags["table"] == "simol_table1" and run.data.tags["scale"] == "tiny"
    assert "git_commit" in run.data.tags
    history = client.get_metric_history(run_id, "curve/test_mse")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (10, 1.0)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["eval.csv"]
    # Artifacts sit beside the database, not in ./mlruns of the working directory.
    assert (tmp_path / "db" / "artifacts" / "test-exp").is_dir()


def test_environment_variable_overrides_config(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_uri("sqlite:///x.db") == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking.resolve_uri(None).endswith("results/mlflow/mlflow.db")
