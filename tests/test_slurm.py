"""The Slurm profile on a real one-node Slurm cluster (tools/slurm_localhost.sh, Debian's packages,
installed here when missing): a table built through `snakemake --profile profiles/slurm` equals the
same table built locally, a table that needs a GPU asks sbatch for one (and a CPU table for none),
the compute jobs log to the tracking URI the submit host configured, and a training job killed by
Slurm resumes from its checkpoint when the build is rerun."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from taskbal.artifacts import EVAL_SUMMARY, RESUME, TRAIN_SUMMARY, run_file
from taskbal.plan import load_plan
from test_tracking_server import running_server
from workspaces import copy_workflow, snakemake

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SCRIPT = Path(__file__).resolve().parents[1] / "tools/slurm_localhost.sh"
TABLE = "simol_table5"
TABLE_FILES = [f"results/tables/tiny/{TABLE}.{suffix}" for suffix in ("csv", "md", "tex")]
GPU_TABLE = "nash_table5"  # marked as needing a GPU in the test's copy; one of its training jobs runs
# Both builds alike: the checkpoint interval is a parameter of the training jobs.
CONFIG = ["--config", "scale=tiny", "checkpoint_every=20"]
# Status checks from the first seconds on: the profile waits 20 s, made for a busy cluster.
SLURM = ["--profile", "profiles/slurm", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
         "--verbose"]


def as_root() -> list[str] | None:
    """How to run a command as root here: directly, through passwordless sudo, or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def installed(package: str) -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True)
    return status.stdout.strip() == "install ok installed"


