"""The EntGAN pipeline: built from a `JobSpec`, compiled to KFP v2 YAML, run locally or on Kubeflow.

    inspect edges (ParallelFor) -> plan
    -> round 1..R: train at each edge (ParallelFor) -> aggregate in the cloud
    -> federated evaluation: eval at each edge (ParallelFor) -> evaluate -> deploy

Every edge task runs on its own node: the ParallelFor items are the edges' node selectors
(`entgan.io/edge: <name>` plus the job's extra labels), produced by the `create job` task and
applied with `add_node_selector_json`, plus a GPU request and a toleration for tainted edge
nodes. (The items come from a task because KFP turns the keys of literal dict items into
Python variables, and label keys such as `kubernetes.io/hostname` are not legal names.)

In the Kubeflow UI every task has a display name ("train round 2 (each edge)", "aggregate round
2"); KFP cannot name a loop iteration after its item (kubeflow/pipelines#14008), so the edge of
an iteration is in its inputs and logs. The loops keep KFP's own names: a `ParallelFor(name=...)`
whose outputs are `Collected` fails to resolve on the KFP backend (kubeflow/pipelines#13239).
"""

from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components import build
from entgan.config import JobSpec
from entgan.storage import CONFIG_NAME, ENDPOINT_ENVS, KEY_ENV, SECRET_ENV, SECRET_NAME

EDGE_TAINT_KEY = "node-role.kubernetes.io/edge"  # KubeEdge's taint on edge nodes


def _pin_to_edge(task, edge_selector, gpus: int) -> None:
    """Place an edge task on its edge node: node selector, toleration, GPU request."""
    kubernetes.add_node_selector_json(task, node_selector_json=edge_selector)
    kubernetes.add_toleration(task, key=EDGE_TAINT_KEY, operator="Exists", effect="NoSchedule")
    # Edge data may live in S3/MinIO: credentials only from the Secret, the endpoint from a ConfigMap.
    kubernetes.use_secret_as_env(
        task, secret_name=SECRET_NAME, secret_key_to_env={KEY_ENV: KEY_ENV, SECRET_ENV: SECRET_ENV}, optional=True
    )
    kubernetes.use_config_map_as_env(
        task, config_map_name=CONFIG_NAME, config_map_key_to_env={ENDPOINT_ENVS[0]: ENDPOINT_ENVS[0]}, optional=True
    )
    if gpus:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    _retry(task)


def _retry(task):
    """Retry a task that dies (pod killed, node lost, evicted) with backoff: 30 s, then 60 s.
    An edge task's own errors do not fail it (steps.run_edge_task writes a failure record and
    the round goes on without that edge); the deploy step is idempotent, so it may rerun."""
    return task.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="300s")


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
    def pipeline(job_json: str = job.model_dump_json()):
        """EntGAN: federated GAN training per data type, federated evaluation, gated deploy.

        Args:
            job_json: The whole job as JSON (an `entgan.config.JobSpec`; `entgan compile JOB` fills it
                in from the job file): edges and their data, data types, trigger, train/eval/deploy
                settings, the MLflow task library. A run may change settings here (e.g. `train.lr`,
                the trigger or `deploy.max_fid`); the edges and `train.rounds` shape the compiled
                pipeline, so change those in the job file and compile again.
        """
        finish = c.finish(job=job_json, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_display_name("finish")
        with dsl.ExitHandler(finish, name="lifecycle"):
            run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # components find the job's MLflow run by it
            created = c.create_job(job=job_json, kfp_run_id=run_id).set_display_name("create job")
            edges = created.outputs["Output"]
            with dsl.ParallelFor(edges) as edge:
                inspect = c.inspect_edge(
                    job=job_json, edge=edge, kfp_run_id=run_id, snapshot=created.outputs["snapshot"]
                ).set_display_name("inspect edge (each edge)")
                _pin_to_edge(inspect, edge, gpus=0)
            plan = c.plan(
                job=job_json,
                kfp_run_id=run_id,
                reports=dsl.Collected(inspect.outputs["report"]),
                snapshot=created.outputs["snapshot"],
            ).set_display_name("plan")
            with dsl.If(plan.outputs["Output"] == "train", name="trigger-met"):
                _train_eval_deploy(c, job, job_json, edges, run_id, plan, gpus)

    return pipeline


def _train_eval_deploy(c, job: JobSpec, job_json, edges, run_id, plan, gpus: int) -> None:
    """The train, eval and deploy stages (only when the trigger is met)."""
    state = plan.outputs["global_state"]
    for r in range(1, job.train.rounds + 1):
        with dsl.ParallelFor(edges) as edge:
            train = c.train_edge(
                job=job_json,
                edge=edge,
                kfp_run_id=run_id,
                round_number=r,
                plan=plan.outputs["plan"],
                global_state=state,
            ).set_display_name(f"train round {r} (each edge)")
            _pin_to_edge(train, edge, gpus)
        aggregate = c.aggregate(
            job=job_json,
            kfp_run_id=run_id,
            round_number=r,
            plan=plan.outputs["plan"],
            global_state=state,
            updates=dsl.Collected(train.outputs["update"]),
        ).set_display_name(f"aggregate round {r}")
        state = aggregate.outputs["new_state"]
    prepare = c.prepare_eval(
        job=job_json,
        kfp_run_id=run_id,
        plan=plan.outputs["plan"],
        initial_state=plan.outputs["global_state"],
        global_state=state,
    ).set_display_name("prepare eval")
    with dsl.ParallelFor(edges) as edge:
        evaluation = c.eval_edge(
            job=job_json,
            edge=edge,
            kfp_run_id=run_id,
            plan=plan.outputs["plan"],
            global_state=state,
            kit=prepare.outputs["kit"],
        ).set_display_name("eval (each edge)")
        _pin_to_edge(evaluation, edge, gpus=0)
    scores = c.evaluate(
        job=job_json,
        kfp_run_id=run_id,
        plan=plan.outputs["plan"],
        initial_state=plan.outputs["global_state"],
        global_state=state,
        stats=dsl.Collected(evaluation.outputs["stats"]),
    ).set_display_name("evaluate")
    deploy = c.deploy(
        job=job_json,
        kfp_run_id=run_id,
        plan=plan.outputs["plan"],
        global_state=state,
        report=scores.outputs["report"],
        real_stats=scores.outputs["real_stats"],
    ).set_display_name("deploy")
    _retry(deploy)


def compile_job(job: JobSpec, output: str | Path) -> Path:
    """Write the pipeline YAML of `job` (for upload to Kubeflow or a local run)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(job), str(output))
    return output
