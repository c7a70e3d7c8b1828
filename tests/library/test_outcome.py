"""The run's outcome comes from the stage records, for every final-status string a runner sends."""

import pytest

from entgan.job.lifecycle import Stage, State, StateChange
from entgan.library.outcome import Backend, backend_state, decide

# kfp.local; the backend's MLMD state names; the SDK docstring's spelling; kfp.local's enum name
EVERY_VALUE = ["SUCCEEDED", "FAILED", "CANCELED", "COMPLETE", "RUNNING", "NEW", "CACHED", "UNKNOWN",
               "CANCELLED", "SUCCESS", ""]


def _history(*changes: tuple) -> list[StateChange]:
    created = [StateChange(s, State.WAITING, 1.0, "job created") for s in Stage]
    return created + [StateChange(stage, state, 2.0 + i, detail, edge)
                      for i, (stage, state, detail, edge) in enumerate(changes)]


def _stage(stage: Stage, *states: State) -> list[tuple]:
    return [(stage, s, "", None) for s in states]


TRAINED = _history(
    *_stage(Stage.TRAIN, State.READY, State.STARTING, State.RUNNING, State.COMPLETED),
    *_stage(Stage.EVAL, State.READY, State.STARTING, State.RUNNING, State.COMPLETED),
    *_stage(Stage.DEPLOY, State.READY, State.STARTING, State.RUNNING, State.COMPLETED),
)
NOT_MET = _history((Stage.TRAIN, State.WAITING, "trigger not met: new samples {'box': 3}; none ge 10", None))
# an edge pod was OOM-killed in round 2: train Running, an edge's own record, nothing after
CRASHED = _history(
    *_stage(Stage.TRAIN, State.READY, State.STARTING, State.RUNNING),
    (Stage.TRAIN, State.FAILED, "round 1: edge left out", "edge-2"),
)


@pytest.mark.parametrize("value", EVERY_VALUE)
def test_a_trained_run_succeeds_whatever_the_backend_reports(value):
    outcome = decide(TRAINED, value)
    assert outcome.succeeded and outcome.run_status == "FINISHED" and outcome.failed_stage is None


@pytest.mark.parametrize("value", EVERY_VALUE)
def test_a_trigger_not_met_run_succeeds_whatever_the_backend_reports(value):
    outcome = decide(NOT_MET, value)
    assert outcome.succeeded and outcome.failed_stage is None and "trigger was not met" in outcome.reason


@pytest.mark.parametrize("value", EVERY_VALUE)
def test_a_crashed_run_fails_at_the_stage_that_stopped_and_says_why(value):
    # Execute
    outcome = decide(CRASHED, value, error="pod OOMKilled" if value == "FAILED" else "")
    # Assert: the edge's own failure record does not count as the stage's; the stage stopped Running
    assert not outcome.succeeded and outcome.run_status == "FAILED"
    assert outcome.failed_stage is Stage.TRAIN
    assert outcome.reason.startswith("stage train stopped at Running: ")
    assert f"the pipeline reported {value or 'nothing'}" in outcome.reason


def test_the_backend_status_only_explains_the_failure():
    assert "pod was killed" in decide(CRASHED, "FAILED", "OOMKilled").reason
    assert "OOMKilled" in decide(CRASHED, "FAILED", "OOMKilled").reason
    assert "canceled" in decide(CRASHED, "CANCELLED").reason
    assert "ended before this stage finished" in decide(CRASHED, "RUNNING").reason


def test_a_run_that_stopped_before_planning_fails_its_train_stage():
    outcome = decide(_history(), "FAILED")  # every stage still Waiting "job created": not a trigger decision
    assert not outcome.succeeded and outcome.failed_stage is Stage.TRAIN


def test_a_stage_its_task_marked_failed_is_not_marked_again():
    history = _history(*_stage(Stage.TRAIN, State.READY, State.STARTING, State.RUNNING, State.COMPLETED),
                       *_stage(Stage.EVAL, State.READY, State.FAILED))
    outcome = decide(history, "COMPLETE")
    assert not outcome.succeeded and outcome.failed_stage is None and "stage eval failed" in outcome.reason


@pytest.mark.parametrize(
    ("value", "meaning"),
    [("COMPLETE", Backend.SUCCEEDED), ("cached", Backend.SUCCEEDED), ("SUCCEEDED", Backend.SUCCEEDED),
     ("CANCELLED", Backend.CANCELED), ("CANCELED", Backend.CANCELED), ("FAILED", Backend.FAILED),
     ("RUNNING", Backend.NOT_FINAL), ("NEW", Backend.NOT_FINAL), ("UNKNOWN", Backend.NOT_FINAL),
     ("SOMETHING_NEW", Backend.NOT_FINAL)],
)
def test_every_runner_value_has_a_meaning(value, meaning):
    assert backend_state(value) is meaning


def test_an_edge_left_running_is_named_as_lost():
    lost = {Stage.TRAIN: {"edge-3": 2}, Stage.EVAL: {"edge-1": 0}}
    outcome = decide(CRASHED, "FAILED", lost=lost)
    # What the records can tell, and no more: OOM, eviction, a lost node, Terminate and the
    # run deadline all leave the edge at Running (Terminate and deadline reach finish as RUNNING).
    assert outcome.failed_stage is Stage.TRAIN and outcome.lost == {
        "edge-3": "edge-3 stopped while running in round 2: its pod was killed, its node lost, or the run was "
                  "terminated or hit its deadline"}
    assert "edge-3 stopped while running" in outcome.reason and "edge-1" not in outcome.reason  # eval never started
    canceled = decide(CRASHED, "CANCELED", lost=lost)
    assert not canceled.lost and "canceled" in canceled.reason and "still running then: edge-3" in canceled.reason


def test_the_run_deadline_is_named_once_it_has_passed():
    from entgan.library.outcome import deadline_passed

    start = min(c.at for c in CRASHED)
    assert deadline_passed(CRASHED, start + 3600, 24 * 3600) == ""
    passed = deadline_passed(CRASHED, start + 24 * 3600 + 1, 24 * 3600)
    assert passed == "the run deadline (24 h) had passed"
    # On the backend a run stopped by its deadline reaches finish as RUNNING, with an edge left Running.
    outcome = decide(CRASHED, "RUNNING", lost={Stage.TRAIN: {"edge-3": 2}}, deadline=passed)
    assert outcome.lost["edge-3"].endswith("(the run deadline (24 h) had passed)")
    assert "the run deadline (24 h) had passed" in decide(CRASHED, "RUNNING", deadline=passed).reason
    assert "deadline" not in decide(CRASHED, "RUNNING", lost={Stage.TRAIN: {"edge-3": 2}}).lost["edge-3"].split(": ")[0]


def test_lost_edges_are_those_whose_last_mark_is_running():
    from entgan.steps.records import EDGE_PROGRESS_TAG, lost_edges

    tags = {f"{EDGE_PROGRESS_TAG}.train.edge-1": '{"state": "Completed", "round": 2, "at": 1}',
            f"{EDGE_PROGRESS_TAG}.train.edge.2": '{"state": "Running", "round": 2, "at": 1}',
            f"{EDGE_PROGRESS_TAG}.eval.edge-3": '{"state": "Failed", "round": 0, "at": 1}',
            "mlflow.runName": "x"}
    assert lost_edges(tags) == {Stage.TRAIN: {"edge.2": 2}}