def install_slurm(root: list[str]) -> str | None:
    """Debian's Slurm and munge, installed when missing; the reason they cannot be, else None."""
    if not shutil.which("dpkg-query"):
        return "not a Debian system: install slurmctld, slurmd, slurm-client and munge to run this test"
    missing = [package for package in PACKAGES if not installed(package)]
    if not missing:
        return None
    install = [*root, "apt-get", "install", "-y", "--no-install-recommends", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:
        subprocess.run([*root, "apt-get", "update"], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            return f"apt-get could not install {' '.join(missing)}: {result.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def cluster():
    """The one-node cluster with one (device-less) GPU, started for this module and always stopped."""
    root = as_root()
    if root is None:
        pytest.skip("starting Slurm needs root or passwordless sudo")
    reason = install_slurm(root)
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp_path: the daemons run as root and the munge user.
    folder = Path(tempfile.mkdtemp(prefix="taskbal-slurm-"))
    command = [*root, "env", f"SLURM_LOCAL_DIR={folder}", "SLURM_LOCAL_GPUS=1", str(SCRIPT)]
    try:
        started = subprocess.run([*command, "start"], capture_output=True, text=True)
        if started.returncode == 3:  # the script refused, changing nothing
            pytest.skip(started.stderr.strip())
        assert started.returncode == 0, f"the cluster did not start:\n{started.stdout}{started.stderr}"
        assert len(daemons_of(folder)) == 2
        yield folder
    finally:
        subprocess.run([*command, "stop"], capture_output=True)
        assert not daemons_of(folder), "tools/slurm_localhost.sh stop left daemons running"
        subprocess.run([*root, "rm", "-rf", str(folder)], capture_output=True)


def daemons_of(folder: Path) -> list[str]:
    """The Slurm daemons running with this cluster's configuration."""
    found = subprocess.run(["pgrep", "-af", "--", f"(slurmctld|slurmd) -f {folder}/slurm.conf"], capture_output=True,
                           text=True)
    assert found.returncode in (0, 1), found.stderr  # 1: none
    return found.stdout.splitlines()


def new_copy(repo, folder: Path) -> Path:
    folder.mkdir()
    copy_workflow(repo, folder)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return folder


def edit_table(work: Path, name: str, edit) -> None:
    path = work / f"config/tables/{name}.yaml"
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def runs_of(work: Path, table: str, only: bool = False) -> list[str]:
    """Tiny-scale runs of a table (``only``: those that serve no other table)."""
    plan = load_plan(work / "config/tables", work / "workflow/schemas", [], cache_dir=work / ".cache/plan")
    return sorted(run for (scale, run), tables in plan.tables_of_run.items()
                  if scale == "tiny" and table in tables and (not only or tables == {table}))


def sbatch_calls(log: str) -> dict[str, str]:
    """The submitted sbatch command lines (snakemake --verbose), by the job's comment
    (rule_<rule>_wildcards_<values>)."""
    calls = {}
    for line in log.splitlines():
        if "sbatch call:" in line:
            comment = re.search(r"--comment '?(rule_[^' ]+)", line)
            calls[comment.group(1)] = line.split("sbatch call:", 1)[1].strip()
    return calls


def accounted_jobs() -> dict[str, str]:
    """The controller's record of each job it still knows (scontrol), by the job's comment."""
    shown = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True)
    return {re.search(r"Comment=(\S+)", line).group(1): line for line in shown.stdout.splitlines()
            if "Comment=" in line}


def finished_runs(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("select name, status from runs").fetchall())


@pytest.fixture(scope="module")
def builds(cluster, repo, tmp_path_factory, tool_env):
    """simol_table5 at tiny scale built locally and through the Slurm profile (plus one training job
    of a table marked as needing a GPU); yields both copies and the Slurm build's log."""
    folder = tmp_path_factory.mktemp("slurm-builds")
    local, on_slurm = new_copy(repo, folder / "local"), new_copy(repo, folder / "slurm")
    edit_table(on_slurm, GPU_TABLE, lambda spec: spec.update(resources={"tiny": {"gpu": 1}}))
    gpu_run = runs_of(on_slurm, GPU_TABLE, only=True)[0]
    # The plugin's partition selection, as the README tells users: GPU jobs to the GPU partition.
    partitions = folder / "partitions.yaml"
    partitions.write_text(yaml.safe_dump({"partitions": {"debug": {"max_gpu": 0}, "gpu": {"max_gpu": 1}}}))
    snakemake(["--cores", "2", "--quiet", *CONFIG, "--", TABLE], local, tool_env)
    started = time.monotonic()
    built = snakemake([*SLURM, "--slurm-partition-config", str(partitions), *CONFIG, "--", TABLE,
                       run_file("tiny", gpu_run, 0, TRAIN_SUMMARY)], on_slurm, tool_env)
    print(f"Slurm build: {time.monotonic() - started:.0f} s")
    yield {"local": local, "slurm": on_slurm, "log": built.stdout + built.stderr, "gpu_run": gpu_run,
           "jobs": accounted_jobs()}


@pytest.mark.slow
def test_the_table_built_on_slurm_equals_the_local_build(builds):
    for name in TABLE_FILES:
        assert (builds["slurm"] / name).read_bytes() == (builds["local"] / name).read_bytes(), name
    calls = sbatch_calls(builds["log"])
    # 3 rows × 2 readings of the inner optimiser × 2 seeds, 1 GPU job, and the 2 points × 2 readings of
    # Appendix D's grid search (one seed) that choose SIMOL's settings
    assert sum(comment.startswith("rule_train_") for comment in calls) == 3 * 2 * 2 + 1 + 2 * 2
    assert sum(comment.startswith("rule_evaluate_") for comment in calls) == 3 * 2 * 2


@pytest.mark.slow
def test_only_the_table_that_needs_a_gpu_asks_sbatch_for_one_in_the_gpu_partition(builds):
    calls, jobs = sbatch_calls(builds["log"]), builds["jobs"]
    train_jobs = [comment for comment in calls if comment.startswith("rule_train_")]
    gpu_jobs = [comment for comment in train_jobs if builds["gpu_run"] in comment]
    assert len(gpu_jobs) == 1
    print("submitted:", calls[gpu_jobs[0]], "|", calls[next(c for c in train_jobs if c not in gpu_jobs)])
    for comment in train_jobs:
        wants_gpu = comment in gpu_jobs
        assert ("--gpus=1" in calls[comment]) == wants_gpu, calls[comment]
        # The controller scheduled the request against the node's GPU (TresPerJob is absent without one).
        assert ("TresPerJob=gres:gpu:1" in jobs[comment]) == wants_gpu, jobs[comment]
        assert f"Partition={'gpu' if wants_gpu else 'debug'} " in jobs[comment], jobs[comment]
        assert "JobState=COMPLETED" in jobs[comment]


@pytest.mark.slow
def test_every_compute_job_logged_to_the_submit_hosts_tracking_file(builds):
    work = builds["slurm"]
    runs = finished_runs(work / "results/mlflow/mlflow.db")
    folders = [path.parent for path in work.glob("results/runs/tiny/*/seed*/" + TRAIN_SUMMARY)]
    expected = {f"train {folder.parent.name} {folder.name}" for folder in folders}
    # the grid's search runs are trained, not evaluated (the selection reads their curves)
    expected |= {f"evaluate {folder.parent.name} {folder.name}" for folder in folders
                 if builds["gpu_run"] not in str(folder) and (folder / EVAL_SUMMARY).exists()}
    assert len(expected) == 2 * 3 * 2 * 2 + 1 + 2 * 2
    assert runs == {name: "FINISHED" for name in expected}


@pytest.mark.slow
def test_a_training_job_killed_by_slurm_resumes_when_the_build_is_rerun(builds, repo, tool_env, tmp_path):
    """The 4-layer row trains longer here; one of its jobs is cancelled once it has checkpointed, the
    build fails, the rerun resubmits the job, which resumes; the table equals an uninterrupted build.
    The compute jobs log to an MLflow server the submit host names (tracking_uri)."""
    local, on_slurm = builds["local"], builds["slurm"]
    before = set(runs_of(on_slurm, TABLE))
    for work in (local, on_slurm):
        edit_table(work, TABLE, lambda spec: spec["rows"][2]["set"].update(outer={"iterations": 400}))
    longer = sorted(set(runs_of(on_slurm, TABLE)) - before)
    assert len(longer) == 2  # the row's two readings of the inner optimiser
    snakemake(["--cores", "2", "--quiet", *CONFIG, "--", TABLE], local, tool_env)

    with running_server(repo, f"sqlite:///{tmp_path}/mlflow.db", tmp_path, tool_env) as uri:
        command = ["snakemake", *SLURM, *CONFIG, f"tracking_uri={uri}", "--", TABLE]
        first = subprocess.Popen(command, cwd=on_slurm, env=tool_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        victim = cancel_once_checkpointed(on_slurm, longer[0], first)
        first_log = first.communicate(timeout=600)[0]
        assert first.returncode != 0, f"the build succeeded although {victim} was cancelled:\n{first_log}"
        assert (on_slurm / victim.parent / RESUME).exists()
        snakemake(command[1:], on_slurm, tool_env)

        resumed = json.loads((on_slurm / victim).read_text())
        assert 0 < resumed["resumed_from"] < resumed["iterations"] == 400
        for name in TABLE_FILES:
            assert (on_slurm / name).read_bytes() == (local / name).read_bytes(), name
        import mlflow
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("taskbal")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        names = sorted(run.info.run_name for run in runs)
        folders = [folder for run in longer for folder in sorted((on_slurm / "results/runs/tiny" / run).glob("seed*"))]
        assert len(folders) == 2 * 2  # the longer row's two readings × the tiny seeds
        expected = sorted(f"{kind} {folder.parent.name} {folder.name}" for kind in ("train", "evaluate")
                          for folder in folders)
        assert names == expected  # one MLflow run per job: the resumed job continued its killed attempt's
        assert {run.info.status for run in runs} == {"FINISHED"}


def cancel_once_checkpointed(work: Path, run: str, build: subprocess.Popen) -> Path:
    """scancel the first training job of ``run`` that has written a checkpoint; its train.json path."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and build.poll() is None:
        for seed in range(3):
            if (work / run_file("tiny", run, seed, RESUME)).exists():
                job = job_id(f"rule_train_wildcards_tiny_{run}_{seed}")
                if job:
                    subprocess.run(["scancel", job], check=True)
                    return Path(run_file("tiny", run, seed, TRAIN_SUMMARY))
        time.sleep(0.1)
    raise AssertionError(f"no training job of {run} checkpointed while the build ran")


def job_id(comment: str) -> str | None:
    queue = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, check=True)
    for line in queue.stdout.splitlines():
        job, _, listed = line.partition(" ")
        if listed == comment:
            return job
    return None


def job_resources(dry_run: str) -> dict[str, dict[str, str]]:
    """Each job's resources in a dry run's job list, by its output's run folder."""
    jobs, output = {}, None
    for line in dry_run.splitlines():
        line = line.strip()
        if line.startswith("output:"):
            output = line.split()[1].rstrip(",")
        elif line.startswith("resources:") and output:
            jobs[str(Path(output).parent)] = dict(item.split("=", 1) for item in line[len("resources:"):].split(", "))
    return jobs


def test_a_tables_resources_reach_its_jobs_and_no_others(repo, tool_env, tmp_path):
    """Without a cluster: what each job would ask Slurm for (a dry run's job list)."""
    work = new_copy(repo, tmp_path / "work")
    edit_table(work, GPU_TABLE, lambda spec: spec.update(resources={"tiny": {"gpu": 1, "mem_mb": 3000}}))
    # nash_table2 shares its MAML runs with nash_table5 and asks for more memory: a shared run gets the most.
    edit_table(work, "nash_table2", lambda spec: spec.update(resources={"tiny": {"mem_mb": 5000}}))
    gpu_only, shared = runs_of(work, GPU_TABLE, only=True)[0], sorted(set(runs_of(work, GPU_TABLE)) - set(
        runs_of(work, GPU_TABLE, only=True)))[0]
    cpu = runs_of(work, TABLE)[0]
    targets = [run_file("tiny", run, 0, TRAIN_SUMMARY) for run in (gpu_only, shared, cpu)]
    for mode, gpu_key, asked, none in (("gpus", "gpu", "1", "0"), ("gres", "gres", "gpu:1", "")):
        dry_run = snakemake(["-n", "--config", "scale=tiny", f"gpu_request={mode}", "--", *targets], work,
                            tool_env).stdout
        jobs = job_resources(dry_run)
        folders = {run: str(Path(run_file("tiny", run, 0, TRAIN_SUMMARY)).parent) for run in (gpu_only, shared, cpu)}
        assert jobs[folders[gpu_only]][gpu_key] == asked and jobs[folders[gpu_only]]["mem_mb"] == "3000"
        assert jobs[folders[shared]][gpu_key] == asked and jobs[folders[shared]]["mem_mb"] == "5000"
        assert jobs[folders[cpu]].get(gpu_key, none) == none and jobs[folders[cpu]]["mem_mb"] == "2000"
        assert jobs[folders[cpu]]["runtime"] == "120"
