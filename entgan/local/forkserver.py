"""Pre-warmed task processes for `entgan run`: a fork server for kfp.local's subprocess runner.

kfp.local runs every task as `sh -ec '... python3 -m kfp.dsl.executor_main ...'`: a fresh Python
that imports kfp, torch and, for cloud tasks, MLflow before the step starts, about 3-5 CPU
seconds per task on a small machine, more than most steps compute (benchmark figure 4). Here one
server process imports them once; each task is a fork of it that runs the same executor on the
same command line, with its own environment, working folder and stdout. A task is still its own
process (a crash or `os._exit` ends only that task, its exit status is the task's status), so
kfp.local's statuses, logs and artifacts are what they are without the server.

    with serving():        # patches kfp.local's run_local_subprocess while the pipeline runs
        pipeline()

Protocol, over a Unix socket (one connection per task): the client sends the write end of a pipe
(the task's stdout and stderr) with a length-prefixed JSON request (source, args, env, cwd); the
server forks a supervisor, which forks the task, sends back the task's pid, waits for it and
sends its exit status (negative: killed by that signal, as `subprocess.Popen` reports it).

The socket lies in a folder only this user can open (mkdtemp: mode 0700); requests carry the
task's environment, credentials included, and nothing is logged. Linux only by default (fork
after importing torch and MLflow is not safe on macOS); anything
that is not a kfp lightweight-component command, and any failure to reach the server, runs the
plain subprocess instead. `ENTGAN_FORK_SERVER=0` (or `entgan run --fresh-processes`) turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

PRELOAD = (  # what tasks import before or during their step (found with py-spy on `entgan run`)
    "kfp.dsl.executor_main",
    "entgan.steps.job",
    "entgan.steps.plan",
    "entgan.steps.train",
    "entgan.steps.evaluate",
    "entgan.steps.deploy",
    "entgan.library.registry",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "torch._dynamo",  # imported by torch.optim on a task's first optimizer step (~1.5 s)
    "torchmetrics.image.fid",  # entgan.evaluation.features.fid_from_stats (~4 s)
)
EXECUTOR = "-m kfp.dsl.executor_main"
READY = b"ready\n"
START_TIMEOUT_S = 120.0
_LENGTH = struct.Struct("!Q")
_INT = struct.Struct("!q")


def enabled() -> bool:
    """On by default on Linux; ENTGAN_FORK_SERVER=0 turns it off."""
    return sys.platform == "linux" and os.environ.get("ENTGAN_FORK_SERVER", "1") != "0"


def parse_command(full_command: list[str]) -> tuple[str, list[str]] | None:
    """(component source, executor args) of a kfp lightweight-component command, else None.

    kfp 2.x: ['sh', '-ec', '<writes "$0" to ephemeral_component.py, runs python3 -m
    kfp.dsl.executor_main --component_module_path that file "$@">', SOURCE, *ARGS]."""
    if len(full_command) < 4 or full_command[:2] != ["sh", "-ec"]:
        return None
    script = " ".join(full_command[2].split())
    if EXECUTOR not in script or '"$program_path/ephemeral_component.py"' not in script or '"$@"' not in script:
        return None
    return full_command[3], list(full_command[4:])


# ---------------------------------------------------------------- client (the `entgan run` side)


class ServerGone(ConnectionError):
    """The server cannot be reached (it died or was stopped); the task was not started."""


class ForkServer:
    """A running server process and the socket to reach it."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD, folder_in: str | Path | None = None) -> None:
        # Named after the process that owns it, so that a folder left by a killed run is known
        # (entgan.local.scratch removes it); `folder_in` (default: the temp folder) keeps the
        # socket's path short enough for AF_UNIX (108 bytes).
        self.folder = Path(tempfile.mkdtemp(prefix=f"entgan-forkserver-{os.getpid()}-", dir=folder_in))
        self.address = str(self.folder / "socket")
        self.log = self.folder / "server.log"  # the server's own stderr (read if it fails to start)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "entgan.local.forkserver", self.address, *preload],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        self.ready: bool | None = None  # None: still importing
        self._lock = threading.Lock()  # kfp.local asks from two task threads at once
        self._running: set[int] = set()  # pids of the tasks started and not yet ended

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Blocks until the server has imported PRELOAD (False if it died or timed out)."""
        with self._lock:
            if self.ready is None:
                with selectors.DefaultSelector() as sel:
                    sel.register(self.process.stdout, selectors.EVENT_READ)
                    line = self.process.stdout.readline() if sel.select(timeout) else b""
                self.ready = line == READY
                if not self.ready:
                    error = self._error(timeout)
                    self.close()
                    print(f"[entgan] task fork server did not start ({error}); tasks start fresh processes "
                          "instead", file=sys.stderr)
            return self.ready

    def _error(self, timeout: float) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):  # its output ended: it is exiting, give it a moment
            self.process.wait(timeout=2)
        if self.process.poll() is None:
            return f"not ready after {timeout:.0f} s"
        tail = self.log.read_text(errors="replace").strip().splitlines() if self.log.exists() else []
        return tail[-1] if tail else f"exit status {self.process.returncode}"

    def run(self, source: str, args: list[str], env: dict[str, str]) -> int:
        """Runs one task in a fork of the server; streams its output through print (as kfp.local
        does). Returns its exit status."""
        read_end, write_end = os.pipe()
        pid = None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                try:
                    conn.connect(self.address)
                except OSError as err:  # nothing has started: the caller can run it the plain way
                    raise ServerGone(f"task fork server at {self.address}: {err}") from err
                request = json.dumps({"source": source, "args": args, "env": env, "cwd": os.getcwd()}).encode()
                socket.send_fds(conn, [_LENGTH.pack(len(request))], [write_end])
                conn.sendall(request)
                os.close(write_end)
                write_end = None
                pid = _INT.unpack(_recv_exactly(conn, _INT.size))[0]
                self._running.add(pid)
                with open(read_end, encoding="utf-8", errors="replace", closefd=True) as out:
                    read_end = None
                    for line in iter(out.readline, ""):
                        print(line, end="")
                print("\n")  # as kfp.local does after a task's log
                return _INT.unpack(_recv_exactly(conn, _INT.size))[0]
        except BaseException:
            if pid:  # interrupted (Ctrl-C) or the server went away: do not leave the task running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            raise
        finally:
            self._running.discard(pid)
            for fd in (read_end, write_end):
                if fd is not None:
                    os.close(fd)

    def stop_tasks(self) -> None:
        """SIGTERM to every task still running (a run interrupted by SIGTERM, which reaches only
        `entgan run`; Ctrl-C reaches the tasks too)."""
        for pid in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def serving(preload: tuple[str, ...] = PRELOAD, folder_in: str | Path | None = None):
    """While inside, kfp.local's subprocess runner starts lightweight-component tasks as forks of
    one pre-warmed server (see module docstring). Starts importing at once, in the background."""
    from kfp.local import subprocess_task_handler as handler

    server = ForkServer(preload, folder_in)
    plain = handler.run_local_subprocess

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        task = parse_command(full_command)
        if task is not None and server.wait_ready():
            try:
                return server.run(*task, env={**os.environ, **(env_vars or {})})
            except ServerGone as gone:
                server.ready = False
                print(f"[entgan] {gone}; tasks start fresh processes instead", file=sys.stderr)
        return plain(full_command=full_command, env_vars=env_vars)

    handler.run_local_subprocess = run_local_subprocess
    try:
        yield server
    finally:
        handler.run_local_subprocess = plain
        server.close()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the task fork server closed the connection (did it crash?)")
        data += chunk
    return data


