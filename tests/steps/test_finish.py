"""The exit step (`entgan.steps.finish`) decides a run's outcome from the stage states the
tasks recorded, whatever final status the runner hands it, and names an edge whose pod died.

Real parts: the pipeline's steps in-process (`entgan.steps.local.LocalRun`), an embedded
MLflow store. Each scenario runs once with the exit step held back; then the real exit step
runs on a copy of the store for every status string a runner can send (kfp.local, the KFP
backend's MLMD state names, the SDK docstring's spellings).
"""

import shutil

import pytest
import torch

from entgan.job.lifecycle import Stage, State, current_states
from entgan.job.spec import parse_job
from entgan.library.outcome import TRIGGER_NOT_MET
from entgan.library.registry import library_for
from entgan.steps import wiring
from entgan.steps.common import TaskContext
from entgan.steps.finish import finish
from entgan.steps.local import LocalRun, PodKilled
from entgan.steps.records import EDGE_PROGRESS_TAG, lost_edges
from tests.conftest import tiny_job_dict

torch.set_num_threads(1)
EDGES = ["edge-1", "edge-2"]
EVERY_VALUE = ["SUCCEEDED", "SUCCESS", "FAILED", "CANCELED", "CANCELLED", "COMPLETE", "RUNNING", "NEW", "CACHED",
               "UNKNOWN", ""]


def _job(root, **overrides):
    data = tiny_job_dict(root, EDGES, **overrides)
    data["train"]["rounds"] = 1
    data["eval"]["cas_steps"] = 5
    return parse_job(data)


def _run_without_finish(job, work, **kwargs):
    """Run every step except the exit step (held back so that each test runs it itself)."""

    def around(task, edge, round_, step):
        return None if task == wiring.EXIT_TASK else step()

    return LocalRun(job, work, "kfp-run-1", around=around, **kwargs).run()


@pytest.fixture(scope="module")
def trained(demo_edges, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    run = _run_without_finish(_job(demo_edges, state_dir=str(root / "state")), root / "work")
    assert run.error is None
    return run.job


@pytest.fixture(scope="module")
def not_met(demo_edges, tmp_path_factory):
    root = tmp_path_factory.mktemp("not-met")
    job = _job(demo_edges, state_dir=str(root / "state"), trigger={"operator": "ge", "threshold": 100_000})
    run = _run_without_finish(job, root / "work")
    assert run.error is None
    return run.job


@pytest.fixture(scope="module")
def killed(demo_edges, tmp_path_factory):
    """edge-2's training pod is killed in round 1: it leaves its Running mark and nothing else."""
    root = tmp_path_factory.mktemp("killed")
    step, files, stage = wiring.TASKS["train_edge"]

    def oom_killed(ctx, task_files):
        if ctx.edge == "edge-2":
            raise PodKilled("OOMKilled")
        return step(ctx, task_files)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(wiring.TASKS, "train_edge", (oom_killed, files, stage))
        run = _run_without_finish(_job(demo_edges, state_dir=str(root / "state")), root / "work")
    assert isinstance(run.error, PodKilled)
    return run.job


def _finish_on_a_copy(job, tmp_path, value, error="", **when):
    """Run the real exit step with `value` on a copy of the job's store; (library, run id)."""
    shutil.copytree(job.state_dir, tmp_path / "state")
    copy = job.model_copy(update={"state_dir": str(tmp_path / "state")})
    library = library_for(copy)
    finish(TaskContext(copy, "kfp-run-1", library), value, error, **when)
    run_id = library.run_for("kfp-run-1")
    return library, run_id


@pytest.mark.parametrize("value", EVERY_VALUE)
def test_a_trained_run_ends_finished_whatever_the_runner_reports(trained, tmp_path, value):
    library, run_id = _finish_on_a_copy(trained, tmp_path, value)
    assert library.client.get_run(run_id).info.status == "FINISHED"
    states = current_states(library.states(run_id))
    assert all(states[s] is State.COMPLETED for s in Stage)


@pytest.mark.parametrize("value", EVERY_VALUE)
def test_a_trigger_not_met_run_ends_finished_whatever_the_runner_reports(not_met, tmp_path, value):
    library, run_id = _finish_on_a_copy(not_met, tmp_path, value)
    assert library.client.get_run(run_id).info.status == "FINISHED"
    history = library.states(run_id)
    assert not any(c.state is State.FAILED for c in history)
    # The plan step words its Waiting record as the outcome expects.
    waiting = [c for c in history if c.stage is Stage.TRAIN and c.state is State.WAITING][-1]
    assert waiting.detail.startswith(TRIGGER_NOT_MET + ": ")


@pytest.mark.parametrize("value", EVERY_VALUE)
def test_a_killed_edge_fails_the_run_and_is_named(killed, tmp_path, value):
    # Before the exit step: edge-2's last mark is Running, edge-1's Completed.
    library = library_for(killed)
    tags = library.run_tags(library.run_for("kfp-run-1"))
    assert lost_edges(tags) == {Stage.TRAIN: {"edge-2": 1}}
    assert '"Completed"' in tags[f"{EDGE_PROGRESS_TAG}.train.edge-1"]
    # Execute
    library, run_id = _finish_on_a_copy(killed, tmp_path, value, "pod OOMKilled" if value == "FAILED" else "")
    # Assert: the run failed; the train stage is Failed naming edge-2, which has its own record
    assert library.client.get_run(run_id).info.status == "FAILED"
    history = library.states(run_id)
    assert current_states(history)[Stage.TRAIN] is State.FAILED
    stage_failed = [c for c in history if c.stage is Stage.TRAIN and c.state is State.FAILED and c.edge is None]
    assert f"the pipeline reported {value or 'nothing'}" in stage_failed[-1].detail
    lost = [c for c in history if c.state is State.FAILED and c.edge is not None]
    if value in ("CANCELED", "CANCELLED"):  # a canceled run's edges were stopped, not lost
        assert "the run was canceled" in stage_failed[-1].detail and "still running then: edge-2" in stage_failed[-1].detail
        assert lost == []
        return
    assert ("edge-2 stopped while running in round 1: its pod was killed, its node lost, or the run was "
            "terminated or hit its deadline") in stage_failed[-1].detail
    assert [(c.stage, c.edge) for c in lost] == [(Stage.TRAIN, "edge-2")]
    assert "stopped while running" in lost[0].error and "deadline had passed" not in lost[0].error


def test_a_run_stopped_by_its_deadline_names_it(killed, tmp_path):
    """On the backend the run deadline reaches the exit handler as RUNNING; finish, run after
    the deadline, says so."""
    import time

    library, run_id = _finish_on_a_copy(killed, tmp_path, "RUNNING", now=time.time() + 3600, run_deadline_s=60)
    lost = [c for c in library.states(run_id) if c.state is State.FAILED and c.edge is not None]
    assert [c.edge for c in lost] == ["edge-2"]
    assert lost[0].error.endswith("(the run deadline (60 s) had passed)")
