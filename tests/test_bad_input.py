"""Bad input, tried as a hostile new user would: each case stops before any job runs (or, inside a
job, before anything is lost) with a message that names the field and the file where it is written."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import pytest

from taskbal.data.download import ChecksumError, FileSpec, verify_spec
from taskbal.io import write_arrays
from taskbal.plan import PlanError, load_plan
from taskbal.tracking import check_reachable
from workspaces import copy_workflow, snakemake


def plan_after_edit(repo, tmp_path, name: str, old: str, new: str):
    """load_plan over a copy of config/tables (and the grids beside it) with one text edit in ``name``;
    returns the PlanError."""
    tables = tmp_path / "tables"
    shutil.copytree(repo / "config/tables", tables)
    shutil.copytree(repo / "config/grids", tmp_path / "grids")
    path = tables / name
    text = path.read_text()
    assert old in text, f"the edit's anchor is gone from {name}"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PlanError) as caught:
        load_plan(tables, repo / "workflow/schemas", [], cache_dir=tmp_path / "cache")
    return str(caught.value)


@pytest.mark.parametrize("old,new,field", [
    ("    lr: 0.001\n", "    lr: .inf\n", "outer.lr"),
    ("    lr: 0.001\n", "    lr: .nan\n", "outer.lr"),
    ("    inner_lr: 0.01\n", "    inner_lr: .inf\n", "learner.inner_lr"),
    ("    outer: {iterations: 20}\n", "    outer: {iteratons: 5}\n", "outer.iteratons"),
    ("    hidden: [32, 32]     #", "    hiden: [8]     #", "model.hiden"),
    ("    outer: {iterations: 20}\n", "    outer: {iterations: 20, meta_batch: 400}\n", "outer.meta_batch"),
    ("  evaluation:\n", "  divergence: {factor: 0.5}\n  evaluation:\n", "divergence.factor"),
    ("    iterations: 10000\n", "    iterations: 10000\n    clip_grad_norm: -1\n", "outer.clip_grad_norm"),
])
def test_a_bad_experiment_value_names_the_field_and_the_file_it_is_written_in(repo, tmp_path, old, new, field):
    message = plan_after_edit(repo, tmp_path, "simol_table1.yaml", old, new)
    # simol_figure2.yaml extends simol_table1.yaml and inherits the value: the error names where it is written.
    assert message.startswith(str(tmp_path / "tables/simol_table1.yaml") + ": "), message
    assert f"{field}: " in message


@pytest.mark.parametrize("field, value", [("explosion_factor", "1"), ("explosion_factor", ".inf"),
                                          ("explosion_factor", "ten"), ("explosion_share", "1.5"),
                                          ("explosion_share", ".nan"), ("explosion_share", "0.01")])
def test_a_bad_explosion_setting_names_the_field_and_the_table(repo, tmp_path, field, value):
    message = plan_after_edit(repo, tmp_path, "nash_table2.yaml", "\nscales:", f"\n{field}: {value}\nscales:")
    assert message.startswith(str(tmp_path / "tables/nash_table2.yaml") + ": "), message
    assert field in message


@pytest.mark.parametrize("rule, field", [("{metric: simol_r_mean}", "below"),
                                         ("{metric: simol_r_mean, below: .nan}", "stall.below"),
                                         ("{metric: simol_r_mean, below: 0.01, share: 1}", "share"),
                                         ("{metric: simol_r_mean, below: 0.01, at: 3}", "at"),
                                         ("{metric: simol_r_mean, below: 0.01, above: 0.01}", "stall.above")])
def test_a_bad_stall_rule_names_the_field_and_the_table(repo, tmp_path, rule, field):
    written = "stall: {metric: simol_r_mean, below: 0.01, above: 10}"
    message = plan_after_edit(repo, tmp_path, "simol_table1.yaml", written, f"stall: {rule}")
    assert message.startswith(str(tmp_path / "tables/simol_table1.yaml") + ": "), message
    assert "stall" in message and field in message, message


def test_infinite_and_nan_options_are_refused_wherever_they_are(repo, tmp_path):
    from conftest import small_experiment
    from taskbal.runners import check_experiment

    experiment = small_experiment({"name": "simol", "theta_lr": float("nan")})
    with pytest.raises(ValueError, match=r"^weighting\.theta_lr: must be a finite number, got nan"):
        check_experiment(experiment)
    experiment = small_experiment()
    experiment["model"]["hidden"] = [16, float("inf")]
    with pytest.raises(ValueError, match=r"^model\.hidden\[1\]: must be a finite number"):
        check_experiment(experiment)


def test_a_paper_key_must_name_a_column_and_a_missing_value_is_written_as_null(repo, tmp_path):
    row = "paper: {overall_5shot: [0.43, 0.11], overall_2shot: [1.70, 0.11]"
    message = plan_after_edit(repo, tmp_path, "simol_table1.yaml", row, row.replace("overall_5shot", "overall_5shott"))
    assert "simol_table1.yaml" in message and "paper.overall_5shott: not a column key" in message
    message = plan_after_edit(repo, tmp_path / "second", "simol_table1.yaml", row,
                              "paper: {overall_2shot: [1.70, 0.11]")
    assert "no value for column 'overall_5shot'" in message and "`overall_5shot: null`" in message


def test_a_second_reading_column_borrows_the_paper_value_and_says_when_it_cannot(repo, tmp_path):
    reading = "paper_column: overall_5shot,"
    message = plan_after_edit(repo, tmp_path, "simol_table1.yaml", reading, "paper_column: overall_5shott,")
    assert "simol_table1.yaml" in message
    assert "columns ('overall_5shot_sgd').paper_column: 'overall_5shott' is not a column with the paper's" in message
    row = "paper: {overall_5shot: [0.43, 0.11],"
    message = plan_after_edit(repo, tmp_path / "second", "simol_table1.yaml", row,
                              row + " overall_5shot_sgd: [0.5, 0.1],")
    assert "paper.overall_5shot_sgd: this column takes the paper's value of column 'overall_5shot'" in message


def test_a_yaml_syntax_error_names_the_file_line_and_column(repo, tmp_path):
    message = plan_after_edit(repo, tmp_path, "simol_table1.yaml", "  model:\n", "  model: [\n")
    assert message.startswith(str(tmp_path / "tables/simol_table1.yaml") + ": line ")
    assert "not valid YAML" in message and "unicode string" not in message


def test_an_edited_split_sidecar_is_refused(tmp_path):
    from taskbal.data.sinusoid import Tasks, write_splits

    path = tmp_path / "sinusoid-5shot.npz"
    write_splits(path, dict(shots=5, query=5, train_tasks=40, val_tasks=4, test_tasks=4, split_seed=1))
    Tasks(path)  # the untouched pair reads
    sidecar = path.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"shots": 5', '"shots": 4'))
    with pytest.raises(ValueError, match=r"sinusoid-5shot\.json was changed after it was written"):
        Tasks(path)


def test_sidecars_still_catch_a_changed_array_file(tmp_path):
    from taskbal.io import verified_sidecar

    path = tmp_path / "a.npz"
    write_arrays(path, {"x": [1.0, 2.0]}, {"family": "test"})
    write_arrays(tmp_path / "b.npz", {"x": [1.0, 3.0]}, {"family": "test"})
    shutil.copy(tmp_path / "b.npz", path)
    with pytest.raises(ValueError, match="does not match"):
        verified_sidecar(path)


def test_an_empty_file_without_a_published_checksum_is_not_recorded_as_verified(tmp_path):
    spec = FileSpec(name="data.zip", urls=("http://127.0.0.1/data.zip",))
    empty = tmp_path / "data.zip"
    empty.write_bytes(b"")
    with pytest.raises(ChecksumError, match="empty file"):
        verify_spec(empty, spec)
    empty.write_bytes(b"PK")
    assert verify_spec(empty, spec) == "none"  # non-empty: its SHA-256 is recorded by the caller


def test_a_cuda_device_this_machine_lacks_stops_before_any_job(repo, tool_env, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    work = copy_workflow(repo, tmp_path)
    result = snakemake(["-n", "--config", "device=cuda:0", "--", "simol_table5"], work, tool_env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key device: 'cuda:0'" in output and "no CUDA device" in output
    assert not (work / "results").exists()


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_an_unreachable_tracking_server_stops_the_workflow_in_seconds(repo, tool_env, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ValueError, match=r"^tracking_uri: no MLflow server answers at .*config key tracking_uri"):
        check_reachable(uri)
    work = copy_workflow(repo, tmp_path)
    result = snakemake(["--cores", "1", "--config", "scale=tiny", f"tracking_uri={uri}", "--", "simol_table5"],
                       work, tool_env, check=False)
    assert result.returncode != 0
    assert "tracking_uri: no MLflow server answers" in result.stdout + result.stderr
    assert not (work / "results").exists()  # no job ran


def train_command(experiment: dict, split, out, uri: str) -> list[str]:
    import json

    return ["train", "--spec", json.dumps(experiment), "--seed", "0", "--split", str(split),
            "--final", str(out / "final.pt"), "--curve", str(out / "curve.csv"), "--summary", str(out / "train.json"),
            "--run-id", "r", "--scale", "tiny", "--tables", "t", "--experiment", "taskbal", "--tracking-uri", uri]


def test_a_tracking_server_gone_at_job_start_fails_the_job_before_it_trains(small_split, tool_env, tmp_path):
    from conftest import small_experiment

    out = tmp_path / "run" / "seed0"
    command = train_command(small_experiment(), small_split, out, f"http://127.0.0.1:{closed_port()}")
    env = {**tool_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    failed = subprocess.run([sys.executable, "-m", "taskbal.cli", *command], env=env, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "cannot start an MLflow run" in failed.stderr and "tracking_uri" in failed.stderr
    assert "Traceback" not in failed.stderr and not (out / "final.pt").exists() and not (out / "resume.pt").exists()


def test_a_finished_training_survives_a_failed_logging_and_is_logged_by_the_rerun(small_split, tmp_path,
                                                                                  monkeypatch, capsys):
    """The server answers at job start and is gone at its end: the training is kept, not thrown away."""
    import json

    from conftest import small_experiment
    from taskbal import cli, tracking

    out = tmp_path / "run" / "seed0"
    db = tmp_path / "mlflow.db"
    command = train_command(small_experiment(), small_split, out, f"sqlite:///{db}")

    def server_gone(self, metrics, artifacts=()):
        raise ConnectionError("the tracking server went away")

    with monkeypatch.context() as patch:
        patch.setattr(tracking.LiveRun, "finish", server_gone)
        with pytest.raises(SystemExit, match="The finished training is kept in"):
            cli.main(command)
    assert sorted(p.name for p in (out / ".untracked").iterdir()) == ["curve.csv", "final.pt", "train.json"]
    trained = json.loads((out / ".untracked/train.json").read_text())
    capsys.readouterr()

    cli.main(command)  # the rerun
    assert "back from" in capsys.readouterr().out
    assert json.loads((out / "train.json").read_text()) == trained and not (out / ".untracked").exists()
    with sqlite3.connect(db) as connection:  # the first attempt's run, continued and finished: one run
        assert connection.execute("select status from runs").fetchall() == [("FINISHED",)]


def test_a_killed_write_leaves_no_temporary_file_once_the_run_completes(small_split, tmp_path):
    from conftest import small_experiment
    from taskbal.train import train

    out = tmp_path / "seed0"
    out.mkdir()
    leftover = out / ".resume.pt.k1ll3d.tmp"
    leftover.write_bytes(b"")  # what a SIGKILL during a checkpoint write leaves
    train(small_experiment(iterations=4), 0, small_split, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "final.pt", "train.json"]


def test_a_timing_table_names_a_wrong_reference_row(repo, tmp_path):
    """SIMOL Table 4's extrapolated rows and ratio columns name rows of the table; a misspelt one is an error
    that names the file and the field before any job runs."""
    message = plan_after_edit(repo, tmp_path, "simol_table4.yaml", 'relative_to: "MAML"}', 'relative_to: "MAMl"}')
    assert "simol_table4.yaml" in message and "columns ('ratio').relative_to: 'MAMl' is not a row with runs" in message
    message = plan_after_edit(repo, tmp_path / "second", "simol_table4.yaml", 'extrapolate: {row: "MAML",',
                              'extrapolate: {row: "batch CAGrad",')
    assert "rows[2] ('batch MGDA').extrapolate.row: 'batch CAGrad' is not a row with runs" in message


@pytest.mark.parametrize("new,field", [
    ("evaluate_on: {dataset: cub, split_variant: anyshot, family: sinusoid}", "columns ('cub').evaluate_on.family: "),
    ("evaluate_on: {dataset: birds, split_variant: anyshot}", "evaluate_on: data.dataset"),
    ("evaluate_on: {}", "columns.1.evaluate_on: "),
])
def test_a_bad_evaluate_on_names_the_column_and_the_file(repo, tmp_path, new, field):
    message = plan_after_edit(repo, tmp_path, "tow_table3.yaml", "evaluate_on: {dataset: cub, split_variant: anyshot}",
                              new)
    assert message.startswith(str(tmp_path / "tables/tow_table3.yaml") + ": "), message
    assert field in message, message
