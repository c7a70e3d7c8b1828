"""The EntGAN pipeline: built from a `JobSpec`, compiled to KFP v2 YAML, run locally or on Kubeflow.

    inspect edges (ParallelFor) -> plan
    -> round 1..R: train at each edge (ParallelFor) -> aggregate in the cloud
    -> federated evaluation: eval at each edge (ParallelFor) -> evaluate -> deploy

The tasks and their inputs are listed once, in `entgan.steps.wiring.describe`; this module
builds that description with KFP (the in-process runner, `entgan.steps.local`, builds it too).

Every edge task runs on its own node: the ParallelFor items are the edges' node selectors
(`entgan.io/edge: <name>` plus the job's extra labels), produced by the `create job` task and
applied with `add_node_selector_json`, plus a toleration for tainted edge nodes. (The items
come from a task because KFP turns the keys of literal dict items into Python variables, and
label keys such as `kubernetes.io/hostname` are not legal names.)

Each training task requests exactly its own edge's GPUs. When all edges ask for the same
count, that count is compiled in. When they differ, a tiny `edge gpus` task in each loop
iteration returns the edge's count as a string (it runs on the edge's own node, which holds the
job image already, with imagePullPolicy IfNotPresent: no image pull per edge and round) and the
training task's accelerator limit
reads it (`set_accelerator_limit(<channel>)`: the backend's driver resolves the channel to the
task's input string value and sets `limits: nvidia.com/gpu` from it; a field of a loop item
does not compile, and nested loops with one `Collected` fail under kfp.local; see
docs/kubeflow-backend-notes.md, section 3).

Edge tasks get a pod deadline (`kubernetes.set_timeout`: a pod that hangs once running is
stopped) and retries with a bounded backoff (`Deadlines`: tries x pod deadline < run deadline),
as do `aggregate` (a lost one would waste the round) and `deploy`; the whole run a workflow deadline (`PipelineConfig(active_deadline_seconds)`: a
pod that no node accepts stays Pending, which a pod deadline does not count). Caching is off
on every task: each one reads or writes the task library or the edges.

In the Kubeflow UI every task has a display name ("train round 2 (each edge)", "aggregate round
2"); KFP cannot name a loop iteration after its item (kubeflow/pipelines#14008), so the edge of
an iteration is in its inputs and logs. The loops keep KFP's own names: a `ParallelFor(name=...)`
whose outputs are `Collected` fails to resolve on the KFP backend (kubeflow/pipelines#13239).
"""

from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components import build
from entgan.job.spec import JobSpec
from entgan.job.storage import CONFIG_NAME, ENDPOINT_ENVS, KEY_ENV, SECRET_ENV, SECRET_NAME
from entgan.steps.deadlines import Deadlines
from entgan.steps.wiring import describe

EDGE_TAINT_KEY = "node-role.kubernetes.io/edge"  # KubeEdge's taint on edge nodes
GPU = "nvidia.com/gpu"


def _no_cache(task):
    """Every EntGAN task reads or writes the task library or the edges: never replay one from
    KFP's cache (its run-id input already makes each run's fingerprint new; this says so)."""
    return task.set_caching_options(False)


def _on_edge_node(task, edge_selector) -> None:
    """Place a task on its edge's node: node selector and a toleration for tainted edge nodes."""
    kubernetes.add_node_selector_json(task, node_selector_json=edge_selector)
    kubernetes.add_toleration(task, key=EDGE_TAINT_KEY, operator="Exists", effect="NoSchedule")


