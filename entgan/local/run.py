"""`entgan run` on this machine: compile the job's pipeline and run that YAML with kfp.local.

Before anything starts: the state folder is writable, the task library's server answers
(`entgan.library.server_check`) and no other `entgan run` holds the state folder
(`entgan.local.lock`). While it runs: SIGTERM acts as Ctrl-C, and either one stops the run at once
(no task is retried after it) and records it as interrupted (`entgan.local.interrupted`) instead
of leaving it RUNNING. Temporary files go to a folder of the run's, removed at the end
(`entgan.local.scratch`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

from entgan.job.spec import JobSpec
from entgan.job.user_input import CliError, check_output_path
from entgan.library.server_check import bound_client_retries, check_tracking_server
from entgan.local.kfp_output import QuietStdout, thread_safe_kfp_logging


def compile_pipeline(job: JobSpec, output: str | Path | None = None) -> Path:
    """Compile the job's pipeline to KFP YAML at `output` (default: <job name>.pipeline.yaml)."""
    from pipelines.entgan_pipeline import compile_job

    output = Path(output or f"{job.name}.pipeline.yaml").expanduser()
    check_output_path(output, "-o", is_folder=False)
    try:
        path = compile_job(job, output)
    except OSError as err:  # a read-only file system, a full disk: what os.access could not tell
        raise CliError(f"-o {output}: cannot write the pipeline there ({err.strerror or err}); "
                       "choose a path you can write") from None
    print(f"pipeline of job {job.name!r} written to {path}")
    return path


def _state_dir(job: JobSpec) -> Path:
    """The job's state_dir, created; a CliError naming state_dir if it cannot be."""
    state_dir = Path(job.state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".entgan-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise CliError(f"state_dir {state_dir} cannot be used ({err.strerror or err}); set state_dir in the job "
                       "file to a folder you can write") from None
    return state_dir


def preflight(job: JobSpec) -> None:
    """Before anything waits on the task library: its server answers (bounded, announced), or
    its embedded store in state_dir can be opened."""
    bound_client_retries()
    check_tracking_server(job.tracking_uri)
    check_embedded_store(job)


def check_embedded_store(job: JobSpec) -> None:
    """An embedded store (`sqlite:///<state_dir>/mlflow.db`) that exists must be readable; one
    that does not yet must be creatable (else MLflow waits minutes, then fails on the path)."""
    prefix = "sqlite:///"
    if not job.tracking_uri.startswith(prefix):
        return
    db = Path(job.tracking_uri[len(prefix):])
    if db.is_file():
        if not os.access(db, os.R_OK):
            raise CliError(f"state_dir {db.parent}: its MLflow store {db} cannot be read; give yourself read "
                           "access or set state_dir in the job file to the folder you ran the job with")
        return
    if db.exists():
        raise CliError(f"state_dir {db.parent}: {db} is not a file (it should be the job's MLflow store); "
                       "move it away or set state_dir in the job file to another folder")
    if db.parent == Path(job.state_dir).resolve():
        _state_dir(job)  # the store is created on first use: state_dir must exist and take a new file
        return
    try:  # a store of the user's choosing elsewhere: its folder must take a new file
        probe = db.parent / ".entgan-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise CliError(f"mlflow_tracking_uri {job.tracking_uri}: {db.parent} cannot hold a new MLflow store "
                       f"({err.strerror or err}); point it at a folder you can write") from None


def run_local(job: JobSpec, base: Path | None = None, verbose: bool = False, fresh_processes: bool = False) -> dict:
    """Compile the job's pipeline and run that YAML with kfp.local (one process per task).

    Relative paths in the job are taken from `base` (default: the current folder). Returns the
    deploy step's summary; sample grids are copied to `<state_dir>/samples/<type>.png`.
    Tasks start as forks of a pre-warmed server (`entgan.local.forkserver`, which imports torch, MLflow
    and kfp once instead of once per task) unless `fresh_processes` or ENTGAN_FORK_SERVER=0.
    On Ctrl-C or SIGTERM the stage in progress is recorded Failed ("interrupted") and the MLflow
    run ends KILLED (`entgan.local.interrupted`).
    """
    from entgan.local.lock import state_dir_lock

    job = job.with_local_paths(base or Path.cwd())
    check_tracking_server(job.tracking_uri)  # before anything is written
    bound_client_retries()
    state_dir = _state_dir(job)
    with state_dir_lock(state_dir, job.name):  # one run at a time on a state_dir
        check_embedded_store(job)
        return _run_locked(job, state_dir, verbose, fresh_processes)


