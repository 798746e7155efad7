"""The one place that talks to MLflow.

Every training and evaluation job logs one MLflow run at its end: parameters (the
resolved experiment, flattened), the thinned training curve as metric history,
final metrics, artifacts (per-task results, curve, checkpoint) and tags (tables,
method, seed, scale, git commit). The tables never read MLflow back: files under
``results/`` are the contract between rules; MLflow is for browsing.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the config's ``tracking_uri``, else a
SQLite database under ``results/``. Jobs may run in parallel against one SQLite file,
so logging holds a file lock next to the database.
"""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

from filelock import FileLock

DEFAULT_DB = Path("results/mlflow/mlflow.db")
DEFAULT_ARTIFACTS = Path("results/mlflow/artifacts")


def resolve_uri(configured: str | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    return uri or f"sqlite:///{DEFAULT_DB.resolve()}"


def uri_source(configured: str | None) -> str:
    """Where the tracking URI in use was set, for error messages."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "the environment variable MLFLOW_TRACKING_URI"
    return "config key tracking_uri (config/config.yaml or --config)" if configured else "the default"


def check_reachable(configured: str | None = None, timeout: float = 5.0) -> None:
    """An ``http(s)://`` tracking server must answer before any job starts: otherwise every job would
    train, then spend minutes in MLflow's retries and fail. Other URIs (SQLite, a folder) need no
    server and are not checked here."""
    import urllib.error
    import urllib.request

    uri = resolve_uri(configured)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered: a server that has no /health route is still a server
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ValueError(f"tracking_uri: no MLflow server answers at {uri} ({reason}); set by "
                         f"{uri_source(configured)}. Start the server, fix the URI, or leave tracking_uri "
                         "null for the local SQLite database") from None


def bounded_retries() -> None:
    """MLflow retries an unreachable server for minutes by default; a job's logging gives up sooner
    (the user's own settings win)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _lock_for(uri: str):
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(db) + ".lock", timeout=600)
    return nullcontext()


def _experiment_id(client, name: str, uri: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # Keep artifacts beside the database instead of MLflow's default ./mlruns in the cwd.
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def log_run(*, experiment: str, run_name: str, params: dict, metrics: dict[str, float],
            history: list[dict] | None = None, artifacts: list[Path] = (), tags: dict[str, str],
            uri: str | None = None) -> str:
    """Log one finished job as an MLflow run; returns the run id."""
    bounded_retries()
    import mlflow  # imported here: it takes seconds, and only jobs that log need it
    from mlflow.entities import Metric, Param, RunTag

    uri = resolve_uri(uri)
    with _lock_for(uri):
        client = mlflow.MlflowClient(tracking_uri=uri)
        run = client.create_run(_experiment_id(client, experiment, uri), run_name=run_name,
                                tags={**tags, "git_commit": git_commit()})
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        flat_params = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        metric_rows = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for row in history or []:
            step = int(row["iteration"])
            metric_rows += [Metric(f"curve/{k}", float(v), now, step) for k, v in row.items()
                            if k != "iteration" and v == v]  # v == v drops NaN
        for start in range(0, max(len(flat_params), len(metric_rows)), 900):
            client.log_batch(run_id, metrics=metric_rows[start:start + 900],
                             params=flat_params[start:start + 90] if start == 0 else [],
                             tags=[RunTag(k, str(v)) for k, v in tags.items()] if start == 0 else [])
        for start in range(90, len(flat_params), 90):
            client.log_batch(run_id, params=flat_params[start:start + 90])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
    return run_id
