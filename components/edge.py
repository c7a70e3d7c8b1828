"""Edge components: one task per edge node, pinned to it by node selector.

Each body is a thin adapter: call one `entgan.steps` function through `edge_task` (a failing
edge writes a failure record instead of its output and the round goes on without it; the
failure is recorded with the stage, the edge and the error), write outputs. Imports live
inside the bodies because KFP ships each body on its own.
"""

from kfp.dsl import Artifact, Input, Metrics, Output


def inspect_edge(job: str, edge: dict, kfp_run_id: str, snapshot: Input[Artifact], report: Output[Artifact]):
    """Count the edge's images per type (failing early, by name, on a corrupt image) and, with the
    library's evaluator, per-type feature statistics and images it cannot place."""
    from entgan.steps.job import InspectFiles, inspect_edge
    from entgan.steps.wiring import edge_task

    files = InspectFiles(snapshot.path, report.path)
    edge_task("inspect_edge", job, edge, kfp_run_id, files.report, lambda ctx: inspect_edge(ctx, files))


def train_edge(job: str, edge: dict, kfp_run_id: str, round_number: int, plan: Input[Artifact],
               global_state: Input[Artifact], update: Output[Artifact], metrics: Output[Metrics]):
    """One round of local GAN training for every type the edge holds; writes its update bundle
    and, for the run page, the edge's final losses and image count per type."""
    from entgan.steps.train import TrainFiles, train_edge
    from entgan.steps.wiring import edge_task

    files = TrainFiles(plan.path, global_state.path, update.path)
    name, result = edge_task("train_edge", job, edge, kfp_run_id, files.update, lambda ctx: train_edge(ctx, files),
                             round_number)
    update.metadata.update({"edge": name, "failed": result is None})
    for data_type, losses in (result.losses.items() if result else ()):
        for key, value in losses.items():
            metrics.log_metric(f"{data_type}.{key}", float(value))
        metrics.log_metric(f"{data_type}.images", float(result.num_examples.get(data_type, 0)))


def eval_edge(job: str, edge: dict, kfp_run_id: str, plan: Input[Artifact], global_state: Input[Artifact],
              kit: Input[Artifact], stats: Output[Artifact]):
    """Feature statistics and metric parts (e.g. CAS counts) on the edge's real held-out images
    (no pixels leave)."""
    from entgan.steps.evaluate import EdgeEvalFiles, eval_edge
    from entgan.steps.wiring import edge_task

    files = EdgeEvalFiles(plan.path, global_state.path, kit.path, stats.path)
    _, counts = edge_task("eval_edge", job, edge, kfp_run_id, files.stats, lambda ctx: eval_edge(ctx, files))
    stats.metadata.update({f"holdout.{t}": n for t, n in (counts or {}).items()})
