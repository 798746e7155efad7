"""The one place that talks to MLflow.

Every training and evaluation job is one MLflow run, live while the job works (``LiveRun``):
created at job start with its parameters (the resolved experiment, flattened) and tags (tables,
method, seed, scale, git commit); the training curve logged row by row as it is recorded; final
metrics and artifacts (per-task results, curve, checkpoint) at the end, then FINISHED; FAILED
or KILLED when the job fails or is stopped. A resumed job continues the run of its killed attempt.
The tables never read MLflow back: files under ``results/`` are the contract between rules;
MLflow is for browsing.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the config's ``tracking_uri``, else a
SQLite database under ``results/``. Jobs may run in parallel against one SQLite file,
so logging holds a file lock next to the database.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from filelock import FileLock

DEFAULT_DB = Path("results/mlflow/mlflow.db")
DEFAULT_ARTIFACTS = Path("results/mlflow/artifacts")
# MLflow 3's UI opens an experiment of unknown kind on its GenAI traces page; this kind marks ours as
# model training. The UI of MLflow 3.17 goes by its own "GenAI / Model training" switch instead (GenAI
# unless the user switched), so the links we give carry the switch: ``runs_url``.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def runs_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI served at ``server`` (not its GenAI pages)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


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
        if existing.tags.get(EXPERIMENT_KIND[0]) is None:
            client.set_experiment_tag(existing.experiment_id, *EXPERIMENT_KIND)
        return existing.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # Keep artifacts beside the database instead of MLflow's default ./mlruns in the cwd.
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
    except Exception:
        # Parallel jobs on a server (no file lock there) race to create it: one wins, the others use it.
        created = client.get_experiment_by_name(name)
        if created is None:
            raise
        return created.experiment_id


class Terminated(BaseException):
    """SIGTERM (Snakemake stopping, ``scancel``) as an exception, so the run can be marked KILLED."""


class LiveRun:
    """One job's MLflow run, open while the job works: created when the job starts (its true start
    time), a metric per training-curve row while it trains, and ended FINISHED, FAILED or KILLED.

    ``run_id``: a run of an earlier, killed attempt of the same job, continued instead of a new one.
    """

    def __init__(self, *, experiment: str, run_name: str, params: dict, tags: dict[str, str],
                 uri: str | None = None, run_id: str | None = None):
        bounded_retries()
        import mlflow  # imported here: it takes seconds, and only jobs that log need it

        self.uri = resolve_uri(uri)
        self.row_warning_given = False
        with _lock_for(self.uri):
            # Under the lock: the client creates and migrates a new SQLite database, which two jobs must
            # not do at once.
            self.client = mlflow.MlflowClient(tracking_uri=self.uri)
            if run_id and self._exists(run_id):
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
                return
            run = self.client.create_run(_experiment_id(self.client, experiment, self.uri), run_name=run_name,
                                         start_time=_now(), tags={**tags, "git_commit": git_commit()})
            self.run_id = run.info.run_id
            self._log_params(params)

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # MlflowException for an unknown id; any store error: start a new run
            return False

    def _log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        flat = [Param(k, v[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(flat), 90):
            self.client.log_batch(self.run_id, params=flat[start:start + 90])

    def _log_metrics(self, metrics: list) -> None:
        for start in range(0, len(metrics), 900):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 900])

    def log_rows(self, rows: list[dict]) -> None:
        """Training-curve rows as ``curve/<column>`` metrics at their iteration. A failure is reported
        once and does not stop the training: the curve is in curve.csv either way."""
        from mlflow.entities import Metric

        now = _now()
        metrics = [Metric(f"curve/{k}", float(v), now, int(row["iteration"])) for row in rows for k, v in row.items()
                   if k != "iteration" and isinstance(v, (int, float)) and v == v]  # v == v drops NaN
        try:
            with _lock_for(self.uri):
                self._log_metrics(metrics)
        except Exception as error:
            if not self.row_warning_given:
                print(f"warning: MLflow did not take the curve rows ({type(error).__name__}: {error}); "
                      "training goes on, the curve is in curve.csv", file=sys.stderr, flush=True)
                self.row_warning_given = True

    def finish(self, summary: dict, artifacts: list[Path] = ()) -> None:
        """The summary's numbers as metrics, its texts (the machine) as tags, the artifacts; FINISHED."""
        from mlflow.entities import Metric, RunTag

        now = _now()
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if isinstance(v, (int, float))]
        tags = [RunTag(k, v[:5000]) for k, v in summary.items() if isinstance(v, str)]
        with _lock_for(self.uri):
            self._log_metrics(metrics)
            if tags:
                self.client.log_batch(self.run_id, tags=tags)
            local = self._local_artifact_dir() if artifacts else None
            for path in artifacts:
                self._log_artifact(Path(path), local)
            self.client.set_terminated(self.run_id, "FINISHED", end_time=_now())

    def _local_artifact_dir(self) -> Path | None:
        """The run's artifact folder where its store is a local one (the default, under results/); None for
        any other store (a server's proxied store, object storage)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        store = get_artifact_repository(self.client.get_run(self.run_id).info.artifact_uri, tracking_uri=self.uri)
        return Path(store.artifact_dir) if isinstance(store, LocalArtifactRepository) else None

    def _log_artifact(self, path: Path, local: Path | None) -> None:
        """Into a local artifact folder as a hard link, so a checkpoint is on disk once, not twice; a copy
        where linking fails (another file system) and for any other store. A link is a snapshot like a
        copy: run files are replaced by renaming, never rewritten in place."""
        if local is not None:
            target = local / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                os.link(path, target)
                return
            except OSError:
                pass
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        """FAILED or KILLED; never raises (the job's own error is the one to report)."""
        try:
            with _lock_for(self.uri):
                self.client.set_terminated(self.run_id, status, end_time=_now())
        except Exception as error:
            print(f"warning: could not mark MLflow run {self.run_id} {status}: {error}", file=sys.stderr)


def _now() -> int:
    return int(time.time() * 1000)


@contextmanager
def ending_on_error(run: LiveRun | None) -> Iterator[None]:
    """Mark ``run`` KILLED on SIGTERM or Ctrl-C and FAILED on any other error, then re-raise. Inside,
    SIGTERM raises ``Terminated`` (by default it would end the process with no chance to say so)."""
    import signal
    import threading

    def terminated(signum, frame):
        raise Terminated()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if in_main_thread else None
    try:
        yield
    except (Terminated, KeyboardInterrupt):
        if run is not None:
            run.end("KILLED")
        raise
    except BaseException:
        if run is not None:
            run.end("FAILED")
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
