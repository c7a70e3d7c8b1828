"""The pipeline's tasks, written once.

`describe(builder, rounds)` walks the pipeline in order: which task runs where (the cloud, or
each edge), with which inputs from which earlier task, inside the exit handler and behind the
trigger. Two builders walk it: the KFP one (pipelines/entgan_pipeline.py: ParallelFor,
Collected, node pinning, retries, display names) and the in-process one (entgan/steps/local.py,
for tests and benchmarks), so a new task cannot be forgotten in either.

A builder has:
    cloud(task, display, retry=False, round_number=0, **inputs) -> handle
    each_edge(created, task, display, gpus=False, round_number=0, **inputs) -> handle
    if_trained(plan, body)      run body() when the plan says "train" (the trigger is met)
    exit_handler(task, display, body)   run body(), then the exit task whatever happened
and a handle has `out(name)` (one output) and `collected(name)` (that output of every edge).
Input and output names are the fields of each step's files (e.g. `EvaluateFiles`), which are
also the KFP components' parameter names.

`cloud_task` and `edge_task` are how a component runs its step (components/).
"""

from __future__ import annotations

from entgan.job.lifecycle import Stage
from entgan.job.spec import EDGE_LABEL, JobSpec
from entgan.steps import deploy, evaluate, job, plan, train
from entgan.steps.common import TaskContext
from entgan.steps.records import recorded_failure, run_edge_task

# task -> (step function, its files, the lifecycle stage a failure is recorded in)
TASKS = {
    "create_job": (job.create_job, job.CreateFiles, Stage.TRAIN),
    "inspect_edge": (job.inspect_edge, job.InspectFiles, Stage.TRAIN),
    "plan": (plan.plan_job, plan.PlanFiles, Stage.TRAIN),
    "train_edge": (train.train_edge, train.TrainFiles, Stage.TRAIN),
    "aggregate": (train.aggregate, train.AggregateFiles, Stage.TRAIN),
    "prepare_eval": (evaluate.prepare_eval, evaluate.PrepareFiles, Stage.EVAL),
    "eval_edge": (evaluate.eval_edge, evaluate.EdgeEvalFiles, Stage.EVAL),
    "evaluate": (evaluate.evaluate, evaluate.EvaluateFiles, Stage.EVAL),
    "deploy": (deploy.deploy, deploy.DeployFiles, Stage.DEPLOY),
}
EXIT_TASK = "finish"


def describe(b, rounds: int) -> None:
    """The pipeline: create job, inspect each edge, plan; when the trigger is met, `rounds`
    rounds of [train at each edge, aggregate], then prepare eval, eval at each edge, evaluate,
    deploy; `finish` always last."""

    def lifecycle():
        created = b.cloud("create_job", "create job")
        inspect = b.each_edge(created, "inspect_edge", "inspect edge (each edge)", snapshot=created.out("snapshot"))
        planned = b.cloud("plan", "plan", reports=inspect.collected("report"), snapshot=created.out("snapshot"))
        b.if_trained(planned, lambda: _train_eval_deploy(b, rounds, created, planned))

    b.exit_handler(EXIT_TASK, "finish", lifecycle)


def _train_eval_deploy(b, rounds: int, created, planned) -> None:
    """The train, eval and deploy stages (only when the trigger is met)."""
    the_plan, start = planned.out("plan"), planned.out("global_state")
    state = start
    for r in range(1, rounds + 1):
        trained = b.each_edge(created, "train_edge", f"train round {r} (each edge)", gpus=True, round_number=r,
                              plan=the_plan, global_state=state)
        aggregated = b.cloud("aggregate", f"aggregate round {r}", retry=True, round_number=r, plan=the_plan,
                             global_state=state, updates=trained.collected("update"))
        state = aggregated.out("new_state")
    prepared = b.cloud("prepare_eval", "prepare eval", plan=the_plan, initial_state=start, global_state=state)
    evaluated = b.each_edge(created, "eval_edge", "eval (each edge)", plan=the_plan, global_state=state,
                            kit=prepared.out("kit"))
    scored = b.cloud("evaluate", "evaluate", plan=the_plan, initial_state=start, global_state=state,
                     stats=evaluated.collected("stats"))
    b.cloud("deploy", "deploy", retry=True, plan=the_plan, global_state=state, report=scored.out("report"),
            real_stats=scored.out("real_stats"))


# ---------------------------------------------------------------- inside a component


def cloud_context(job_json: str, kfp_run_id: str) -> TaskContext:
    """A cloud task's context: the job from its JSON, the job's task library."""
    from entgan.library.registry import library_for

    spec = JobSpec.model_validate_json(job_json)
    return TaskContext(spec, kfp_run_id, library_for(spec))


def cloud_task(task: str, job_json: str, kfp_run_id: str, work, round_number: int = 0):
    """Run a cloud step, `work(ctx)`; if it raises, its stage is recorded Failed first."""
    ctx = cloud_context(job_json, kfp_run_id)
    ctx.round = int(round_number)
    with recorded_failure(ctx.job, kfp_run_id, TASKS[task][2]):
        return work(ctx)


def edge_task(task: str, job_json: str, edge: dict, kfp_run_id: str, output: str, work, round_number: int = 0):
    """Run an edge step, `work(ctx)`, for the edge named in its node selector; a failure becomes
    a failure record at `output` (`run_edge_task`). Returns (edge name, result or None)."""
    spec, name = JobSpec.model_validate_json(job_json), edge[EDGE_LABEL]
    ctx = TaskContext(spec, kfp_run_id, None, name, int(round_number))
    return name, run_edge_task(spec, kfp_run_id, TASKS[task][2], name, output, lambda: work(ctx), round_=ctx.round)
