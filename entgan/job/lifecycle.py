"""Sedna's lifelong-learning lifecycle: train triggers and stage states.

Pure functions and small value types; recording them in MLflow is `entgan.library.registry`'s job.

- Trigger (Sedna's `trainSpec.trigger`): train when the number of new samples since the last
  trained version meets a condition (`gt/ge/eq/ne/le/lt` a threshold), per type or in total,
  optionally only inside a daily time window that may wrap past midnight. A KFP recurring
  run is the check period.
- Stage states: train, eval and deploy each go Waiting -> Ready -> Starting -> Running ->
  Completed, or Failed from any non-terminal state. Changes are appended, never edited.
  A change that names an edge records that edge's failure; the stage goes on without the edge
  (the cloud decides whether enough edges answered), so only the cloud's changes (no edge)
  move the stage's state.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import os
import socket
from dataclasses import asdict, dataclass, field
from enum import Enum

OPERATORS = {
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
    "le": operator.le,
    "lt": operator.lt,
}


# ---------------------------------------------------------------- triggers


def parse_clock(text: str) -> dt.time:
    """'HH:MM' -> time; a clear error otherwise."""
    try:
        hours, minutes = text.split(":")
        return dt.time(int(hours), int(minutes))
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a time of day; write HH:MM, e.g. 22:30") from None


def in_window(now: dt.time, start: dt.time, end: dt.time) -> bool:
    """Is `now` inside the daily window [start, end)? A window with end <= start wraps midnight
    (22:00-06:00 holds 23:00 and 05:59, not 06:00); start == end means the whole day."""
    if start == end:
        return True
    if start < end:
        return start <= now < end
    return now >= start or now < end


@dataclass(frozen=True)
class TriggerDecision:
    train: bool
    types: list[str]  # the types that will train
    reason: str


def evaluate_trigger(
    new_samples: dict[str, int],
    *,
    op: str = "ge",
    threshold: int = 0,
    scope: str = "type",
    window: tuple[dt.time, dt.time] | None = None,
    now: dt.time | None = None,
) -> TriggerDecision:
    """Decide whether (and which types) to train.

    `new_samples`: per type, training images present now minus those behind its last trained
    version (all of them for a type never trained). With scope `type`, every type whose own
    count meets the condition trains; with scope `total`, all types train when the sum does.
    """
    if op not in OPERATORS:
        raise ValueError(f"unknown trigger operator {op!r}; use one of {sorted(OPERATORS)}")
    if scope not in ("type", "total"):
        raise ValueError(f"unknown trigger scope {scope!r}; use 'type' or 'total'")
    if window is not None:
        now = now or dt.datetime.now().time()
        if not in_window(now, *window):
            start, end = (t.strftime("%H:%M") for t in window)
            return TriggerDecision(False, [], f"{now.strftime('%H:%M')} is outside the window {start}-{end}")
    test = OPERATORS[op]
    if scope == "total":
        total = sum(new_samples.values())
        if test(total, threshold):
            return TriggerDecision(True, sorted(new_samples), f"{total} new samples in total {op} {threshold}")
        return TriggerDecision(False, [], f"{total} new samples in total, not {op} {threshold}")
    ready = sorted(t for t, n in new_samples.items() if test(n, threshold))
    counts = ", ".join(f"{t}={n}" for t, n in sorted(new_samples.items()))
    if ready:
        return TriggerDecision(True, ready, f"new samples {counts}; {ready} {op} {threshold}")
    return TriggerDecision(False, [], f"new samples {counts}; none {op} {threshold}")


# ---------------------------------------------------------------- stage states


class Stage(str, Enum):
    TRAIN = "train"
    EVAL = "eval"
    DEPLOY = "deploy"


class State(str, Enum):
    WAITING = "Waiting"
    READY = "Ready"
    STARTING = "Starting"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


LEGAL: dict[State | None, set[State]] = {
    None: {State.WAITING, State.FAILED},
    State.WAITING: {State.WAITING, State.READY, State.FAILED},  # a check that is still waiting
    State.READY: {State.STARTING, State.FAILED},
    State.STARTING: {State.RUNNING, State.FAILED},
    State.RUNNING: {State.COMPLETED, State.FAILED},
    State.COMPLETED: set(),
    State.FAILED: {State.FAILED},  # another edge's failure in the same stage is recorded too
}


class IllegalTransition(ValueError):
    """A state change the lifecycle does not allow."""


@dataclass(frozen=True)
class StateChange:
    stage: Stage
    state: State
    at: float  # seconds since the epoch
    detail: str = ""
    edge: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "stage": self.stage.value, "state": self.state.value}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StateChange:
        raw = json.loads(text)
        return cls(**{**raw, "stage": Stage(raw["stage"]), "state": State(raw["state"])})


def current_states(history: list[StateChange]) -> dict[Stage, State | None]:
    """The latest state of each stage; an edge's own record (`edge` set) does not move it."""
    latest: dict[Stage, State | None] = {s: None for s in Stage}
    for change in sorted(history, key=lambda c: c.at):
        if change.edge is None:
            latest[change.stage] = change.state
    return latest


