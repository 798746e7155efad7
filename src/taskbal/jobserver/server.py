"""The job server itself (``python -m taskbal.jobserver.server``, started by ``taskbal.jobserver.start``):
it imports what the commands need once, then forks one child per job that runs the job's command as
:func:`taskbal.cli.main`. How jobs reach it and why this is safe: :mod:`taskbal.jobserver`."""
from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path

from . import ENV, HEADER, REFUSED, SOCKET_NAME, identity

# What every command would import on its own: the train and evaluate path (torch, torch.optim's dynamo,
# MLflow and its SQL store), the table and figure path (pandas, matplotlib), every task family.
PRELOAD = ("taskbal.cli", "torch", "torch._dynamo", "torch.optim", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "taskbal.tracking", "taskbal.train", "taskbal.evaluate", "taskbal.tables", "taskbal.figures",
           "taskbal.report", "pandas", "matplotlib.pyplot")


class Server:
    """One listening socket, one child per job; single-threaded (a forked child of a threaded process
    could inherit locks held by other threads), waiting on the socket, the jobs' connections and the
    children's pidfds."""

    def __init__(self, path: str, parent: int, idle_seconds: float):
        self.idle_seconds = idle_seconds
        self.selector = selectors.DefaultSelector()
        # The build's pidfd before the socket: once the socket exists (what a client waits for), the build's
        # end is always seen. A build gone before this raises ProcessLookupError, and no socket is left behind.
        self.parent = os.pidfd_open(parent)
        self.selector.register(self.parent, selectors.EVENT_READ, ("parent", None))
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(128)
        self.selector.register(self.listener, selectors.EVENT_READ, ("listener", None))
        self.jobs: dict[int, tuple[int, socket.socket, float]] = {}  # pidfd -> (pid, the job's connection, start)
        self.listening, self.stop_asked = True, False
        self.last_job = time.monotonic()

    def run(self) -> None:
        while self.jobs or (self.listening and time.monotonic() - self.last_job < self.idle_seconds):
            for key, _ in self.selector.select(timeout=1.0):
                kind, item = key.data
                if kind == "listener" and self.listening:
                    self.accept()
                elif kind == "parent":  # the build ended: take no more jobs, end when the running ones have
                    self.stop_listening()
                elif kind == "child":
                    self.finished(key.fileobj)
                elif kind == "job":
                    self.job_hung_up(item)
            if self.stop_asked:  # SIGTERM (the build's onsuccess / onerror)
                self.stop_listening()
            if self.jobs:
                self.last_job = time.monotonic()

    def stop_listening(self) -> None:
        if self.listening:
            self.listening = False
            for fileobj in (self.listener, self.parent):
                self.selector.unregister(fileobj)
            self.listener.close()
            os.close(self.parent)

    def accept(self) -> None:
        connection, _ = self.listener.accept()
        try:
            pid, argv = self.start_job(connection)
        except (OSError, ValueError) as error:
            print(f"job server: a request failed: {error!r}", file=sys.stderr, flush=True)
            pid = None
        if pid is None:
            connection.close()
            return
        shown = ["…" if before == "--spec" else arg for before, arg in zip(["", *argv], argv)]  # not the long JSON
        print(f"job server: command {pid} started: taskbal {' '.join(shown)}", flush=True)
        pidfd = os.pidfd_open(pid)
        self.jobs[pidfd] = (pid, connection, time.monotonic())
        self.selector.register(pidfd, selectors.EVENT_READ, ("child", None))
        self.selector.register(connection, selectors.EVENT_READ, ("job", pidfd))
        try:
            connection.sendall(HEADER.pack(pid))
        except OSError:  # the job's process is gone already: end its command
            self.job_hung_up(pidfd)

    def start_job(self, connection: socket.socket) -> tuple[int | None, list[str]]:
        """Read a job's request and fork its child; the child's pid (None if refused) and the command."""
        creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            return None, []
        connection.settimeout(10.0)
        message, fds, _, _ = socket.recv_fds(connection, HEADER.size, 3)
        if not message and not fds:  # a probe of whether the server is up (``start``)
            return None, []
        try:
            if len(message) != HEADER.size or len(fds) != 3:
                raise ValueError("a request without its length and three file descriptors")
            (length,) = HEADER.unpack(message)
            body = b""
            while len(body) < length:
                part = connection.recv(length - len(body))
                if not part:
                    raise ValueError("a request cut short")
                body += part
            request = json.loads(body)
            if {key: request.get(key) for key in identity()} != identity():
                print(f"job server: refused a job of {request.get('python')}, {request.get('package')}", flush=True)
                connection.sendall(HEADER.pack(REFUSED))  # another interpreter or package: the job runs itself
                return None, []
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                exit_child(self.run_child(request, fds, connection))
            return pid, request["argv"]
        finally:
            for fd in fds:
                os.close(fd)

    def run_child(self, request: dict, fds: list[int], connection: socket.socket) -> int:
        """The job's command in this forked child, with the job's stdio, folder and environment."""
        try:
            os.setpgid(0, 0)  # the job's signals reach the command and anything it starts
            self.close_server_files(connection)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update({key: value for key, value in request["env"].items() if key != ENV})
            sys.argv = ["taskbal", *request["argv"]]
            from taskbal.cli import main

            main(request["argv"])
            return 0
        except SystemExit as exit:
            if isinstance(exit.code, str):
                print(exit.code, file=sys.stderr)
                return 1
            return exit.code or 0
        except BaseException:
            traceback.print_exc()
            return 1

    def close_server_files(self, connection: socket.socket) -> None:
        """In a child: the server's sockets and pidfds (a job waiting for its exit code must see the
        server end, not a child that still holds its connection)."""
        connection.close()
        if self.listening:
            self.listener.close()
            os.close(self.parent)
        for pidfd, (_, job, _) in self.jobs.items():
            os.close(pidfd)
            job.close()
        self.selector.close()

    def finished(self, pidfd: int) -> None:
        pid, connection, started = self.jobs.pop(pidfd)
        self.selector.unregister(pidfd)
        try:
            self.selector.unregister(connection)
        except KeyError:  # unregistered already: the job's process hung up
            pass
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(f"job server: command {pid} ended with {code} after {time.monotonic() - started:.1f} s", flush=True)
        try:
            connection.sendall(HEADER.pack(code if code >= 0 else 128 - code))  # a signal N: 128 + N, as a shell says
        except OSError:
            pass
        connection.close()

    def job_hung_up(self, pidfd: int) -> None:
        """The job's process closed its connection (it died) while its command runs: end the command."""
        pid, connection, _ = self.jobs[pidfd]
        self.selector.unregister(connection)
        print(f"job server: the job of command {pid} hung up: ending the command", flush=True)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def exit_child(code: int) -> None:
    """End a job's child as the job's own process would end (its non-daemon threads joined, its atexit
    handlers run, its output flushed), but without tearing the interpreter down: freeing every object of
    the preloaded modules one by one takes seconds and changes nothing, as the process ends."""
    import atexit
    import threading

    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve(path: str, parent: int, idle_seconds: float) -> None:
    import importlib

    from taskbal.data import FAMILIES

    for name in (*PRELOAD, *(module for module in FAMILIES.values() if isinstance(module, str))):
        importlib.import_module(name)
    try:
        server = Server(path, parent, idle_seconds)
    except ProcessLookupError:
        print(f"job server: the build (process {parent}) has already ended; not started", flush=True)
        remove_folder(path)
        return
    me = os.getpid()
    Path(path).with_name("pid").write_text(str(me))

    def asked_to_stop(signum, frame):
        server.stop_asked = True

    signal.signal(signal.SIGTERM, asked_to_stop)
    print(f"job server {me}: taking jobs at {path}", flush=True)
    try:
        server.run()
    finally:
        for name in (SOCKET_NAME, "pid"):
            Path(path).with_name(name).unlink(missing_ok=True)
        remove_folder(path)
        print(f"job server {me}: stopped", flush=True)


def remove_folder(path: str) -> None:
    """The socket's folder, if nothing else is in it."""
    try:
        os.rmdir(Path(path).parent)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent", type=int, required=True, help="the build's process: the server ends with it")
    parser.add_argument("--idle", type=float, default=600.0, help="seconds without a job before it ends")
    args = parser.parse_args(argv)
    serve(args.socket, args.parent, args.idle)


if __name__ == "__main__":
    main()