# ---------------------------------------------------------------- server


def _serve(address: str) -> tuple[dict, int]:
    """Accepts tasks until terminated. Returns only in a task process: (request, stdout fd)."""
    server, parent = os.getpid(), os.getppid()  # before READY: the parent may exit right after it
    # Reap finished supervisors as they end (waited for, their CPU time counts in this process's
    # children's, and so in `entgan run`'s: benchmarks measure it with RUSAGE_CHILDREN).
    signal.signal(signal.SIGCHLD, lambda *_: _reap(block=False))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Python 3.12+ warns on fork with other OS threads; the only ones here are OpenBLAS's and the
    # allocator's, which both re-initialise in the child (pthread_atfork).
    warnings.filterwarnings("ignore", message=".*multi-threaded.*fork.*", category=DeprecationWarning)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    try:
        return _accept_tasks(listener, address, parent)
    finally:
        if os.getpid() == server:  # stopping: wait for the tasks still running (kill -9 ends that)
            _reap(block=True)


def _reap(block: bool) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, 0 if block else os.WNOHANG)[0]:
            pass


def _accept_tasks(listener: socket.socket, address: str, parent: int) -> tuple[dict, int]:
    listener.settimeout(1.0)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # `entgan run` is gone (killed): nothing will ask again
                shutil.rmtree(Path(address).parent, ignore_errors=True)  # its close() will not
                sys.exit(0)
            continue
        conn.setblocking(True)
        header, fds, _, _ = socket.recv_fds(conn, _LENGTH.size, 1)
        if not header or len(fds) != 1:  # not a client of ours
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        header += _recv_exactly(conn, _LENGTH.size - len(header))
        request = json.loads(_recv_exactly(conn, _LENGTH.unpack(header)[0]))
        if os.fork() == 0:  # supervisor: starts the task, reports its pid and exit status
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            pid = os.fork()
            if pid == 0:  # the task
                conn.close()
                return request, fds[0]
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the task; report how it ended
            os.close(fds[0])
            try:
                conn.sendall(_INT.pack(pid))
                _, wait_status = os.waitpid(pid, 0)
                conn.sendall(_INT.pack(os.waitstatus_to_exitcode(wait_status)))
            finally:  # never back into the server's loop
                os._exit(0)
        os.close(fds[0])
        conn.close()