def edge_failures(history: list[StateChange], stage: Stage | None = None) -> list[StateChange]:
    """The edges' failure records (optionally of one stage), oldest first."""
    return [c for c in sorted(history, key=lambda c: c.at)
            if c.edge is not None and c.state is State.FAILED and (stage is None or c.stage is stage)]


def check_transition(history: list[StateChange], stage: Stage, new: State) -> None:
    """Raise IllegalTransition unless `stage` may move to `new` after `history`."""
    previous = current_states(history)[stage]
    if new not in LEGAL[previous]:
        was = previous.value if previous else "nothing"
        allowed = sorted(s.value for s in LEGAL[previous]) or ["nothing (terminal)"]
        raise IllegalTransition(f"stage {stage.value}: {was} -> {new.value} is not allowed; from {was}: {allowed}")


@dataclass
class StageLog:
    """An append-only, validated list of state changes (the in-memory side of the record)."""

    history: list[StateChange] = field(default_factory=list)

    def append(self, change: StateChange) -> StateChange:
        check_transition(self.history, change.stage, change.state)
        self.history.append(change)
        return change

    def advance(self, stage: Stage, *states: State, at: float, detail: str = "") -> list[StateChange]:
        """Append several states of one stage in order (e.g. Ready, Starting)."""
        return [self.append(StateChange(stage, s, at + i * 1e-6, detail)) for i, s in enumerate(states)]


IN_PROGRESS = (State.WAITING, State.READY, State.STARTING, State.RUNNING)


def interrupted_changes(history: list[StateChange], at: float, detail: str = "interrupted") -> list[StateChange]:
    """The Failed record that closes a run stopped from outside (Ctrl-C, SIGTERM): the first
    stage that is not Completed, if it is still in progress (the rule `finish` applies)."""
    current = current_states(history)
    for stage in Stage:
        if current[stage] in IN_PROGRESS:
            return [StateChange(stage, State.FAILED, at, detail)]
        if current[stage] is not State.COMPLETED:
            break
    return []


# ---------------------------------------------------------------- who runs a run

DRIVER_ENV = "ENTGAN_DRIVER"  # "<host>:<pid>" of the `entgan run` process, set for its tasks
DRIVER_TAG = "entgan.driver"
TYPES_TAG = "entgan.types"  # the types a run trains (comma-separated), tagged by the plan


def driver_tags() -> dict[str, str]:
    """The MLflow run tag naming the local `entgan run` process behind a run (none on a cluster)."""
    value = os.environ.get(DRIVER_ENV)
    return {DRIVER_TAG: value} if value else {}


def driver_gone(tag: str | None, host: str | None = None) -> bool:
    """True if `tag` ("<host>:<pid>") names a process on this host that no longer exists."""
    if not tag or ":" not in tag:
        return False
    where, _, pid = tag.rpartition(":")
    if where != (host or socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
