"""Cloud components: create job, edge GPUs, plan, aggregate, prepare eval, evaluate, deploy, finish.

Thin adapters over `entgan.steps`: parse the job, call one stage function with its files,
report KFP metrics. Imports live inside the bodies (KFP ships each on its own).
"""

from typing import List

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output, PipelineTaskFinalStatus


def create_job(job: str, kfp_run_id: str, snapshot: Output[Artifact]) -> List[dict]:
    """Job creation: validate the job, open its MLflow run (found later by the KFP run id),
    snapshot the library's evaluator; return one node selector per edge (the fan-out items)."""
    from entgan.steps.job import CreateFiles, create_job
    from entgan.steps.wiring import cloud_context

    ctx = cloud_context(job, kfp_run_id)
    print(f"job {ctx.job.name}: {len(ctx.job.edges)} edges, {ctx.job.train.rounds} rounds of {ctx.job.train.strategy}")
    return create_job(ctx, CreateFiles(snapshot.path))


def edge_gpus(job: str, edge: dict) -> str:
    """The GPUs the edge's job entry asks for, as the string its training task's accelerator
    limit reads at run time (one tiny task per edge and round, only in a job whose edges ask
    for different counts; see pipelines/entgan_pipeline.py)."""
    from entgan.job.spec import EDGE_LABEL, JobSpec

    return str(JobSpec.model_validate_json(job).edge(edge[EDGE_LABEL]).gpus)


def plan(job: str, kfp_run_id: str, reports: Input[List[Artifact]], snapshot: Input[Artifact],
         plan: Output[Artifact], global_state: Output[Artifact]) -> str:
    """Apply the trigger; decide which edge trains which type; start each type from its champion,
    a new type from its nearest known type. Returns 'train' or 'wait'."""
    from entgan.steps.plan import PlanFiles, plan_job
    from entgan.steps.wiring import cloud_task

    files = PlanFiles([r.path for r in reports], snapshot.path, plan.path, global_state.path)
    decided = cloud_task("plan", job, kfp_run_id, lambda ctx: plan_job(ctx, files))
    plan.metadata["types"] = decided.types
    plan.metadata["channels"] = decided.channels
    return decided.decision


def aggregate(job: str, kfp_run_id: str, round_number: int, plan: Input[Artifact], global_state: Input[Artifact],
              updates: Input[List[Artifact]], new_state: Output[Artifact], metrics: Output[Metrics]):
    """Verify and aggregate the edges' updates into the next global state."""
    from entgan.steps.train import AggregateFiles, aggregate
    from entgan.steps.wiring import cloud_task

    files = AggregateFiles(plan.path, global_state.path, [u.path for u in updates], new_state.path)
    values = cloud_task("aggregate", job, kfp_run_id, lambda ctx: aggregate(ctx, files), round_number)
    for key, value in values.items():
        metrics.log_metric(key, value)


def prepare_eval(job: str, kfp_run_id: str, plan: Input[Artifact], initial_state: Input[Artifact],
                 global_state: Input[Artifact], kit: Output[Artifact]):
    """The eval stage starts: what the edges score with (CAS classifiers trained on synthetic images)."""
    from entgan.steps.evaluate import PrepareFiles, prepare_eval
    from entgan.steps.wiring import cloud_task

    files = PrepareFiles(plan.path, initial_state.path, global_state.path, kit.path)
    cloud_task("prepare_eval", job, kfp_run_id, lambda ctx: prepare_eval(ctx, files))


def evaluate(job: str, kfp_run_id: str, plan: Input[Artifact], initial_state: Input[Artifact],
             global_state: Input[Artifact], stats: Input[List[Artifact]], report: Output[Artifact],
             real_stats: Output[Artifact], metrics: Output[Metrics]):
    """Merge the edges' statistics and score the starting and trained generators."""
    from entgan.steps.evaluate import EvaluateFiles, evaluate
    from entgan.steps.wiring import cloud_task

    files = EvaluateFiles(plan.path, initial_state.path, global_state.path, [s.path for s in stats],
                          report.path, real_stats.path)
    scores = cloud_task("evaluate", job, kfp_run_id, lambda ctx: evaluate(ctx, files))
    for data_type, values in scores.items():
        for key, value in values.items():
            metrics.log_metric(f"{data_type}.{key}", value)


def deploy(job: str, kfp_run_id: str, plan: Input[Artifact], global_state: Input[Artifact], report: Input[Artifact],
           real_stats: Input[Artifact], summary: Output[Artifact], samples: Output[Artifact],
           metrics: Output[Metrics], run_report: Output[HTML]):
    """Register a version per type in the task library; move `champion` only past the gate.
    For the run page: per-type metrics and an HTML report (results, round by round, sample grids)."""
    from entgan.library.report import deploy_metrics, write_run_report
    from entgan.steps.deploy import DeployFiles, deploy
    from entgan.steps.wiring import cloud_task

    files = DeployFiles(plan.path, global_state.path, report.path, real_stats.path, summary.path, samples.path)
    result, library = cloud_task("deploy", job, kfp_run_id, lambda ctx: (deploy(ctx, files), ctx.library))
    for key, value in deploy_metrics(result).items():
        metrics.log_metric(key, value)
    write_run_report(result, library, run_report.path)


def finish(job: str, kfp_run_id: str, status: PipelineTaskFinalStatus):
    """Exit handler: on failure, mark the stage in progress Failed; end the job's MLflow run."""
    from entgan.steps.finish import finish
    from entgan.steps.wiring import cloud_context

    finish(cloud_context(job, kfp_run_id), status.state, status.error_message or "")


def generate(job: str, types: List[str], num_images: int, images: Output[Dataset]):
    """Deploy side: `num_images` per type from each type's current champion into a dataset
    (ImageFolder layout), recorded in MLflow with its lineage at the artifact's URI; an empty
    `types` means every type with a champion."""
    from pathlib import Path

    from entgan.job.spec import JobSpec
    from entgan.library.generate import generate_from_library
    from entgan.library.registry import library_for

    spec = JobSpec.model_validate_json(job)
    written = generate_from_library(library_for(spec), spec.train, list(types) or None, int(num_images),
                                    Path(images.path), location=images.uri)
    images.metadata.update({t: len(files) for t, files in written.items()})
