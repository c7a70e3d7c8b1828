"""Edge components: one task per edge node, pinned to it by node selector.

Each body is a thin adapter: parse the job, call one `entgan.steps` function, write outputs.
Imports live inside the bodies because KFP ships each body on its own.
"""

from kfp.dsl import Artifact, Input, Output


def inspect_edge(job: str, edge: dict, report: Output[Artifact]):
    """Count the edge's images per type (and fail early, by name, on a corrupt image)."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.steps import step_inspect

    step_inspect(JobSpec.model_validate_json(job), edge[EDGE_LABEL], report.path)


def train_edge(
    job: str,
    edge: dict,
    round_number: int,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    update: Output[Artifact],
):
    """One round of local GAN training for every type the edge holds; writes its update bundle."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.steps import step_edge_train

    name = edge[EDGE_LABEL]
    step_edge_train(JobSpec.model_validate_json(job), name, plan.path, global_state.path, int(round_number), update.path)
    update.metadata["edge"] = name


def eval_edge(
    job: str,
    edge: dict,
    plan: Input[Artifact],
    global_state: Input[Artifact],
    stats: Output[Artifact],
):
    """Feature statistics of the edge's real held-out images (no pixels leave the edge)."""
    from entgan.config import EDGE_LABEL, JobSpec
    from entgan.steps import step_edge_eval

    counts = step_edge_eval(JobSpec.model_validate_json(job), edge[EDGE_LABEL], plan.path, global_state.path, stats.path)
    stats.metadata.update({f"holdout.{t}": n for t, n in counts.items()})
