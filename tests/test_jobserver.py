"""The job server (taskbal.jobserver): a command it runs writes what the job's own process would, exits
with its code, gets the job's signals, ends when its job dies; and a job runs itself whenever no server
takes it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import small_experiment
from taskbal import jobserver
from taskbal.data import sinusoid
from test_loop import assert_same_outputs, train_command


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A job server of this test process, and its log."""
    log = tmp_path_factory.mktemp("jobserver") / "server.log"
    path = jobserver.start(log, idle_seconds=600)
    assert path is not None, log.read_text()
    os.environ.pop(jobserver.ENV)  # each test says whether its jobs go to the server
    yield path, log
    jobserver.stop(path)


def served(env: dict, path: str) -> dict:
    return {**env, jobserver.ENV: path}


def commands_in(log, since: int = 0) -> list[tuple[int, str]]:
    return [(int(pid), command) for pid, command in
            re.findall(r"command (\d+) started: taskbal (.*)", log.read_text()[since:])]


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.1)


def test_a_served_training_writes_the_files_of_its_own_process(server, tmp_path, tool_env):
    path, log = server
    experiment = small_experiment({"name": "mgda"}, iterations=12)
    split = tmp_path / "split.npz"
    sinusoid.write_splits(split, experiment["data"])
    since = len(log.read_text())
    for name, env in (("served", served(tool_env, path)), ("own", tool_env)):
        done = subprocess.run(["taskbal", *train_command(experiment, split, tmp_path / name)], env=env,
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "train seed 3" in done.stderr  # the progress bar reached the job's own stderr
    assert_same_outputs(tmp_path / "served", tmp_path / "own")
    ran = commands_in(log, since)
    assert len(ran) == 1 and str(tmp_path / "served" / "final.pt") in ran[0][1]  # the second ran on its own


def test_exit_codes_and_messages_are_the_commands(server, tmp_path, tool_env):
    path, log = server
    for args, code in ((["bogus"], 2), (["train", "--spec", "{", "--split", "x"], 2), (["data", "list"], 0)):
        results = [subprocess.run(["taskbal", *args], env=env, capture_output=True, text=True, cwd=tmp_path)
                   for env in (served(tool_env, path), tool_env)]
        assert [r.returncode for r in results] == [code, code], args
        assert results[0].stdout == results[1].stdout and results[0].stderr == results[1].stderr, args


def long_training(tmp_path):
    experiment = small_experiment({"name": "mean"}, iterations=1_000_000)
    split = tmp_path / "split.npz"
    sinusoid.write_splits(split, experiment["data"])
    return ["taskbal", *train_command(experiment, split, tmp_path / "run")]


def test_sigterm_reaches_the_command(server, tmp_path, tool_env):
    path, log = server
    since = len(log.read_text())
    job = subprocess.Popen(long_training(tmp_path), env=served(tool_env, path), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    wait_for(lambda: (tmp_path / "run" / "resume.pt").exists())  # training is under way
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 143 and "taskbal train: stopped by SIGTERM" in stderr  # as in the job's own process
    assert re.search(r"command \d+ ended with 143", log.read_text()[since:])


def test_a_job_that_dies_takes_its_command_with_it(server, tmp_path, tool_env):
    path, log = server
    since = len(log.read_text())
    job = subprocess.Popen(long_training(tmp_path), env=served(tool_env, path), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=tmp_path)
    wait_for(lambda: (tmp_path / "run" / "resume.pt").exists())
    [(command, _)] = commands_in(log, since)
    job.kill()  # SIGKILL: nothing can be passed on
    job.wait()
    wait_for(lambda: f"command {command} ended" in log.read_text()[since:])
    with pytest.raises(ProcessLookupError):
        os.kill(command, 0)


def test_jobs_run_themselves_when_no_server_takes_them(server, tmp_path, tool_env, monkeypatch):
    path, log = server
    monkeypatch.setenv(jobserver.ENV, str(tmp_path / "no-such-socket"))
    assert jobserver.forward(["data", "list"]) is None
    monkeypatch.setenv(jobserver.ENV, path)
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # a cluster job keeps to its own allocation
    assert jobserver.forward(["data", "list"]) is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setattr(jobserver, "identity", lambda: {"python": "/another/python", "package": "elsewhere"})
    since = len(log.read_text())
    assert jobserver.forward(["data", "list"]) is None  # another interpreter or package: refused
    assert "refused a job of /another/python" in log.read_text()[since:]
    done = subprocess.run(["taskbal", "data", "list"], env=served(tool_env, path), capture_output=True, text=True)
    assert done.returncode == 0 and "omniglot" in done.stdout


def test_the_server_ends_with_its_build(tmp_path, tool_env):
    build = subprocess.Popen(["sleep", "120"])
    folder = tmp_path / "s"
    folder.mkdir()
    path = folder / jobserver.SOCKET_NAME
    server = subprocess.Popen([sys.executable, "-m", "taskbal.jobserver.server", "--socket", str(path), "--parent",
                               str(build.pid)], env=tool_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    wait_for(lambda: path.exists())
    build.kill()
    build.wait()
    assert server.wait(timeout=30) == 0
    assert "stopped" in server.stdout.read() and not folder.exists()  # its socket folder is gone


def test_a_server_whose_build_has_already_ended_leaves_nothing(tmp_path, tool_env):
    build = subprocess.Popen(["true"])
    build.wait()  # reaped: its pid names no process
    folder = tmp_path / "s"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-m", "taskbal.jobserver.server", "--socket",
                           str(folder / jobserver.SOCKET_NAME), "--parent", str(build.pid)], env=tool_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "has already ended; not started" in done.stdout, done.stdout + done.stderr
    assert not folder.exists()
