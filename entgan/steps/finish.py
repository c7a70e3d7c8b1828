"""The exit handler: runs last, whether the pipeline succeeded or not."""

from __future__ import annotations

from entgan.lifecycle import Stage, State, current_states
from entgan.redact import redact
from entgan.steps.common import TaskContext, log
from entgan.steps.records import record


def finish(ctx: TaskContext, pipeline_state: str, error: str) -> None:
    """A failed pipeline marks the stage in progress Failed; the job's MLflow run ends."""
    library = ctx.library
    run_id = library.run_for(ctx.kfp_run_id)
    if run_id is None:  # the pipeline failed before `create job` opened a run
        log(f"no MLflow run for KFP run {ctx.kfp_run_id}; pipeline {pipeline_state}: {error}")
        return
    succeeded = pipeline_state in ("SUCCEEDED", "SUCCESS")
    if not succeeded:
        # The first stage that is not Completed is where the run stopped (a killed edge task, a
        # failure before any stage started); a stage already Failed was recorded by its task.
        current = current_states(library.states(run_id))
        for stage in Stage:
            if current[stage] in (State.WAITING, State.READY, State.STARTING, State.RUNNING):
                detail = redact(f"pipeline {pipeline_state}: {error}")[:2000]
                record(library, run_id, stage, State.FAILED, detail=detail)
            if current[stage] is not State.COMPLETED:
                break
    library.end_run(run_id, "FINISHED" if succeeded else "FAILED")