def _run_locked(job: JobSpec, state_dir: Path, verbose: bool, fresh_processes: bool) -> dict:
    from entgan.local import forkserver
    from entgan.local.interrupted import close_interrupted_run, driver_env, stop_on_interrupt
    from entgan.local.scratch import run_scratch

    # Two edge tasks run at once locally; give each one core's worth of threads.
    os.environ.setdefault("ENTGAN_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    started = time.time()
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(run_scratch())  # temporary files of the run and its tasks, removed at the end
        stack.enter_context(driver_env())  # tags the run with this process, for `status`
        stopping = []
        if forkserver.enabled() and not fresh_processes:  # it starts importing now, while we compile
            stopping.append(stack.enter_context(forkserver.serving(folder_in=scratch.parent)).stop_tasks)
        stack.enter_context(stop_on_interrupt(stopping))  # Ctrl-C / SIGTERM: stop now, retry nothing
        try:
            return _run_compiled(job, state_dir, verbose, started)
        except KeyboardInterrupt:
            stack.close()  # the tasks have stopped: nothing writes the record after this
            raise CliError(close_interrupted_run(job, started)) from None


def _run_compiled(job: JobSpec, state_dir: Path, verbose: bool, started_at: float) -> dict:
    import kfp.local
    import yaml
    from kfp import components

    from entgan.library.report import write_figures
    from entgan.local.progress import ProgressOutput, RunProgress, count_tasks
    from entgan.steps.deploy import copy_samples

    pipeline_file = compile_pipeline(job, state_dir / f"{job.name}.pipeline.yaml")
    pipeline = components.load_component_from_file(str(pipeline_file))
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(state_dir / "kfp"),
        raise_on_error=True,
    )
    started = time.perf_counter()
    progress = ProgressOutput(sys.stdout, RunProgress(
        count_tasks(next(yaml.safe_load_all(pipeline_file.read_text())), len(job.edges)),
        job.train.rounds, len(job.edges)))
    quiet = QuietStdout(sys.stdout, progress)
    try:
        with contextlib.redirect_stdout(sys.stdout if verbose else quiet), thread_safe_kfp_logging():
            pipeline()
    except KeyboardInterrupt:
        progress.close()
        raise
    except Exception as err:
        raise quiet.failure(err) from err
    finally:
        progress.close()
    summary = latest_summary(job, started_at)
    summary["seconds"] = time.perf_counter() - started
    grids = copy_samples(summary, state_dir / "samples")
    for t, path in grids.items():
        summary["types"][t]["grid"] = str(path)
    if any(i.get("champion") for i in summary["types"].values()):  # the README's pictures (of the champions)
        summary["figures"] = {k: str(v) for k, v in write_figures(job, state_dir / "figures").items()}
    return summary


def latest_summary(job: JobSpec, started: float | None = None) -> dict:
    """The summary of the job's run from the task library: with `started`, the run this process
    started since then (tagged with its driver id; never another process's newer run), else the
    newest. A run that waited (trigger not met) has no types and says why."""
    from entgan.library.registry import library_for
    from entgan.local.interrupted import our_run

    library = library_for(job)
    run = our_run(library, started) if started is not None else next(iter(library.recent_runs(1)), None)
    if run is None:
        raise CliError(f"job {job.name!r} has no run of this process in {job.tracking_uri}")
    run_id = run.info.run_id
    summary = library.read_json(run_id, "summary.json") or {"job": job.name, "types": {}, "mlflow_run_id": run_id}
    summary["states"] = [c.to_json() for c in library.states(run_id)]
    history = library.metric_history(run_id, ("train_cpu_s", "train_steps"))
    if history.get("train_steps"):
        summary["train_cpu"] = {"cpu_s": sum(v for _, v in history.get("train_cpu_s", [])),
                                "steps": int(sum(v for _, v in history["train_steps"]))}
    waiting = [c for c in library.states(run_id) if c.stage.value == "train" and c.detail.startswith("trigger")]
    if waiting and not summary["types"]:
        summary["waiting"] = waiting[-1].detail
    return summary
