"""MLflow logging: a job's run is live while it works, reads back, ends with the right status, and a
resumed job continues its killed attempt's run; the tracking URI can be overridden."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from taskbal import tracking


def live_run(uri: str, **overrides) -> tracking.LiveRun:
    options = dict(experiment="test-exp", run_name="train r seed0",
                   params={"data": {"shots": 5}, "weighting": {"name": "simol"}, "seed": 0},
                   tags={"table": "simol_table1", "seed": "0", "scale": "tiny"}, uri=uri)
    return tracking.LiveRun(**{**options, **overrides})


def test_a_live_run_reads_back(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    artifact = tmp_path / "eval.csv"
    artifact.write_text("task,mse\n0,1.5\n")
    run = live_run(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(run.run_id).info.status == "RUNNING"  # visible while the job works
    run.log_rows([{"iteration": 0, "test_mse": 2.0}])
    run.log_rows([{"iteration": 10, "test_mse": 1.0, "nan": float("nan")}])
    assert [m.value for m in client.get_metric_history(run.run_id, "curve/test_mse")] == [2.0, 1.0]
    run.finish({"final_test_mse": 0.5}, [artifact])
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.end_time >= logged.info.start_time
    assert logged.data.params["data.shots"] == "5" and logged.data.params["weighting.name"] == "simol"
    assert logged.data.metrics["final_test_mse"] == 0.5
    assert logged.data.tags["table"] == "simol_table1" and logged.data.tags["scale"] == "tiny"
    assert "git_commit" in logged.data.tags
    history = client.get_metric_history(run.run_id, "curve/test_mse")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (10, 1.0)]
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["eval.csv"]
    # Artifacts sit beside the database, not in ./mlruns of the working directory.
    assert (tmp_path / "db" / "artifacts" / "test-exp").is_dir()
    # The UI opens the experiment on its runs table, not MLflow 3's GenAI traces page.
    experiment = client.get_experiment_by_name("test-exp")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_local_store_links_artifacts_and_keeps_them_when_the_run_folder_is_rewritten(tmp_path, monkeypatch):
    """The default store holds a checkpoint once (a hard link), as a snapshot: replacing the run folder's file
    (the jobs write by renaming) leaves the logged one as it was. Where linking fails, a copy."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    checkpoint = tmp_path / "final.pt"
    checkpoint.write_bytes(b"trained")
    run = live_run(uri)
    run.finish({}, [checkpoint])
    client = mlflow.MlflowClient(tracking_uri=uri)
    logged = Path(client.download_artifacts(run.run_id, "final.pt", str(tmp_path / "down")))
    assert logged.read_bytes() == b"trained"
    stored = next((tmp_path / "db" / "artifacts").rglob("final.pt"))
    assert stored.samefile(checkpoint)
    replacement = tmp_path / "final.pt.tmp"
    replacement.write_bytes(b"retrained")
    replacement.replace(checkpoint)
    assert stored.read_bytes() == b"trained"

    def no_links(*args):
        raise OSError("Invalid cross-device link")

    monkeypatch.setattr(tracking.os, "link", no_links)
    again = live_run(uri)
    again.finish({}, [checkpoint])
    copied = [p for p in (tmp_path / "db" / "artifacts").rglob("final.pt") if again.run_id in str(p)]
    assert len(copied) == 1 and copied[0].read_bytes() == b"retrained" and not copied[0].samefile(checkpoint)


def test_a_failed_job_marks_its_run_failed_and_a_later_attempt_continues_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = live_run(uri)
    with pytest.raises(RuntimeError), tracking.ending_on_error(run):
        raise RuntimeError("the job broke")
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(run.run_id).info.status == "FAILED"
    again = live_run(uri, run_id=run.run_id)
    assert again.run_id == run.run_id and client.get_run(run.run_id).info.status == "RUNNING"
    again.finish({"x": 1.0})
    assert len(client.search_runs([client.get_experiment_by_name("test-exp").experiment_id])) == 1
    assert live_run(uri, run_id="no-such-run").run_id != run.run_id  # an unknown id starts a new run


def test_sigterm_marks_the_training_run_killed_and_the_rerun_continues_it(small_split, tool_env, tmp_path):
    """A training job stopped by SIGTERM (Snakemake, scancel) is KILLED in MLflow with the curve rows it
    had logged; rerun, it resumes from its checkpoint and finishes the same MLflow run."""
    from conftest import small_experiment

    db = tmp_path / "mlflow.db"
    out = tmp_path / "run" / "seed0"
    experiment = small_experiment(iterations=4000)
    experiment["evaluation"]["curve_every"] = 100
    command = [sys.executable, "-m", "taskbal.cli", "train", "--spec", json.dumps(experiment), "--seed", "0",
               "--split", str(small_split), "--final", str(out / "final.pt"), "--curve", str(out / "curve.csv"),
               "--summary", str(out / "train.json"), "--run-id", "r", "--scale", "tiny", "--tables", "t",
               "--experiment", "taskbal", "--checkpoint-every", "100", "--tracking-uri", f"sqlite:///{db}"]
    job = subprocess.Popen(command, env=tool_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert job.poll() is None, "the training ended before it could be stopped"
    os.kill(job.pid, signal.SIGTERM)
    assert job.wait(timeout=60) == 143, job.stderr.read()

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    run_id = (out / ".mlflow-run-train").read_text().strip()
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED"
    assert client.get_metric_history(run_id, "curve/train_loss"), "no curve rows were logged while training"

    finished = subprocess.run(command, env=tool_env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert json.loads((out / "train.json").read_text())["resumed_from"] > 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.start_time == killed.info.start_time
    assert len(client.search_runs([run.info.experiment_id])) == 1  # continued, not duplicated
    steps = {m.step for m in client.get_metric_history(run_id, "curve/train_loss")}
    assert steps == set(range(100, 4001, 100))
    assert not (out / ".mlflow-run-train").exists()


def test_jobs_racing_to_create_the_experiment_share_it(tmp_path):
    """On a server there is no file lock: a job whose lookup missed the experiment another job has just
    created gets an error from create_experiment, and must then use that experiment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    created = tracking._experiment_id(client, "raced", uri)
    lookup, calls = client.get_experiment_by_name, []

    def missed_once(name):
        calls.append(name)
        return None if len(calls) == 1 else lookup(name)

    client.get_experiment_by_name = missed_once
    assert tracking._experiment_id(client, "raced", uri) == created


def test_environment_variable_overrides_config(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_uri("sqlite:///x.db") == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking.resolve_uri(None).endswith("results/mlflow/mlflow.db")
