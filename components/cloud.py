"""Cloud components: create job, plan, aggregate, evaluate, deploy, finish.

Thin adapters over `entgan.steps`; imports live inside the bodies (KFP ships each on its own).
"""

from typing import List

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output, PipelineTaskFinalStatus


def create_job(job: str, kfp_run_id: str, snapshot: Output[Artifact]) -> List[dict]:
    """Job creation: validate the job, open its MLflow run (found later by the KFP run id),
    snapshot the library's evaluator; return one node selector per edge (the fan-out items)."""
    from entgan.config import JobSpec
    from entgan.registry import library_for
    from entgan.steps import step_create_job

    spec = JobSpec.model_validate_json(job)
    print(f"job {spec.name}: {len(spec.edges)} edges, {spec.train.rounds} rounds of {spec.train.strategy}")
    return step_create_job(spec, kfp_run_id, library_for(spec), snapshot.path)


def plan(
    job: str,
    kfp_run_id: str,
    reports: Input[List[Artifact]],
    snapshot: Input[Artifact],
    plan: Output[Artifact],
    global_state: Output[Artifact],
) -> str:
    """Apply the trigger; decide which edge trains which type; start each type from its champion,
    a new type from its nearest known type. Returns 'train' or 'wait'."""
    from entgan.config import JobSpec
    from entgan.lifecycle import Stage
    from entgan.registry import library_for
    from entgan.steps import recorded_failure, step_plan

    spec = JobSpec.model_validate_json(job)
    with recorded_failure(spec, kfp_run_id, Stage.TRAIN):
        decided = step_plan(spec, [r.path for r in reports], snapshot.path, plan.path, global_state.path,
                            library_for(spec), kfp_run_id)
    plan.metadata["types"] = decided.types
    return decided.decision


def aggregate(
    job: str,
    kfp_run_id: str,
    round_number: int,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    updates: Input[List[Artifact]],
    new_state: Output[Artifact],
    metrics: Output[Metrics],
):
    """Verify and aggregate the edges' updates into the next global state."""
    from entgan.config import JobSpec
    from entgan.lifecycle import Stage
    from entgan.registry import library_for
    from entgan.steps import recorded_failure, step_aggregate

    spec = JobSpec.model_validate_json(job)
    with recorded_failure(spec, kfp_run_id, Stage.TRAIN):
        values = step_aggregate(spec, plan.path, global_state.path, [u.path for u in updates], int(round_number),
                                new_state.path, library_for(spec), kfp_run_id)
    for key, value in values.items():
        metrics.log_metric(key, value)


def prepare_eval(
    job: str,
    kfp_run_id: str,
    plan: Input[Artifact],
    initial_state: Input[Artifact],
    global_state: Input[Artifact],
    kit: Output[Artifact],
):
    """The eval stage starts: CAS classifiers trained on synthetic images only, for the edges."""
    from entgan.config import JobSpec
    from entgan.lifecycle import Stage
    from entgan.registry import library_for
    from entgan.steps import recorded_failure, step_prepare_eval

    spec = JobSpec.model_validate_json(job)
    with recorded_failure(spec, kfp_run_id, Stage.EVAL):
        step_prepare_eval(spec, plan.path, initial_state.path, global_state.path, kit.path,
                          library_for(spec), kfp_run_id)


def evaluate(
    job: str,
    kfp_run_id: str,
    plan: Input[Artifact],
    initial_state: Input[Artifact],
    global_state: Input[Artifact],
    stats: Input[List[Artifact]],
    report: Output[Artifact],
    real_stats: Output[Artifact],
    metrics: Output[Metrics],
):
    """Merge the edges' statistics and score the starting and trained generators."""
    from entgan.config import JobSpec
    from entgan.lifecycle import Stage
    from entgan.registry import library_for
    from entgan.steps import recorded_failure, step_evaluate

    spec = JobSpec.model_validate_json(job)
    with recorded_failure(spec, kfp_run_id, Stage.EVAL):
        scores = step_evaluate(spec, plan.path, initial_state.path, global_state.path, [s.path for s in stats],
                               report.path, real_stats.path, library_for(spec), kfp_run_id)
    for data_type, values in scores.items():
        for key, value in values.items():
            metrics.log_metric(f"{data_type}.{key}", value)


def deploy(
    job: str,
    kfp_run_id: str,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    report: Input[Artifact],
    real_stats: Input[Artifact],
    summary: Output[Artifact],
    samples: Output[Artifact],
    metrics: Output[Metrics],
    run_report: Output[HTML],
):
    """Register a version per type in the task library; move `champion` only past the gate.
    For the run page: per-type metrics and an HTML report (results, round by round, sample grids)."""
    from entgan.config import JobSpec
    from entgan.lifecycle import Stage
    from entgan.registry import library_for
    from entgan.report import deploy_metrics, write_run_report
    from entgan.steps import recorded_failure, step_deploy

    spec = JobSpec.model_validate_json(job)
    library = library_for(spec)
    with recorded_failure(spec, kfp_run_id, Stage.DEPLOY):
        result = step_deploy(spec, plan.path, global_state.path, report.path, real_stats.path, kfp_run_id,
                             summary.path, samples.path, library)
    for key, value in deploy_metrics(result).items():
        metrics.log_metric(key, value)
    write_run_report(result, library, run_report.path)


def finish(job: str, kfp_run_id: str, status: PipelineTaskFinalStatus):
    """Exit handler: on failure, mark the stage in progress Failed; end the job's MLflow run."""
    from entgan.config import JobSpec
    from entgan.registry import library_for
    from entgan.steps import step_finish

    spec = JobSpec.model_validate_json(job)
    step_finish(spec, kfp_run_id, status.state, status.error_message or "", library_for(spec))


def generate(job: str, types: List[str], num_images: int, images: Output[Dataset]):
    """Deploy side: `num_images` per type from each type's current champion into a dataset
    (ImageFolder layout), recorded in MLflow with its lineage at the artifact's URI; an empty
    `types` means every type with a champion."""
    from pathlib import Path

    from entgan.config import JobSpec
    from entgan.generate import generate_from_library
    from entgan.registry import library_for

    spec = JobSpec.model_validate_json(job)
    written = generate_from_library(library_for(spec), spec.train, list(types) or None, int(num_images),
                                    Path(images.path), location=images.uri)
    images.metadata.update({t: len(files) for t, files in written.items()})
