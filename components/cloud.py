"""Cloud components: plan (job creation), aggregate, evaluate, deploy.

Thin adapters over `entgan.steps`; imports live inside the bodies (KFP ships each on its own).
"""

from typing import List

from kfp.dsl import Artifact, Input, Metrics, Output


def create_job(job: str) -> List[dict]:
    """Job creation: validate the job; return one node selector per edge (the fan-out items)."""
    from entgan.config import JobSpec

    spec = JobSpec.model_validate_json(job)
    print(f"job {spec.name}: {len(spec.edges)} edges, {spec.train.rounds} rounds of {spec.train.strategy}")
    return [e.selector for e in spec.edges]


def plan(job: str, reports: Input[List[Artifact]], plan: Output[Artifact], global_state: Output[Artifact]):
    """Job creation: decide which edge trains which type; start each type from its champion."""
    from entgan.config import JobSpec
    from entgan.registry import library_for
    from entgan.steps import step_plan

    spec = JobSpec.model_validate_json(job)
    decided = step_plan(spec, [r.path for r in reports], plan.path, global_state.path, library_for(spec))
    plan.metadata["types"] = decided.types


def aggregate(
    job: str,
    round_number: int,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    updates: Input[List[Artifact]],
    new_state: Output[Artifact],
    metrics: Output[Metrics],
):
    """Verify and aggregate the edges' updates into the next global state."""
    from entgan.config import JobSpec
    from entgan.steps import step_aggregate

    spec = JobSpec.model_validate_json(job)
    values = step_aggregate(spec, plan.path, global_state.path, [u.path for u in updates], int(round_number), new_state.path)
    for key, value in values.items():
        metrics.log_metric(key, value)


def evaluate(
    job: str,
    plan: Input[Artifact],
    initial_state: Input[Artifact],
    global_state: Input[Artifact],
    stats: Input[List[Artifact]],
    report: Output[Artifact],
    metrics: Output[Metrics],
):
    """Merge the edges' statistics and score the starting and trained generators (FID)."""
    from entgan.config import JobSpec
    from entgan.steps import step_evaluate

    spec = JobSpec.model_validate_json(job)
    scores = step_evaluate(spec, plan.path, initial_state.path, global_state.path, [s.path for s in stats], report.path)
    for data_type, values in scores.items():
        for key, value in values.items():
            metrics.log_metric(f"{data_type}.{key}", value)


def deploy(
    job: str,
    kfp_run_id: str,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    report: Input[Artifact],
    summary: Output[Artifact],
    samples: Output[Artifact],
):
    """Register a version per type in the task library; move `champion` only past the gate."""
    from entgan.config import JobSpec
    from entgan.registry import library_for
    from entgan.steps import step_deploy

    spec = JobSpec.model_validate_json(job)
    step_deploy(spec, plan.path, global_state.path, report.path, kfp_run_id, summary.path, samples.path, library_for(spec))
