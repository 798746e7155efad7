"""MLflow as a tracking service for many writers: the shipped server (tools/mlflow_server.sh) on a
PostgreSQL database, a table built by 16 parallel jobs against it, and every run, parameter and metric
the jobs wrote to results/ found in MLflow afterwards (none lost)."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

from taskbal.artifacts import EVAL_SUMMARY, run_file
from taskbal.plan import load_plan
from taskbal.tracking import flatten
from workspaces import copy_workflow, snakemake


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; the Debian package's ``postgres`` user runs it then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on loopback, with an empty database ``mlflow``; stopped afterwards."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # Not under tmp_path: pytest's folders are private to this user, and the server may run as another.
    folder = Path(tempfile.mkdtemp(prefix="taskbal-pg-"))
    (folder / "sock").mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "sock", "postgres")
    port = free_port()
    subprocess.run(as_postgres_user([str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust",
                                     "-U", "postgres"]), check=True, capture_output=True)
    subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"),
                                     "-o", f"-k {folder / 'sock'} -p {port} -h 127.0.0.1", "-w", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                        "create database mlflow"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running_server(repo, backend: str, folder: Path, env: dict, workers: int = 2):
    """The shipped tools/mlflow_server.sh on a free port, until the block ends; yields its URI."""
    port = free_port()
    log = open(folder / "server.log", "w")
    server = subprocess.Popen([str(repo / "tools/mlflow_server.sh"), backend, str(folder / "artifacts"),
                               "127.0.0.1", str(port), str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    started = (folder / "server.log").read_text()
                    raise AssertionError(f"the MLflow server did not start:\n{started}") from None
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def mlflow_server(repo, postgres, tmp_path, tool_env):
    with running_server(repo, postgres, tmp_path, tool_env) as uri:
        yield uri


@pytest.mark.slow
def test_parallel_jobs_lose_nothing_on_a_server_with_postgresql(repo, tool_env, tmp_path, mlflow_server):
    import mlflow

    work = tmp_path / "work"
    work.mkdir()
    copy_workflow(repo, work)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    # 16 evaluations of SIMOL Table 1's tiny runs: 16 training jobs at once, then 16 evaluation jobs.
    plan = load_plan(repo / "config/tables", repo / "workflow/schemas", [], cache_dir=tmp_path / "cache")
    table_runs = sorted(run for (scale, run), tables in plan.tables_of_run.items()
                        if scale == "tiny" and "simol_table1" in tables)
    targets = [run_file("tiny", run, seed, EVAL_SUMMARY) for run in table_runs for seed in (0, 1)][:16]
    snakemake(["--cores", "16", "--quiet", "--config", "scale=tiny", f"tracking_uri={mlflow_server}", "--",
               *targets], work, tool_env)

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("taskbal")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_name = {run.info.run_name: run for run in runs}
    assert len(by_name) == len(runs)  # no duplicate runs
    folders = sorted(Path(p).parent for p in glob.glob(str(work / "results/runs/tiny/*/seed*/train.json")))
    assert len(folders) == 16 and len(runs) == 2 * len(folders)  # a train and an evaluate run per folder
    for folder in folders:
        name = f"{folder.parent.name} {folder.name}"
        train, evaluate = by_name[f"train {name}"], by_name[f"evaluate {name}"]
        assert train.info.status == evaluate.info.status == "FINISHED"
        summary = json.loads((folder / "train.json").read_text())
        experiment_spec = torch.load(folder / "final.pt", weights_only=False)["experiment"]
        assert train.data.params == flatten({**experiment_spec, "seed": int(folder.name[4:])})
        finals = {key: value for key, value in train.data.metrics.items() if not key.startswith("curve/")}
        assert finals == pytest.approx({k: float(v) for k, v in summary.items() if not isinstance(v, str)})
        # The texts are tags: the machine and the divergence verdict.
        assert train.data.tags["machine"] == summary["machine"]
        assert train.data.tags["divergence"] == summary["divergence"]
        curve = pd.read_csv(folder / "curve.csv")
        for column in curve.columns.drop("iteration"):
            logged = client.get_metric_history(train.info.run_id, f"curve/{column}")
            expected = curve[["iteration", column]].dropna()
            logged = sorted((m.step, m.value) for m in logged)
            assert [step for step, _ in logged] == expected["iteration"].tolist(), (name, column)
            assert [value for _, value in logged] == pytest.approx(expected[column].tolist()), (name, column)
        evaluated = json.loads((folder / "eval.json").read_text())
        assert evaluate.data.metrics == pytest.approx({k: float(v) for k, v in evaluated.items()})


def test_a_run_on_a_server_uploads_its_checkpoint_through_the_server(repo, tmp_path, tool_env):
    """The server proxies its artifact store (an ``mlflow-artifacts:`` URI): the job uploads a copy, and never
    links into the server's folder, even where that folder is on the job's disk."""
    import mlflow

    from taskbal.tracking import LiveRun

    checkpoint = tmp_path / "final.pt"
    checkpoint.write_bytes(b"trained")
    with running_server(repo, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, tool_env, workers=1) as uri:
        run = LiveRun(experiment="served", run_name="train r seed0", params={}, tags={}, uri=uri)
        run.finish({"x": 1.0}, [checkpoint])
        client = mlflow.MlflowClient(tracking_uri=uri)
        assert client.get_run(run.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        down = Path(client.download_artifacts(run.run_id, "final.pt", str(tmp_path / "down")))
    assert down.read_bytes() == b"trained"
    stored = list((tmp_path / "artifacts").rglob("final.pt"))
    assert len(stored) == 1 and stored[0].read_bytes() == b"trained" and not stored[0].samefile(checkpoint)
