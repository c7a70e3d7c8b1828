"""The EntGAN pipeline: built from a `JobSpec`, compiled to KFP v2 YAML, run locally or on Kubeflow.

    inspect edges (ParallelFor) -> plan
    -> round 1..R: train at each edge (ParallelFor) -> aggregate in the cloud
    -> federated evaluation: eval at each edge (ParallelFor) -> evaluate -> deploy

Every edge task runs on its own node: the ParallelFor items are the edges' node selectors
(`entgan.io/edge: <name>` plus the job's extra labels), produced by the `create job` task and
applied with `add_node_selector_json`, plus a GPU request and a toleration for tainted edge
nodes. (The items come from a task because KFP turns the keys of literal dict items into
Python variables, and label keys such as `kubernetes.io/hostname` are not legal names.)
"""

from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components import build
from entgan.config import JobSpec

EDGE_TAINT_KEY = "node-role.kubernetes.io/edge"  # KubeEdge's taint on edge nodes


def _pin_to_edge(task, edge_selector, gpus: int) -> None:
    """Place an edge task on its edge node: node selector, toleration, GPU request."""
    kubernetes.add_node_selector_json(task, node_selector_json=edge_selector)
    kubernetes.add_toleration(task, key=EDGE_TAINT_KEY, operator="Exists", effect="NoSchedule")
    if gpus:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)


def build_pipeline(job: JobSpec):
    """The pipeline function for `job` (pass it to the compiler or call it under kfp.local)."""
    c = build(job.image)
    # One GPU request for all edge tasks (KFP sets it per task, not per loop iteration).
    gpus = max(e.gpus for e in job.edges)
    rounds = job.train.rounds

    @dsl.pipeline(
        name=f"entgan-{job.name}",
        description=f"EntGAN job '{job.name}': federated GAN training on {len(job.edges)} edges, "
        f"{rounds} rounds of '{job.train.strategy}', evaluation and gated deploy.",
    )
    def pipeline(job_json: str = job.model_dump_json()) -> dsl.Artifact:
        edges = c.create_job(job=job_json).set_display_name("create job").output
        with dsl.ParallelFor(edges, name="edges-inspect") as edge:
            inspect = c.inspect_edge(job=job_json, edge=edge).set_display_name("inspect edge")
            _pin_to_edge(inspect, edge, gpus=0)
        plan = c.plan(job=job_json, reports=dsl.Collected(inspect.outputs["report"])).set_display_name("plan")
        state = plan.outputs["global_state"]
        for r in range(1, rounds + 1):
            with dsl.ParallelFor(edges, name=f"edges-round-{r}") as edge:
                train = c.train_edge(
                    job=job_json, edge=edge, round_number=r, plan=plan.outputs["plan"], global_state=state
                ).set_display_name(f"train round {r}")
                _pin_to_edge(train, edge, gpus)
            aggregate = c.aggregate(
                job=job_json,
                round_number=r,
                plan=plan.outputs["plan"],
                global_state=state,
                updates=dsl.Collected(train.outputs["update"]),
            ).set_display_name(f"aggregate round {r}")
            state = aggregate.outputs["new_state"]
        with dsl.ParallelFor(edges, name="edges-eval") as edge:
            evaluation = c.eval_edge(
                job=job_json, edge=edge, plan=plan.outputs["plan"], global_state=state
            ).set_display_name("eval edge")
            _pin_to_edge(evaluation, edge, gpus=0)
        scores = c.evaluate(
            job=job_json,
            plan=plan.outputs["plan"],
            initial_state=plan.outputs["global_state"],
            global_state=state,
            stats=dsl.Collected(evaluation.outputs["stats"]),
        ).set_display_name("evaluate")
        deploy = c.deploy(
            job=job_json,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            plan=plan.outputs["plan"],
            global_state=state,
            report=scores.outputs["report"],
        ).set_display_name("deploy")
        return deploy.outputs["summary"]

    return pipeline


def compile_job(job: JobSpec, output: str | Path) -> Path:
    """Write the pipeline YAML of `job` (for upload to Kubeflow or a local run)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(job), str(output))
    return output
