"""An interrupted `entgan run` leaves a record that says so (issue 19, case 6): the stage in
progress Failed ("interrupted"), the MLflow run KILLED, a half-finished deploy per type; and
`entgan status` shows a run whose process is gone as STALE, not RUNNING.

Real parts: an embedded MLflow store (SQLite) and its model registry, the `entgan` CLI in a
subprocess stopped with SIGTERM, and real process ids (a finished child's pid for a gone one).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entgan.job.lifecycle import DRIVER_TAG, Stage, State, StateChange, current_states, interrupted_changes
from entgan.job.spec import parse_job
from entgan.library.registry import library_for
from tests.conftest import hang_guard, tiny_job_dict, write_job


def _history(*states: tuple[Stage, State]) -> list[StateChange]:
    return [StateChange(stage, state, float(i)) for i, (stage, state) in enumerate(states)]


def test_the_stage_in_progress_is_the_one_closed():
    # Prepare: train done, eval running, deploy waiting
    history = _history((Stage.TRAIN, State.WAITING), (Stage.EVAL, State.WAITING), (Stage.DEPLOY, State.WAITING),
                       (Stage.TRAIN, State.READY), (Stage.TRAIN, State.STARTING), (Stage.TRAIN, State.RUNNING),
                       (Stage.TRAIN, State.COMPLETED), (Stage.EVAL, State.READY), (Stage.EVAL, State.STARTING),
                       (Stage.EVAL, State.RUNNING))
    # Execute
    changes = interrupted_changes(history, 99.0)
    # Assert: only eval is closed; deploy (never started) is left as it is
    assert [(c.stage, c.state, c.detail) for c in changes] == [(Stage.EVAL, State.FAILED, "interrupted")]
    assert interrupted_changes(history + changes, 100.0) == []


def _open_run(job, driver: str, *states: tuple[Stage, State]) -> str:
    library = library_for(job)
    run_id = library.start_run("kfp-test", {}, {"entgan.kfp_run_id": "test", DRIVER_TAG: driver})
    for i, (stage, state) in enumerate(states):
        library.record_state(run_id, StateChange(stage, state, time.time() + i * 1e-3, "test"))
    return run_id


WAITING = [(s, State.WAITING) for s in Stage]
TRAINING = WAITING + [(Stage.TRAIN, State.READY), (Stage.TRAIN, State.STARTING), (Stage.TRAIN, State.RUNNING)]
DEPLOYING = TRAINING + [(Stage.TRAIN, State.COMPLETED), (Stage.EVAL, State.READY), (Stage.EVAL, State.STARTING),
                        (Stage.EVAL, State.RUNNING), (Stage.EVAL, State.COMPLETED), (Stage.DEPLOY, State.READY),
                        (Stage.DEPLOY, State.STARTING), (Stage.DEPLOY, State.RUNNING)]


@pytest.fixture
def job(tmp_path):
    return parse_job({"name": "j", "edges": [{"name": "e", "data": str(tmp_path / "e")}],
                      "state_dir": str(tmp_path / "state")})


def test_an_interrupted_training_is_recorded_failed_and_the_run_killed(job):
    from entgan.local.interrupted import close_interrupted_run

    # Prepare: a run of this process, training
    started = time.time()
    run_id = _open_run(job, f"{socket.gethostname()}:{os.getpid()}", *TRAINING)
    # Execute
    said = close_interrupted_run(job, started)
    # Assert
    library = library_for(job)
    assert library.client.get_run(run_id).info.status == "KILLED"
    last = library.states(run_id)[-1]
    assert (last.stage, last.state, last.detail) == (Stage.TRAIN, State.FAILED, "interrupted")
    assert f"MLflow run {run_id} ended KILLED; train recorded Failed (interrupted)" in said


def test_an_interrupted_deploy_is_reported_per_type(job):
    from entgan.local.interrupted import close_interrupted_run

    # Prepare: deploy running; box promoted, table registered only, robot nothing
    started = time.time()
    run_id = _open_run(job, f"{socket.gethostname()}:{os.getpid()}", *DEPLOYING)
    library = library_for(job)
    source = library.client.get_run(run_id).info.artifact_uri
    for data_type in ("box", "table", "robot"):
        library.client.create_registered_model(library.model_name(data_type))
    for data_type in ("box", "table"):
        library.client.create_model_version(library.model_name(data_type), f"{source}/{data_type}", run_id)
    library.client.set_registered_model_alias(library.model_name("box"), "champion", "1")
    # Execute
    close_interrupted_run(job, started)
    # Assert
    last = library.states(run_id)[-1]
    assert (last.stage, last.state) == (Stage.DEPLOY, State.FAILED)
    assert last.detail == ("interrupted during deploy: box: v1 promoted; robot: not registered; "
                           "table: v1 registered, not promoted")


def test_an_interrupted_deploy_names_the_types_it_had_not_reached(job):
    """Ctrl-C right after the first promotion: the types the run trained but deploy had not
    registered yet are named too (issue 26: only the library's known types were)."""
    from entgan.job.lifecycle import TYPES_TAG
    from entgan.local.interrupted import close_interrupted_run

    # Prepare: the plan tagged box, robot, table; deploy promoted box v1, nothing else registered
    started = time.time()
    run_id = _open_run(job, f"{socket.gethostname()}:{os.getpid()}", *DEPLOYING)
    library = library_for(job)
    library.tag_run(run_id, {TYPES_TAG: "box,robot,table"})
    library.client.create_registered_model(library.model_name("box"))
    source = library.client.get_run(run_id).info.artifact_uri
    library.client.create_model_version(library.model_name("box"), f"{source}/box", run_id)
    library.client.set_registered_model_alias(library.model_name("box"), "champion", "1")
    # Execute
    said = close_interrupted_run(job, started)
    # Assert
    detail = "interrupted during deploy: box: v1 promoted; robot: not registered; table: not registered"
    assert library.states(run_id)[-1].detail == detail
    assert detail in said


def test_status_shows_a_run_whose_process_is_gone_as_stale(job):
    from entgan.cli.verbs import show_status

    # Prepare: one run of a process that has ended, one of this (live) process
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    _open_run(job, f"{socket.gethostname()}:{ended.pid}", *TRAINING)
    time.sleep(0.01)
    _open_run(job, f"{socket.gethostname()}:{os.getpid()}", *TRAINING)
    # Execute
    text = show_status(job, runs=2)
    # Assert: the newest (live) run RUNNING, the older one STALE
    runs = [line for line in text.splitlines() if line.strip().startswith("run ")]
    assert "RUNNING" in runs[0] and "STALE" in runs[1], text


def test_sigterm_during_entgan_run_records_the_interruption(demo_edges, tmp_path):
    # Prepare: a tiny job long enough to be stopped while training
    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2"], train={"rounds": 3, "local_steps": 40, "batch_size": 8,
                                                                  "image_size": 16, "width": 8, "latent_dim": 8})
    data["state_dir"] = str(tmp_path / "state")
    path = write_job(tmp_path / "job.yaml", data)
    job = parse_job(data)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen([sys.executable, "-m", "entgan.cli", "run", str(path)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Execute: wait until an edge trains (its progress line), then SIGTERM
        for line in process.stdout:  # plain lines: stdout is not a terminal
            if "round 1/" in line:
                break
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=hang_guard(60))
    finally:
        if process.poll() is None:
            process.kill()
    # Assert: one line saying so; the run KILLED with train Failed (interrupted)
    assert process.returncode == 2, err
    assert "interrupted: MLflow run" in err and "ended KILLED; train recorded Failed (interrupted)" in err, err
    library = library_for(job)
    run = library.recent_runs(1)[0]
    assert run.info.status == "KILLED"
    assert current_states(library.states(run.info.run_id))[Stage.TRAIN] is State.FAILED


def test_ctrl_c_during_training_stops_at_once_and_retries_nothing(demo_edges, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the edges train:
    the interrupted tasks are not retried (the pipeline's set_retry would start them again after
    30 s and train them to the end while `entgan run` waits), and the run's temporary folder is
    gone afterwards (issue 26, items 4 and 8)."""
    # Prepare: a tiny job long enough to be stopped while training; a temp folder of the test's own
    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2"], train={"rounds": 3, "local_steps": 40, "batch_size": 8,
                                                                  "image_size": 16, "width": 8, "latent_dim": 8})
    data["state_dir"] = str(tmp_path / "state")
    path = write_job(tmp_path / "job.yaml", data)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "TMPDIR": str(tmp_path / "tmp")}
    # Ctrl-C live, as in a terminal's foreground job, even when this test runs as a background job of a
    # script (`cmd &` ignores SIGINT, the run inherits that and rightly keeps it ignored: then it trained
    # to the end and the test failed with exit status 0, or timed out)
    process = subprocess.Popen([sys.executable, "-m", "entgan.cli", "run", "-v", str(path)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    before, after = [], []
    try:
        # Execute: wait until an edge trains (its progress line), then Ctrl-C to the group
        for line in process.stdout:
            before.append(line)
            if "round 1/" in line:
                break
        assert process.poll() is None, process.communicate()
        os.killpg(process.pid, signal.SIGINT)
        try:
            out, err = process.communicate(timeout=hang_guard(120))
        except subprocess.TimeoutExpired as stuck:  # say where it hangs
            pytest.fail(f"entgan run still runs {stuck.timeout:.0f} s after Ctrl-C; {_session(process.pid)}\n"
                        f"its last output:\n{_text(stuck.output)[-3000:]}\n{_text(stuck.stderr)[-3000:]}")
        after = out.splitlines()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # Assert: one line saying so; no task started again after the interrupt; no temp files left
    assert process.returncode == 2, err
    assert "interrupted: MLflow run" in err and "train recorded Failed (interrupted)" in err, err
    assert "[entgan] interrupted: no task starts (and none is retried)" in err, err  # kfp.local tried
    for edge in ("edge-1", "edge-2"):  # a task's first line (its device): once per task started, twice if retried
        starts = [line for line in before + after
                  if f"{edge} round 1/3: " in line and "training" not in line and " step " not in line]
        assert len(starts) <= 1, starts
    assert list((tmp_path / "tmp").iterdir()) == []


def _session(sid: int) -> str:
    """The processes of a session (the run, its task server, supervisors and tasks), for a failure message."""
    ps = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,time,args", "--sid", str(sid)], capture_output=True, text=True,
                        check=False)
    return f"its processes:\n{ps.stdout}{ps.stderr}"


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")

