"""The EntGAN pipeline: built from a `JobSpec`, compiled to KFP v2 YAML, run locally or on Kubeflow.

    inspect edges (ParallelFor) -> plan
    -> round 1..R: train at each edge (ParallelFor) -> aggregate in the cloud
    -> federated evaluation: eval at each edge (ParallelFor) -> evaluate -> deploy

The tasks and their inputs are listed once, in `entgan.steps.wiring.describe`; this module
builds that description with KFP (the in-process runner, `entgan.steps.local`, builds it too).

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
from entgan.steps.wiring import describe
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
    An edge task's own errors do not fail it (run_edge_task writes a failure record and
    the round goes on without that edge); the deploy step is idempotent, so it may rerun."""
    return task.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="300s")


class _Task:
    """A KFP task as `wiring.describe` sees it."""

    def __init__(self, task) -> None:
        self.task = task

    def out(self, name: str):
        return self.task.outputs[name]

    def collected(self, name: str):
        return dsl.Collected(self.task.outputs[name])


class _KfpBuilder:
    """Builds `wiring.describe` with KFP: components, loops over the edges, the trigger, the
    exit handler, display names, node pinning and retries."""

    def __init__(self, c, job_json, gpus: int) -> None:
        self.c, self.job_json, self.gpus = c, job_json, gpus
        self.run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # components find the job's MLflow run by it

    def _inputs(self, round_number: int, inputs: dict) -> dict:
        return {**({"round_number": round_number} if round_number else {}), **inputs}

    def cloud(self, task: str, display: str, retry: bool = False, round_number: int = 0, **inputs) -> _Task:
        made = getattr(self.c, task)(job=self.job_json, kfp_run_id=self.run_id, **self._inputs(round_number, inputs))
        made.set_display_name(display)
        if retry:
            _retry(made)
        return _Task(made)

    def each_edge(self, created: _Task, task: str, display: str, gpus: bool = False, round_number: int = 0,
                  **inputs) -> _Task:
        with dsl.ParallelFor(created.out("Output")) as edge:
            made = getattr(self.c, task)(job=self.job_json, edge=edge, kfp_run_id=self.run_id,
                                         **self._inputs(round_number, inputs)).set_display_name(display)
            _pin_to_edge(made, edge, self.gpus if gpus else 0)
        return _Task(made)

    def if_trained(self, planned: _Task, body) -> None:
        with dsl.If(planned.out("Output") == "train", name="trigger-met"):
            body()

    def exit_handler(self, task: str, display: str, body) -> None:
        finish = getattr(self.c, task)(job=self.job_json, kfp_run_id=self.run_id).set_display_name(display)
        with dsl.ExitHandler(finish, name="lifecycle"):
            body()


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
        describe(_KfpBuilder(c, job_json, gpus), rounds)

    return pipeline


def compile_job(job: JobSpec, output: str | Path) -> Path:
    """Write the pipeline YAML of `job` (for upload to Kubeflow or a local run)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(job), str(output))
    return output