def _run_task(request: dict, out_fd: int) -> int:
    """In the forked task: what `sh -ec` + `python3 -m kfp.dsl.executor_main` would do. Returns
    the exit status (an uncaught exception: its traceback, then 1, as Python does)."""
    import runpy
    import traceback

    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout.reconfigure(line_buffering=True)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], _KFP_RUNTIME="true")
    tempfile.tempdir = None  # the task's TMPDIR, not the one the server cached
    random.seed()  # a fresh process would draw its own seeds
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    program = Path(tempfile.mkdtemp(prefix="entgan-task-")) / "ephemeral_component.py"
    program.write_text(request["source"])
    sys.argv = ["executor_main", "--component_module_path", str(program), *request["args"]]
    try:
        runpy.run_module("kfp.dsl.executor_main", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - the task's own error, reported as Python would
        traceback.print_exc()
        return 1
    finally:  # kfp.local's own `mktemp -d` is never removed; ours is
        shutil.rmtree(program.parent, ignore_errors=True)
    return 0


def _exit(code: int) -> None:
    """End a task as Python's exit does (non-daemon threads joined, atexit handlers run, unreachable
    objects finalised, output flushed) but without tearing down the ~4,000 modules the server
    imported: that teardown alone costs about a second per task and writes nothing."""
    import atexit
    import gc

    threading._shutdown()  # what Py_Finalize calls first: stops thread pools, joins non-daemon threads
    atexit._run_exitfuncs()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: list[str]) -> int:
    address, *preload = argv
    started = time.perf_counter()
    for module in preload:
        __import__(module)
    print(f"[entgan] task fork server: imported {len(preload)} modules in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    task = _serve(address)
    _exit(_run_task(*task))  # only a forked task gets here


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
