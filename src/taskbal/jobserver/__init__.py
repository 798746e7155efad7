"""A warm process that runs the workflow's commands, so that a job does not pay the imports.

Every job of a local Snakemake build is a new ``taskbal`` process, and before its first line of work it
imports torch, the ``torch._dynamo`` that ``torch.optim`` loads on its first step, MLflow and pandas:
seconds that every job pays again, hundreds of times in a tiny build. With the job server, the
workflow's ``onstart`` starts one process (``python -m taskbal.jobserver.server``) that imports all of that
once. Each job's ``taskbal`` command then connects to it over a Unix socket and hands it its arguments,
working directory, environment and its stdin / stdout / stderr; the server forks a child that runs the
command as :func:`taskbal.cli.main` would in the job's own process, writing to the job's own log. The
job's process waits for the child's exit status and exits with it. A signal it gets (SIGTERM from
Snakemake, Ctrl-C) is passed on to the child's process group, and if the job's process dies the
server terminates the child. A command reads and writes the same files either way; only the start-up
differs. Whenever the server cannot take a job (none running, not ready yet, another Python or package
than the job's), the job runs in its own process, as without the server.

Where it is used: config ``job_server: true`` (the default) and jobs that run on this machine. Not for
a cluster's jobs (Slurm): their processes must stay inside their own allocation, so a job that sees
``SLURM_JOB_ID`` never forwards.

Why forking is safe here: the server only imports modules. It runs no torch operation (so no thread
pool exists to be lost in the fork), never initialises CUDA (each child does that itself, after
taking the job's environment, ``CUDA_VISIBLE_DEVICES`` included) and opens no database or MLflow
store. Only the job's own user may connect (the socket sits in a private folder, and the server checks
the peer's user id).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = "TASKBAL_JOB_SERVER"  # the socket of the build's job server, set by the workflow's onstart
SOCKET_NAME = "socket"
HEADER = struct.Struct("!i")  # every number on the socket: the request's length, the child's pid, its exit code
REFUSED = 0  # the pid the server sends when it will not run the job (the job then runs in its own process)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

def identity() -> dict:
    """What a job and the server must share for the server to run the job: the interpreter and the package."""
    return {"python": os.path.realpath(sys.executable), "package": str(Path(__file__).resolve().parent.parent)}


# -- the job's side ------------------------------------------------------------------------------------

def forward(argv: list[str]) -> int | None:
    """Run ``taskbal argv`` in the build's job server; its exit code, or None if no server took the job
    (nothing has run then, and the caller runs the command itself)."""
    path = os.environ.get(ENV)
    if not path or "SLURM_JOB_ID" in os.environ:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    opened = []
    try:
        connection.connect(path)
        fds = []
        for fd in (0, 1, 2):
            try:
                os.fstat(fd)
                fds.append(fd)
            except OSError:  # a closed stdin (CI runs without one): the child gets /dev/null
                opened.append(os.open(os.devnull, os.O_RDWR))
                fds.append(opened[-1])
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), **identity()}).encode()
        socket.send_fds(connection, [HEADER.pack(len(request))], fds)
        connection.sendall(request)
        pid = _read_number(connection)
    except OSError:
        connection.close()
        return None
    finally:
        for fd in opened:
            os.close(fd)
    if pid in (None, REFUSED):
        connection.close()
        return None
    with connection:
        return _wait_for(connection, pid)


def _wait_for(connection: socket.socket, pid: int) -> int:
    def pass_on(signum, frame):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, pass_on)
    code = _read_number(connection)
    if code is None:
        print(f"taskbal: the job server stopped before command {pid} ended", file=sys.stderr)
        return 1
    return code


def _read_number(connection: socket.socket) -> int | None:
    data = b""
    while len(data) < HEADER.size:
        part = connection.recv(HEADER.size - len(data))
        if not part:
            return None
        data += part
    return HEADER.unpack(data)[0]


# -- the workflow's side -------------------------------------------------------------------------------

def start(log: Path | str, idle_seconds: float = 600.0, ready_within: float = 60.0) -> str | None:
    """Start a job server for this process's jobs and wait until it takes jobs; its socket path (also set
    as ``TASKBAL_JOB_SERVER`` in this process's environment, which the jobs inherit), or None if it did
    not come up (the jobs then run in their own processes). It ends when this process ends, after
    ``idle_seconds`` without a job, or on :func:`stop`."""
    folder = tempfile.mkdtemp(prefix="taskbal-jobs-")  # private (0700) and short: a socket path has ~100 bytes
    path = os.path.join(folder, SOCKET_NAME)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "taskbal.jobserver.server", "--socket", path, "--parent",
                                   str(os.getpid()), "--idle", str(idle_seconds)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline and server.poll() is None:
        if _answers(path):
            os.environ[ENV] = path
            return path
        time.sleep(0.05)
    stop(path, server.pid)
    return None


def stop(path: str | None = None, pid: int | None = None) -> None:
    """Stop the job server (its socket ``path``, default this process's); running commands finish."""
    path = path or os.environ.pop(ENV, None)
    if path is None:
        return
    try:
        pid = pid or int(Path(path).with_name("pid").read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
