"""The pipeline run in-process (`entgan.steps.local`): the same task list as the compiled
pipeline (`entgan.steps.wiring.describe`), the same failure handling as the components (edge
steps through `run_edge_task`, a cloud step's error fails the run, the exit step always last).
Real MLflow (embedded SQLite).

Not a double of KFP: it is how tests reach a step in the middle of a run (a crashed edge in
round 2, a retried deploy) in seconds; the kfp.local runs in system/test_e2e_local.py and
system/test_security.py show the same steps wired by the real compiler and runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from entgan.job.spec import JobSpec
from entgan.steps.local import LocalRun


@dataclass
class Driven:
    job: JobSpec
    kfp_run_id: str
    work: Path
    summary: dict | None = None
    error: Exception | None = None
    deploy_args: tuple = ()  # (context, files) of the deploy step: `deploy(*deploy_args)` runs it again


def drive(job: JobSpec, work: Path, kfp_run_id: str = "run-1", before_round=None) -> Driven:
    """Run every step of one pipeline run; `before_round(round_)` may break things before the
    edges train that round. A cloud step's error ends the run (as KFP would) and is kept in `.error`."""

    def before(task: str, round_: int) -> None:
        if before_round and task == "train_edge" and not broken.get(round_):
            broken[round_] = True  # once per round, not once per edge
            before_round(round_)

    broken: dict[int, bool] = {}
    run = LocalRun(job, work, kfp_run_id, before=before).run()
    return Driven(job, kfp_run_id, work, run.summary, run.error, run.calls.get("deploy", ()))
