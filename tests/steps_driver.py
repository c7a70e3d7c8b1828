"""The pipeline's steps called in-process, in the order the compiled pipeline calls them, with
the same failure handling as the components (edge tasks through `run_edge_task`, cloud steps
failing the run, the exit handler `step_finish` always last). Real MLflow (embedded SQLite).

Not a double of KFP: it is how tests reach a step in the middle of a run (a crashed edge in
round 2, a retried deploy) in seconds; the kfp.local runs in test_e2e_local.py and
test_security.py show the same steps wired by the real compiler and runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from entgan import steps
from entgan.config import JobSpec
from entgan.lifecycle import Stage
from entgan.registry import library_for


@dataclass
class Driven:
    job: JobSpec
    kfp_run_id: str
    work: Path
    summary: dict | None = None
    error: Exception | None = None
    deploy_args: tuple = ()


def drive(job: JobSpec, work: Path, kfp_run_id: str = "run-1", before_round=None) -> Driven:
    """Run every step of one pipeline run; `before_round(round_)` may break things between rounds.
    A cloud step's error ends the run (as KFP would) and is kept in `.error`."""
    library = library_for(job)
    work.mkdir(parents=True, exist_ok=True)
    out = Driven(job, kfp_run_id, work)
    p = {name: str(work / name) for name in ("snapshot", "plan", "state-0", "kit", "report", "real", "summary")}
    try:
        steps.step_create_job(job, kfp_run_id, library, p["snapshot"])
        reports = []
        for e in job.edge_names:
            path = str(work / f"report-{e}")
            steps.run_edge_task(job, kfp_run_id, Stage.TRAIN, e, path,
                                lambda e=e, path=path: steps.step_inspect(job, e, path, p["snapshot"]))
            reports.append(path)
        steps.step_plan(job, reports, p["snapshot"], p["plan"], p["state-0"], library, kfp_run_id)
        state = p["state-0"]
        for r in range(1, job.train.rounds + 1):
            if before_round:
                before_round(r)
            updates = []
            for e in job.edge_names:
                path = str(work / f"update-{r}-{e}")
                steps.run_edge_task(job, kfp_run_id, Stage.TRAIN, e, path,
                                    lambda e=e, path=path, s=state, r=r: steps.step_edge_train(job, e, p["plan"], s, r, path),
                                    round_=r, retries=0)
                updates.append(path)
            new_state = str(work / f"state-{r}")
            steps.step_aggregate(job, p["plan"], state, updates, r, new_state, library, kfp_run_id)
            state = new_state
        steps.step_prepare_eval(job, p["plan"], p["state-0"], state, p["kit"], library, kfp_run_id)
        stats = []
        for e in job.edge_names:
            path = str(work / f"stats-{e}")
            steps.run_edge_task(job, kfp_run_id, Stage.EVAL, e, path,
                                lambda e=e, path=path: steps.step_edge_eval(job, e, p["plan"], state, p["kit"], path))
            stats.append(path)
        steps.step_evaluate(job, p["plan"], p["state-0"], state, stats, p["report"], p["real"], library, kfp_run_id)
        out.deploy_args = (job, p["plan"], state, p["report"], p["real"], kfp_run_id, p["summary"],
                           str(work / "samples"), library)
        out.summary = steps.step_deploy(*out.deploy_args)
        steps.step_finish(job, kfp_run_id, "SUCCEEDED", "", library)
    except Exception as err:  # noqa: BLE001 - the run fails here, as the pipeline would
        out.error = err
        steps.step_finish(job, kfp_run_id, "FAILED", f"{type(err).__name__}: {err}", library)
    return out
