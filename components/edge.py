"""Edge components: one task per edge node, pinned to it by node selector.

Each body is a thin adapter: parse the job, call one `entgan.steps` function through
`run_edge_task` (a failing edge writes a failure record instead of its output and the round
goes on without it; the failure is recorded with the stage, the edge and the error), write
outputs. Imports live inside the bodies because KFP ships each body on its own.
"""

from kfp.dsl import Artifact, Input, Metrics, Output


def inspect_edge(job: str, edge: dict, kfp_run_id: str, snapshot: Input[Artifact], report: Output[Artifact]):
    """Count the edge's images per type (failing early, by name, on a corrupt image) and, with the
    library's evaluator, per-type feature statistics and images it cannot place."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.lifecycle import Stage
    from entgan.steps import run_edge_task, step_inspect

    spec, name = JobSpec.model_validate_json(job), edge[EDGE_LABEL]
    run_edge_task(spec, kfp_run_id, Stage.TRAIN, name, report.path,
                  lambda: step_inspect(spec, name, report.path, snapshot.path))


def train_edge(
    job: str,
    edge: dict,
    kfp_run_id: str,
    round_number: int,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    update: Output[Artifact],
    metrics: Output[Metrics],
):
    """One round of local GAN training for every type the edge holds; writes its update bundle
    and, for the run page, the edge's final losses and image count per type."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.lifecycle import Stage
    from entgan.steps import run_edge_task, step_edge_train

    spec, name, round_ = JobSpec.model_validate_json(job), edge[EDGE_LABEL], int(round_number)
    result = run_edge_task(spec, kfp_run_id, Stage.TRAIN, name, update.path,
                           lambda: step_edge_train(spec, name, plan.path, global_state.path, round_, update.path),
                           round_=round_)
    update.metadata.update({"edge": name, "failed": result is None})
    for data_type, losses in (result.losses.items() if result else ()):
        for key, value in losses.items():
            metrics.log_metric(f"{data_type}.{key}", float(value))
        metrics.log_metric(f"{data_type}.images", float(result.num_examples.get(data_type, 0)))


def eval_edge(
    job: str,
    edge: dict,
    kfp_run_id: str,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    kit: Input[Artifact],
    stats: Output[Artifact],
):
    """Feature statistics and CAS counts on the edge's real held-out images (no pixels leave)."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.lifecycle import Stage
    from entgan.steps import run_edge_task, step_edge_eval

    spec, name = JobSpec.model_validate_json(job), edge[EDGE_LABEL]
    counts = run_edge_task(spec, kfp_run_id, Stage.EVAL, name, stats.path,
                           lambda: step_edge_eval(spec, name, plan.path, global_state.path, kit.path, stats.path))
    stats.metadata.update({f"holdout.{t}": n for t, n in (counts or {}).items()})
