"""A local run stopped from outside (Ctrl-C, SIGTERM) leaves a record that says so.

`entgan run` sets ENTGAN_DRIVER ("<host>:<pid>") for its tasks, which tag the MLflow run with it.
When the run is interrupted, `close_interrupted_run` records the stage in progress as Failed
("interrupted"), reports a half-finished deploy per type, and ends the MLflow run as KILLED.
`stop_on_interrupt` makes the interruption stop the run at once (no task retried after it).
`mark_stale` shows a run that is still RUNNING but whose `entgan run` process is gone (killed
with -9, a crashed machine) as STALE in `entgan status`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

from entgan.job.lifecycle import DRIVER_ENV, DRIVER_TAG, TYPES_TAG, Stage, driver_gone, interrupted_changes


@contextlib.contextmanager
def driver_env():
    """ENTGAN_DRIVER set to this process while a local run is in progress."""
    previous = os.environ.get(DRIVER_ENV)
    os.environ[DRIVER_ENV] = f"{socket.gethostname()}:{os.getpid()}"
    try:
        yield os.environ[DRIVER_ENV]
    finally:
        if previous is None:
            os.environ.pop(DRIVER_ENV, None)
        else:
            os.environ[DRIVER_ENV] = previous


class _RetryClock:
    """The `time` module as kfp.local's task executor sees it, with the retry back-off
    (`time.sleep`) cut short once the run is interrupted."""

    def __init__(self, stopped: threading.Event) -> None:
        self._stopped = stopped

    def sleep(self, seconds: float) -> None:
        self._stopped.wait(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@contextlib.contextmanager
def stop_on_interrupt(on_stop=()):
    """While inside, Ctrl-C or SIGTERM stops the run within moments whatever the pipeline's retry
    policy: no task starts after it (kfp.local would retry the interrupted tasks after their
    back-off, 30 s, and train them to the end while `entgan run` waits for its threads), the
    back-off ends at once, each `on_stop()` runs (e.g. stopping the tasks that SIGTERM did not
    reach), and KeyboardInterrupt is raised in the main thread. A SIGINT that was ignored when
    `entgan run` started (a background job of a script) stays ignored."""
    from kfp.local import subprocess_task_handler as handler
    from kfp.local.orchestrator import task_executor

    stopped = threading.Event()
    start_task, clock = handler.run_local_subprocess, task_executor.time

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        if stopped.is_set():
            print("[entgan] interrupted: no task starts (and none is retried) after Ctrl-C or SIGTERM",
                  file=sys.stderr)
            return 130
        return start_task(full_command=full_command, env_vars=env_vars)

    def interrupt(signum, frame):
        stopped.set()
        for stop in on_stop:
            stop()
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, interrupt)
    handler.run_local_subprocess, task_executor.time = run_local_subprocess, _RetryClock(stopped)
    try:
        yield stopped
    finally:
        stopped.set()  # threads kfp.local left behind start nothing more
        handler.run_local_subprocess, task_executor.time = start_task, clock
        for signum, before in previous.items():
            signal.signal(signum, before)


def our_run(library, started: float):
    """This process's newest run: tagged with our driver id, else an untagged one started since
    `started` (the server's clock may differ from ours: the tag comes first); another process's
    run is never taken for ours."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    for run in library.recent_runs(10):
        tag = run.data.tags.get(DRIVER_TAG)
        if tag == me or (tag is None and run.info.start_time / 1000 >= started - 1):
            return run
    return None


def deploy_by_type(library, run_id: str) -> str:
    """Per type the run trained (and every type the library knows), how far deploy got for this
    run: promoted, registered only, or nothing."""
    trained = [t for t in library.run_tags(run_id).get(TYPES_TAG, "").split(",") if t]
    parts = []
    for data_type in sorted(set(library.known_types()) | set(trained)):
        mine = [v for v in library.versions(data_type) if v.run_id == run_id]
        champion = library.champion(data_type)
        if not mine:
            parts.append(f"{data_type}: not registered")
        elif champion and champion.run_id == run_id:
            parts.append(f"{data_type}: v{champion.version} promoted")
        else:
            parts.append(f"{data_type}: v{mine[-1].version} registered, not promoted")
    return "; ".join(parts)


def close_interrupted_run(job, started: float) -> str:
    """Record the interruption of the job's run started by this process; return what to say."""
    from entgan.library.registry import RegistryError, library_for

    try:
        library = library_for(job)
        run = our_run(library, started)
        if run is None:
            return "interrupted before the pipeline opened a run; nothing was recorded. Run it again to start over"
        run_id = run.info.run_id
        history = library.states(run_id)
        changes = interrupted_changes(history, time.time())
        if changes and changes[0].stage is Stage.DEPLOY:  # say per type how far deploy got
            per_type = deploy_by_type(library, run_id) or "no type registered"
            changes = interrupted_changes(history, time.time(), f"interrupted during deploy: {per_type}")
        for change in changes:
            library.record_state(run_id, change)
        if run.info.status == "RUNNING":
            library.end_run(run_id, "KILLED")
    except RegistryError as err:
        return f"interrupted; the run could not be marked in MLflow ({err})"
    where = f"; {changes[0].stage.value} recorded Failed ({changes[0].detail})" if changes else ""
    return f"interrupted: MLflow run {run_id} ended KILLED{where}. Run the job again to start over"


def mark_stale(status: dict, library) -> dict:
    """`entgan status`'s dict with RUNNING runs whose local `entgan run` process is gone as STALE."""
    for run in status["runs"]:
        if run["status"] != "RUNNING":
            continue
        tag = library.client.get_run(run["mlflow_run_id"]).data.tags.get(DRIVER_TAG)
        if driver_gone(tag):
            run["status"] = "STALE"
            run["stale"] = f"its entgan run process ({tag}) is gone; the run will not finish"
    return status
