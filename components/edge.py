"""Edge components: one task per edge node, pinned to it by node selector.

Each body is a thin adapter: parse the job, call one `entgan.steps` function inside
`recorded_failure` (so a crash is recorded with the stage, the edge and the error), write
outputs. Imports live inside the bodies because KFP ships each body on its own.
"""

from kfp.dsl import Artifact, Input, Output


def inspect_edge(job: str, edge: dict, kfp_run_id: str, snapshot: Input[Artifact], report: Output[Artifact]):
    """Count the edge's images per type (failing early, by name, on a corrupt image) and, with the
    library's evaluator, per-type feature statistics and images it cannot place."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.lifecycle import Stage
    from entgan.steps import recorded_failure, step_inspect

    spec, name = JobSpec.model_validate_json(job), edge[EDGE_LABEL]
    with recorded_failure(spec, kfp_run_id, Stage.TRAIN, edge=name):
        step_inspect(spec, name, report.path, snapshot.path)


def train_edge(
    job: str,
    edge: dict,
    kfp_run_id: str,
    round_number: int,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    update: Output[Artifact],
):
    """One round of local GAN training for every type the edge holds; writes its update bundle."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.lifecycle import Stage
    from entgan.steps import recorded_failure, step_edge_train

    spec, name = JobSpec.model_validate_json(job), edge[EDGE_LABEL]
    with recorded_failure(spec, kfp_run_id, Stage.TRAIN, edge=name):
        step_edge_train(spec, name, plan.path, global_state.path, int(round_number), update.path)
    update.metadata["edge"] = name


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
    from entgan.steps import recorded_failure, step_edge_eval

    spec, name = JobSpec.model_validate_json(job), edge[EDGE_LABEL]
    with recorded_failure(spec, kfp_run_id, Stage.EVAL, edge=name):
        counts = step_edge_eval(spec, name, plan.path, global_state.path, kit.path, stats.path)
    stats.metadata.update({f"holdout.{t}": n for t, n in counts.items()})
