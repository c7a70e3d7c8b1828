"""The exit handler: runs last, whether the pipeline succeeded or not.

The outcome comes from the stage states the tasks recorded (`entgan.library.outcome.decide`); the
status the runner hands the exit handler only explains a failure (its words differ between
kfp.local and the KFP backend, and the backend can report RUNNING for a finished run)."""

from __future__ import annotations

import time

from entgan.job.lifecycle import State, StateChange
from entgan.job.redact import redact
from entgan.library.outcome import deadline_passed, decide
from entgan.steps.common import TaskContext, log
from entgan.steps.deadlines import Deadlines
from entgan.steps.records import lost_edges, record


def finish(ctx: TaskContext, pipeline_state: str, error: str, now: float | None = None,
           run_deadline_s: float | None = Deadlines().run_s) -> None:
    """Decide the run's outcome; a stage that stopped without recording why is marked Failed
    (with each edge left Running named in an edge failure record: its pod was killed, its node
    lost, or the run was terminated or hit its deadline; the run deadline is named when `now`
    is past it); the MLflow run ends."""
    library = ctx.library
    run_id = library.run_for(ctx.kfp_run_id)
    if run_id is None:  # the pipeline failed before `create job` opened a run
        log(f"no MLflow run for KFP run {ctx.kfp_run_id}; pipeline {pipeline_state}: {error}")
        return
    history = library.states(run_id)
    now = time.time() if now is None else now
    outcome = decide(history, pipeline_state, error, lost_edges(library.run_tags(run_id)),
                     deadline_passed(history, now, run_deadline_s))
    if outcome.failed_stage is not None:
        for edge, why in (outcome.lost or {}).items():
            change = StateChange(outcome.failed_stage, State.FAILED, now, "edge lost", edge, why)
            library.record_state(run_id, change)
        record(library, run_id, outcome.failed_stage, State.FAILED, detail=redact(outcome.reason)[:2000])
    log(f"run {'succeeded' if outcome.succeeded else 'failed'}: {outcome.reason}")
    library.end_run(run_id, outcome.run_status)
