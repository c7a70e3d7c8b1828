"""A run's outcome, decided from the stage states its tasks recorded (pure; no MLflow here).

The exit handler (`finish`) gets the pipeline's `PipelineTaskFinalStatus.state`, but what that
string says depends on who ran the pipeline, and on a cluster it can be wrong:

- kfp.local sends `SUCCEEDED` or `FAILED` (kfp 2.17.3, kfp/local/orchestrator/
  enhanced_dag_orchestrator.py: `'SUCCEEDED' if task_status == status.Status.SUCCESS else 'FAILED'`).
- The KFP backend's driver sends the MLMD execution state's enum name
  (kubeflow/pipelines@7b70c7b backend/src/v2/driver/resolve.go lines 458-478:
  `State: producer.GetExecution().GetLastKnownState().String()`, with an empty `Error`), one of
  UNKNOWN, NEW, RUNNING, COMPLETE, FAILED, CACHED, CANCELED
  (third_party/ml-metadata/go/ml_metadata/metadata_store.pb.go lines 355-361).
- The SDK's docstring (kfp/dsl/task_final_status.py) names `SUCCEEDED`, `FAILED`, `CANCELLED`.
- Backends before 2.17 report an exit handler's DAG as RUNNING when it holds loops
  (kubeflow/pipelines#11979, #13321), and only the launcher updates a DAG's state, so a skipped
  `dsl.If` (trigger not met) can leave it RUNNING too.

So the tasks' own records decide: all stages Completed is a trained run, the train stage left
Waiting by a trigger that was not met is a checked run (both succeed, whatever the backend
says); a stage a task marked Failed is a failed run; otherwise the first stage that did not
complete is where the run stopped (a pod killed, a task that crashed before it could record),
and the backend's status only explains why. An edge whose task marked itself Running and never
finished (`entgan.steps.records.lost_edges`) is named as "stopped while running": its pod was
killed, its node lost, or the run was terminated or hit its deadline (which of these, the records
cannot tell; the run deadline is named when it had passed). The backend cannot go on without
that edge (a failed loop iteration stops the round; docs/kubeflow-backend-notes.md, §4). On the
backend a Terminate and the run deadline reach `finish` as RUNNING, never CANCELED (Argo sets the
Workflow's activeDeadlineSeconds and still runs the exit hook); CANCELED comes from kfp.local.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from entgan.job.lifecycle import Stage, State, StateChange, current_states

# How the plan step words the train stage's Waiting record when the trigger is not met.
TRIGGER_NOT_MET = "trigger not met"


class Backend(str, Enum):
    """What a runner's final-status string means."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    NOT_FINAL = "not final"  # RUNNING / NEW / UNKNOWN: the backend did not know yet


BACKEND_STATES = {
    "SUCCEEDED": Backend.SUCCEEDED,  # kfp.local, SDK docstring
    "SUCCESS": Backend.SUCCEEDED,  # kfp.local's Status enum name
    "COMPLETE": Backend.SUCCEEDED,  # MLMD
    "CACHED": Backend.SUCCEEDED,  # MLMD: the work was done earlier
    "FAILED": Backend.FAILED,  # all
    "CANCELED": Backend.CANCELED,  # MLMD
    "CANCELLED": Backend.CANCELED,  # SDK docstring
    "RUNNING": Backend.NOT_FINAL,  # MLMD (exit DAG around loops < 2.17, skipped dsl.If)
    "NEW": Backend.NOT_FINAL,  # MLMD
    "UNKNOWN": Backend.NOT_FINAL,  # MLMD
}

_WHY = {
    Backend.FAILED: "a task failed or its pod was killed (OOM, eviction, lost node)",
    Backend.CANCELED: "the run was canceled",
    Backend.SUCCEEDED: "the pipeline ended before this stage finished",
    # On the KFP backend a Terminate and the run deadline both reach the exit handler as RUNNING
    # (Argo sets the Workflow's activeDeadlineSeconds and still runs the exit hook), never CANCELED.
    Backend.NOT_FINAL: "the pipeline ended before this stage finished (a terminated run or one past its "
                       "deadline reports this too)",
}