def _pin_to_edge(task, edge_selector, deadlines: Deadlines) -> None:
    """Place an edge task on its edge node: node selector, toleration, credentials, deadline, retries."""
    _on_edge_node(task, edge_selector)
    # Edge data may live in S3/MinIO: credentials only from the Secret, the endpoint from a ConfigMap.
    kubernetes.use_secret_as_env(
        task, secret_name=SECRET_NAME, secret_key_to_env={KEY_ENV: KEY_ENV, SECRET_ENV: SECRET_ENV}, optional=True
    )
    kubernetes.use_config_map_as_env(
        task, config_map_name=CONFIG_NAME, config_map_key_to_env={ENDPOINT_ENVS[0]: ENDPOINT_ENVS[0]}, optional=True
    )
    kubernetes.set_timeout(task, deadlines.edge_task_s)
    _no_cache(task)
    _retry(task, deadlines)


def _retry(task, deadlines: Deadlines):
    """Retry a task whose pod dies with a bounded backoff (30 s, then 60 s by default). Argo
    retries a `Failed` pod (OOM kill, eviction, its own deadline) but not an `Error` one (a node
    lost with its pod: "pod deleted"): KFP's retryStrategy has no policy, so Argo's default
    `OnFailure` applies. An edge task's own errors do not fail it (run_edge_task writes a failure
    record and the round goes on without that edge); aggregate and deploy record nothing twice
    when they run again (`entgan.steps.records.record`). `Deadlines` bounds tries x pod deadline."""
    backoff = deadlines.backoffs_s()
    return task.set_retry(num_retries=deadlines.retries, backoff_duration=f"{deadlines.backoff_s}s",
                          backoff_factor=2.0, backoff_max_duration=f"{max(backoff or [deadlines.backoff_s])}s")


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

    def __init__(self, c, job_json, job: JobSpec, deadlines: Deadlines) -> None:
        self.c, self.job_json, self.deadlines = c, job_json, deadlines
        self.gpu_counts = sorted({e.gpus for e in job.edges})
        self.run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # components find the job's MLflow run by it

    def _request_gpus(self, task, edge) -> None:
        """The training task's accelerator limit: its own edge's GPUs (see the module doc)."""
        if len(self.gpu_counts) == 1:
            if self.gpu_counts[0]:
                task.set_accelerator_type(GPU).set_accelerator_limit(self.gpu_counts[0])
            return
        # On the edge's own node, which holds the job image already (inspect edge ran it there):
        # no image pull per edge and round, whatever node would otherwise take the pod.
        count = _no_cache(self.c.edge_gpus(job=self.job_json, edge=edge).set_display_name("GPUs of the edge"))
        _on_edge_node(count, edge)
        kubernetes.set_image_pull_policy(count, "IfNotPresent")
        _retry(count, self.deadlines)
        task.set_accelerator_type(GPU).set_accelerator_limit(count.output)

    def _inputs(self, round_number: int, inputs: dict) -> dict:
        return {**({"round_number": round_number} if round_number else {}), **inputs}

    def cloud(self, task: str, display: str, retry: bool = False, round_number: int = 0, **inputs) -> _Task:
        made = getattr(self.c, task)(job=self.job_json, kfp_run_id=self.run_id, **self._inputs(round_number, inputs))
        made.set_display_name(display)
        _no_cache(made)
        if retry:
            _retry(made, self.deadlines)
        return _Task(made)

    def each_edge(self, created: _Task, task: str, display: str, gpus: bool = False, round_number: int = 0,
                  **inputs) -> _Task:
        with dsl.ParallelFor(created.out("Output")) as edge:
            made = getattr(self.c, task)(job=self.job_json, edge=edge, kfp_run_id=self.run_id,
                                         **self._inputs(round_number, inputs)).set_display_name(display)
            _pin_to_edge(made, edge, self.deadlines)
            if gpus:
                self._request_gpus(made, edge)
        return _Task(made)

    def if_trained(self, planned: _Task, body) -> None:
        with dsl.If(planned.out("Output") == "train", name="trigger-met"):
            body()

    def exit_handler(self, task: str, display: str, body) -> None:
        finish = _no_cache(getattr(self.c, task)(job=self.job_json, kfp_run_id=self.run_id).set_display_name(display))
        with dsl.ExitHandler(finish, name="lifecycle"):
            body()


