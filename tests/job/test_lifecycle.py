import datetime as dt

import pytest

from entgan.job.lifecycle import (
    IllegalTransition,
    Stage,
    StageLog,
    State,
    StateChange,
    check_transition,
    current_states,
    evaluate_trigger,
    in_window,
    parse_clock,
)

T = dt.time


@pytest.mark.parametrize(
    "op, n, threshold, fires",
    [
        ("gt", 10, 10, False), ("gt", 11, 10, True),
        ("ge", 10, 10, True), ("ge", 9, 10, False),
        ("eq", 10, 10, True), ("eq", 11, 10, False),
        ("ne", 11, 10, True), ("ne", 10, 10, False),
        ("le", 10, 10, True), ("le", 11, 10, False),
        ("lt", 9, 10, True), ("lt", 10, 10, False),
    ],
)
def test_every_operator(op, n, threshold, fires):
    decision = evaluate_trigger({"box": n}, op=op, threshold=threshold)
    assert decision.train is fires
    assert decision.types == (["box"] if fires else [])


def test_per_type_scope_trains_only_types_that_meet_it():
    decision = evaluate_trigger({"box": 120, "table": 3, "pillar": 80}, op="ge", threshold=50)
    assert decision.train and decision.types == ["box", "pillar"]
    assert "table=3" in decision.reason


def test_total_scope_trains_all_types_on_the_sum():
    assert evaluate_trigger({"box": 30, "table": 30}, op="gt", threshold=50, scope="total").types == ["box", "table"]
    assert not evaluate_trigger({"box": 20, "table": 20}, op="gt", threshold=50, scope="total").train


@pytest.mark.parametrize(
    "now, start, end, inside",
    [
        ("23:00", "22:00", "06:00", True),  # wraps midnight
        ("02:30", "22:00", "06:00", True),
        ("06:00", "22:00", "06:00", False),  # the end is excluded
        ("12:00", "22:00", "06:00", False),
        ("22:00", "22:00", "06:00", True),
        ("09:00", "08:00", "17:00", True),
        ("17:00", "08:00", "17:00", False),
        ("07:59", "08:00", "17:00", False),
        ("13:13", "00:00", "00:00", True),  # start == end: all day
    ],
)
def test_daily_window(now, start, end, inside):
    assert in_window(parse_clock(now), parse_clock(start), parse_clock(end)) is inside


def test_outside_the_window_nothing_trains():
    decision = evaluate_trigger({"box": 500}, window=(T(22), T(6)), now=T(12))
    assert not decision.train and "outside the window 22:00-06:00" in decision.reason
    assert evaluate_trigger({"box": 500}, window=(T(22), T(6)), now=T(1)).train


def test_bad_trigger_settings_are_named():
    with pytest.raises(ValueError, match="unknown trigger operator 'gte'"):
        evaluate_trigger({"box": 1}, op="gte")
    with pytest.raises(ValueError, match="not a time of day"):
        parse_clock("25:00")


def _change(stage, state, at, **kw):
    return StateChange(Stage(stage), State(state), at, **kw)


def test_the_legal_path_of_a_stage():
    log = StageLog()
    for i, state in enumerate(["Waiting", "Ready", "Starting", "Running", "Completed"]):
        log.append(_change("train", state, i))
    assert current_states(log.history)[Stage.TRAIN] is State.COMPLETED
    assert current_states(log.history)[Stage.DEPLOY] is None


@pytest.mark.parametrize(
    "path, illegal",
    [
        (["Waiting"], "Running"),  # skips Ready and Starting
        ([], "Ready"),  # must start Waiting
        (["Waiting", "Ready", "Starting", "Running", "Completed"], "Running"),  # terminal
        (["Waiting", "Ready", "Starting", "Running", "Completed"], "Failed"),
        (["Waiting", "Ready"], "Waiting"),  # no going back
    ],
)
def test_illegal_transitions_are_refused(path, illegal):
    history = [_change("eval", s, i) for i, s in enumerate(path)]
    with pytest.raises(IllegalTransition, match="is not allowed"):
        check_transition(history, Stage.EVAL, State(illegal))


def test_failure_path_records_edge_and_error_and_can_repeat():
    log = StageLog()
    log.advance(Stage.TRAIN, State.WAITING, State.READY, State.STARTING, State.RUNNING, at=0)
    log.append(_change("train", "Failed", 5, edge="edge-2", error="OSError: disk"))
    log.append(_change("train", "Failed", 6, edge="edge-3", error="killed"))  # a second edge
    # An edge's failure is recorded but does not end the stage: the round goes on without it.
    assert current_states(log.history)[Stage.TRAIN] is State.RUNNING
    log.append(_change("train", "Failed", 7, error="round 1: fewer than train.min_edges updates"))
    assert current_states(log.history)[Stage.TRAIN] is State.FAILED
    restored = StateChange.from_json(log.history[-3].to_json())
    assert restored.edge == "edge-2" and restored.error == "OSError: disk" and restored.state is State.FAILED