def backend_state(raw: str) -> Backend:
    """The meaning of a final-status string; one no runner documents counts as not final."""
    return BACKEND_STATES.get((raw or "").strip().upper(), Backend.NOT_FINAL)


@dataclass(frozen=True)
class Outcome:
    """What `finish` records: the MLflow run's status, and the stage to mark Failed (if any)."""

    succeeded: bool
    reason: str
    failed_stage: Stage | None = None  # a stage that stopped without recording its failure
    lost: dict[str, str] | None = None  # edge -> why it is lost (its pod died), in failed_stage

    @property
    def run_status(self) -> str:
        """The MLflow run status to end the run with."""
        return "FINISHED" if self.succeeded else "FAILED"


def _trigger_not_met(history: list[StateChange]) -> bool:
    train = [c for c in sorted(history, key=lambda c: c.at) if c.stage is Stage.TRAIN and c.edge is None]
    return bool(train) and train[-1].state is State.WAITING and train[-1].detail.startswith(TRIGGER_NOT_MET)


# What an edge task left at Running tells, and no more: an OOM kill or eviction (retried first),
# a lost node (not retried: Argo marks it Error), a Terminate or the run deadline look the same.
STOPPED_RUNNING = "its pod was killed, its node lost, or the run was terminated or hit its deadline"


def lost_reasons(lost: dict[str, int], deadline: str = "") -> dict[str, str]:
    """{edge: round} of edges whose task never finished -> {edge: why, in words}; `deadline`:
    a sentence naming the run deadline when it had passed."""
    return {edge: f"{edge} stopped while running" + (f" in round {r}" if r else "") + f": {STOPPED_RUNNING}"
            + (f" ({deadline})" if deadline else "") for edge, r in sorted(lost.items())}


def deadline_passed(history: list[StateChange], now: float, deadline_s: float | None) -> str:
    """'the run deadline (24 h) had passed' when `now` is that long after the run's first record."""
    if not deadline_s or not history or now - min(c.at for c in history) < deadline_s:
        return ""
    limit = f"{deadline_s / 3600:g} h" if deadline_s % 3600 == 0 else f"{deadline_s:g} s"
    return f"the run deadline ({limit}) had passed"


def decide(history: list[StateChange], pipeline_state: str, error: str = "",
           lost: dict[Stage, dict[str, int]] | None = None, deadline: str = "") -> Outcome:
    """The run's outcome from its stage records; `pipeline_state` / `error` only explain a failure.
    `lost`: per stage, the edges whose task started and never finished (-> round); `deadline`:
    `deadline_passed`'s sentence, named in the reason."""
    states = current_states(history)
    if all(states[s] is State.COMPLETED for s in Stage):
        return Outcome(True, "trained, evaluated and deployed (every stage Completed)")
    if _trigger_not_met(history) and states[Stage.EVAL] is states[Stage.DEPLOY] is State.WAITING:
        return Outcome(True, "checked: the trigger was not met, nothing to train")
    failed = [s for s in Stage if states[s] is State.FAILED]
    if failed:
        return Outcome(False, f"stage {failed[0].value} failed (recorded by its task)")
    stopped = next(s for s in Stage if states[s] is not State.COMPLETED)
    said = f"{pipeline_state or 'nothing'}: {error}" if error else (pipeline_state or "nothing")
    was = states[stopped].value if states[stopped] else "unrecorded"
    why = f"{_WHY[backend_state(pipeline_state)]} (the pipeline reported {said})"
    running = (lost or {}).get(stopped, {})
    if running and backend_state(pipeline_state) is Backend.CANCELED:  # canceled, not dead
        return Outcome(False, f"stage {stopped.value} stopped at {was}: {why}; still running then: "
                       f"{', '.join(sorted(running))}", failed_stage=stopped)
    dead = lost_reasons(running, deadline)
    if dead:
        why = f"{'; '.join(dead.values())}: the run cannot go on without it (the pipeline reported {said})"
    elif deadline:
        why = f"{why}; {deadline}"
    return Outcome(False, f"stage {stopped.value} stopped at {was}: {why}", failed_stage=stopped, lost=dead)