def build_pipeline(job: JobSpec, deadlines: Deadlines = Deadlines()):
    """The pipeline function for `job` (pass it to the compiler or call it under kfp.local)."""
    c = build(job.image)
    rounds = job.train.rounds

    @dsl.pipeline(
        name=f"entgan-{job.name}",
        description=f"EntGAN job '{job.name}': federated GAN training on {len(job.edges)} edges, "
        f"{rounds} rounds of '{job.train.strategy}', evaluation and gated deploy.",
        pipeline_config=dsl.PipelineConfig(active_deadline_seconds=deadlines.run_s),
    )
    def pipeline(job_json: str = job.model_dump_json()):
        """EntGAN: federated GAN training per data type, federated evaluation, gated deploy.

        Args:
            job_json: The whole job as JSON (an `entgan.job.spec.JobSpec`; `entgan compile JOB` fills it
                in from the job file): edges and their data, data types, trigger, train/eval/deploy
                settings, the MLflow task library. A run may change settings here (e.g. `train.lr`,
                the trigger or `deploy.max_fid`); the edges and `train.rounds` shape the compiled
                pipeline, so change those in the job file and compile again.
        """
        describe(_KfpBuilder(c, job_json, job, deadlines), rounds)

    return pipeline


def compile_job(job: JobSpec, output: str | Path, deadlines: Deadlines = Deadlines()) -> Path:
    """Write the pipeline YAML of `job` (for upload to Kubeflow or a local run). Refuses (with
    `pipelines.package_size.PipelineTooLarge`) a pipeline whose Argo Workflow would not fit the
    backend (`check_package_size`), naming the most rounds that fit the job's edges."""
    from pipelines.package_size import PipelineTooLarge, check_package_size

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(job, deadlines), str(output))
    try:
        check_package_size(output)
    except PipelineTooLarge:
        check_package_size(output, most_rounds=most_rounds(job, deadlines))
    return output


def workflow_bytes(job: JobSpec, deadlines: Deadlines = Deadlines()) -> int:
    """The modelled Argo Workflow size of `job`'s run (spec and compressed status; `pipelines.workflow_size`)."""
    import tempfile

    from pipelines.package_size import package_workflow_size

    with tempfile.TemporaryDirectory(prefix="entgan-size-") as tmp:
        path = Path(tmp) / "p.yaml"
        compiler.Compiler().compile(build_pipeline(job, deadlines), str(path))
        return package_workflow_size(path).total


def most_rounds(job: JobSpec, deadlines: Deadlines = Deadlines()) -> int:
    """The cap on `train.rounds` for `job`'s edges and types: the most rounds whose modelled
    Workflow fits `pipelines.workflow_size.BUDGET` (0 if not even one does). The size grows
    linearly in rounds: a secant estimate from 1 and 3 rounds, checked and moved to the edge."""
    from pipelines.workflow_size import BUDGET

    def size(rounds: int) -> int:
        return workflow_bytes(job.model_copy(update={"train": job.train.model_copy(update={"rounds": rounds})}),
                              deadlines)

    sizes: dict[int, int] = {}

    def known(rounds: int) -> int:
        if rounds not in sizes:
            sizes[rounds] = size(rounds)
        return sizes[rounds]

    if known(1) > BUDGET:
        return 0
    known(3)
    low, high = 1, 3  # a secant step between two known sizes, then to the edge one round at a time
    for _ in range(3):
        slope = max(1.0, (sizes[high] - sizes[low]) / (high - low))
        guess = max(1, low + int((BUDGET - sizes[low]) // slope))
        if guess in sizes:
            break
        known(guess)
        low, high = sorted((high, guess))
    rounds = max(r for r, b in sizes.items() if b <= BUDGET)
    while known(rounds + 1) <= BUDGET:
        rounds += 1
    return rounds
