"""Assertions on the compiled pipeline YAML: locally, kubernetes settings are ignored, so this is
where node pinning, GPU requests and tolerations are checked."""

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from entgan.job.spec import DEFAULT_IMAGE, EDGE_LABEL, load_job, parse_job
from entgan.library.registry import TaskLibrary
from entgan.steps.common import TaskContext
from entgan.steps.job import CreateFiles, create_job
from pipelines.entgan_pipeline import EDGE_TAINT_KEY, compile_job

REPO = Path(__file__).resolve().parents[2]
EDGE_TASKS = ("inspect-edge", "train-edge", "eval-edge")


def _job():
    data = yaml.safe_load((REPO / "jobs" / "demo.yaml").read_text())
    data["edges"][0]["node_selector"] = {"kubernetes.io/hostname": "robot-dock-1"}
    data["edges"][1]["gpus"] = 2
    data["train"]["rounds"] = 3
    return parse_job(data)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    job = _job()
    path = compile_job(job, tmp_path_factory.mktemp("c") / "p.yaml")
    pipeline_doc, platform_doc = list(yaml.safe_load_all(path.read_text()))
    # Both documents parse strictly into KFP's protobuf messages.
    pipeline = json_format.ParseDict(pipeline_doc, pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec())
    return job, pipeline_doc, platform_doc, pipeline, platform, path.read_text()


def _executors(doc, prefix):
    return {k: v for k, v in doc["deploymentSpec"]["executors"].items() if k.startswith(f"exec-{prefix}")}


def test_rounds_are_unrolled_and_named(compiled):
    job, doc, *_ = compiled
    dags = [doc["root"]["dag"]] + [c["dag"] for c in doc["components"].values() if "dag" in c]
    tasks = [t for dag in dags for t in dag["tasks"]]
    assert len([t for t in tasks if t.startswith("train-edge")]) == job.train.rounds
    assert len([t for t in tasks if t.startswith("aggregate")]) == job.train.rounds
    for name in ("create-job", "plan", "prepare-eval", "evaluate", "deploy"):
        assert name in tasks
    # The whole job runs under an exit handler (`finish` records a failure and ends the MLflow
    # run), and training only when the plan's trigger decision is "train".
    assert doc["root"]["dag"]["tasks"]["finish"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    conditions = [t["triggerPolicy"]["condition"] for dag in dags for t in dag["tasks"].values()
                  if "condition" in t.get("triggerPolicy", {})]
    assert any("plan-Output" in c and "'train'" in c for c in conditions), conditions


def test_every_edge_task_is_pinned_to_its_own_node(compiled, tmp_path_factory):
    job, doc, platform_doc, *_ = compiled
    executors = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # Every execution of an edge component takes its node selector from its loop item ...
    edge_execs = [name for name in doc["deploymentSpec"]["executors"] if name.startswith(tuple(f"exec-{t}" for t in EDGE_TASKS))]
    assert len(edge_execs) == 2 + job.train.rounds
    for name in edge_execs:
        selector = executors[name]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        assert selector.endswith("create-job-Output-loop-item"), (name, selector)
        assert {"key": EDGE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in executors[name]["tolerations"]
    # ... every loop runs over the output of `create job` ...
    loops = [doc["root"]["dag"]["tasks"]] + [c["dag"]["tasks"] for c in doc["components"].values() if "dag" in c]
    for_loops = [t for tasks in loops for t in tasks.values() if "parameterIterator" in t]
    assert len(for_loops) == 2 + job.train.rounds
    for loop in for_loops:
        assert loop["parameterIterator"]["items"]["inputParameter"].endswith("create-job-Output")
    # ... and `create job` turns the job into exactly one selector per edge, each its own.
    state = tmp_path_factory.mktemp("state")
    library = TaskLibrary(f"sqlite:///{state / 'mlflow.db'}", job.name, (state / "artifacts").as_uri())
    items = create_job(TaskContext(job, "kfp-run-1", library), CreateFiles(state / "snapshot.safetensors"))
    assert items == [{EDGE_LABEL: e.name, **e.node_selector} for e in job.edges]
    assert items[0] == {EDGE_LABEL: "edge-1", "kubernetes.io/hostname": "robot-dock-1"}
    assert len({json.dumps(i, sort_keys=True) for i in items}) == len(job.edges)
    # Cloud tasks are not pinned to edges.
    for name in ("exec-plan", "exec-aggregate", "exec-evaluate", "exec-deploy"):
        assert "nodeSelector" not in executors.get(name, {})


def _compile_with_gpus(tmp_path, gpus: list[int], rounds: int = 2):
    data = yaml.safe_load((REPO / "jobs" / "demo.yaml").read_text())
    data["edges"] = [{"name": f"edge-{i}", "data": f"/data/edge-{i}", "gpus": g} for i, g in enumerate(gpus, 1)]
    data["train"]["rounds"] = rounds
    data["train"]["min_edges"] = min(len(gpus), data["train"].get("min_edges", 1))
    job = parse_job(data)
    pipeline_doc, platform_doc = yaml.safe_load_all(compile_job(job, tmp_path / "p.yaml").read_text())
    return job, pipeline_doc, platform_doc


def _dags(doc) -> dict:
    """Every DAG of the pipeline (root, loops, conditions, the exit handler) by component name."""
    return {"root": doc["root"]["dag"], **{k: c["dag"] for k, c in doc["components"].items() if "dag" in c}}


def _accelerator(doc, task) -> dict:
    executor = doc["components"][task["componentRef"]["name"]].get("executorLabel")
    if executor is None:  # a loop or a condition
        return {}
    return doc["deploymentSpec"]["executors"][executor]["container"].get("resources", {}).get("accelerator", {})


def test_each_training_task_requests_exactly_its_own_edges_gpus(tmp_path):
    # Setup: a mixed fleet, edges with 0, 1 and 2 GPUs
    job, doc, _ = _compile_with_gpus(tmp_path, [0, 1, 2])
    trains = [(name, dag, key, t) for name, dag in _dags(doc).items() for key, t in dag["tasks"].items()
              if key.startswith("train-edge")]
    assert len(trains) == job.train.rounds
    for name, dag, key, task in trains:
        # The limit is read at run time from the `edge gpus` task of the same loop iteration ...
        accelerator = _accelerator(doc, task)
        assert accelerator["resourceType"] == "nvidia.com/gpu"
        channel = accelerator["resourceCount"]
        assert channel.startswith("{{$.inputs.parameters['pipelinechannel--edge-gpus") and channel.endswith("-Output']}}")
        source = task["inputs"]["parameters"][channel.split("'")[1]]["taskOutputParameter"]
        counter = dag["tasks"][source["producerTask"]]
        assert counter["componentRef"]["name"].startswith("comp-edge-gpus") and source["outputParameterKey"] == "Output"
        # ... which takes the same loop item (the edge's node selector) as the training task.
        assert counter["inputs"]["parameters"]["edge"] == task["inputs"]["parameters"]["edge"]
        assert counter["inputs"]["parameters"]["edge"]["componentInputParameter"].endswith("create-job-Output-loop-item")
    # The component's output for each loop item `create job` makes: the string the backend's
    # driver parses as the pod's `limits: nvidia.com/gpu` (a number would resolve to nothing).
    from components import cloud

    items = [{EDGE_LABEL: e.name, **e.node_selector} for e in job.edges]
    assert [cloud.edge_gpus(job.model_dump_json(), item) for item in items] == ["0", "1", "2"]
    # Cloud and other edge tasks request no GPU.
    for dag in _dags(doc).values():
        for key, task in dag["tasks"].items():
            if "componentRef" in task and not key.startswith("train-edge"):
                assert _accelerator(doc, task) == {}, key


@pytest.mark.parametrize("gpus", [1, 0])
def test_a_fleet_with_one_gpu_count_has_it_compiled_in(tmp_path, gpus):
    _, doc, _ = _compile_with_gpus(tmp_path, [gpus, gpus])
    tasks = [(k, t) for dag in _dags(doc).values() for k, t in dag["tasks"].items()]
    assert not [k for k, _ in tasks if k.startswith("edge-gpus")]  # no extra task per edge and round
    for key, task in tasks:
        if key.startswith("train-edge"):
            accelerator = _accelerator(doc, task)
            assert (accelerator["resourceCount"], accelerator["resourceType"]) == ("1", "nvidia.com/gpu") if gpus \
                else accelerator == {}


def test_edge_tasks_and_the_run_have_deadlines(tmp_path):
    from pipelines.entgan_pipeline import Deadlines

    _, doc, platform = _compile_with_gpus(tmp_path, [0, 1])
    kubernetes = platform["platforms"]["kubernetes"]
    # The whole run (Pending pods included): Argo's workflow activeDeadlineSeconds.
    assert kubernetes["pipelineConfig"] == {"activeDeadlineSeconds": Deadlines().run_s}
    # Each edge task's pod, once running (the pod's activeDeadlineSeconds).
    executors = kubernetes["deploymentSpec"]["executors"]
    edge_execs = [e for e in doc["deploymentSpec"]["executors"] if e.startswith(tuple(f"exec-{t}" for t in EDGE_TASKS))]
    assert edge_execs
    for name in edge_execs:
        assert int(executors[name]["activeDeadlineSeconds"]) == Deadlines().edge_task_s, name


def test_caching_is_off_on_every_task(compiled):
    _, doc, *_ = compiled
    tasks = {key: t for dag in _dags(doc).values() for key, t in dag["tasks"].items()
             if "executorLabel" in doc["components"][t["componentRef"]["name"]]}  # not loops, conditions
    assert len(tasks) > 10
    for key, task in tasks.items():
        # enableCache false is written as an empty cachingOptions; a missing one means cached
        assert task.get("cachingOptions") == {}, key


def _one_more_round(job):
    return job.model_copy(update={"train": job.train.model_copy(update={"rounds": job.train.rounds + 1})})


def test_the_most_rounds_the_config_allows_fit_the_backend_and_one_more_is_refused(tmp_path):
    """`train.rounds`' bound is the most rounds whose Argo Workflow (spec and compressed status,
    `pipelines.workflow_size`) fits Argo's MAX_WORKFLOW_SIZE with headroom, for one edge."""
    from entgan.job.spec import MAX_ROUNDS, TrainSpec
    from pipelines.package_size import PipelineTooLarge, check_package_size
    from pipelines.workflow_size import BUDGET, MAX_WORKFLOW_SIZE

    assert any(getattr(m, "le", None) == MAX_ROUNDS for m in TrainSpec.model_fields["rounds"].metadata)
    job, _, _ = _compile_with_gpus(tmp_path, [0], rounds=MAX_ROUNDS)  # compile_job checks the size
    sizes = check_package_size(tmp_path / "p.yaml")
    assert sizes["workflow_bytes"] <= BUDGET < MAX_WORKFLOW_SIZE == 1024 * 1024
    assert sizes["workflow_bytes"] > BUDGET - 20 * 1024  # a tight bound: one round is ~20 KiB
    with pytest.raises(PipelineTooLarge, match=f"at most {MAX_ROUNDS} rounds fit 1 edges; lower train.rounds"):
        compile_job(_one_more_round(job), tmp_path / "bigger.yaml")


def test_a_bigger_fleet_has_a_lower_cap_and_it_is_the_one_compile_enforces(tmp_path):
    """Every edge adds nodes to the Workflow's status in every round: 16 edges of a mixed fleet
    (an `edge gpus` task per edge and round) fit far fewer rounds; at the cap the job compiles,
    one round more is refused."""
    from entgan.job.spec import MAX_ROUNDS
    from pipelines.entgan_pipeline import most_rounds
    from pipelines.package_size import PipelineTooLarge

    job, _, _ = _compile_with_gpus(tmp_path, [0, 1] * 8, rounds=2)
    cap = most_rounds(job)
    assert 1 < cap < MAX_ROUNDS
    at_cap = job.model_copy(update={"train": job.train.model_copy(update={"rounds": cap})})
    compile_job(at_cap, tmp_path / "cap.yaml")
    with pytest.raises(PipelineTooLarge, match=f"{cap + 1} rounds x 16 edges.* at most {cap} rounds fit 16 edges"):
        compile_job(_one_more_round(at_cap), tmp_path / "past.yaml")


def _retry_policies(doc) -> dict:
    return {key: t.get("retryPolicy") for dag in _dags(doc).values() for key, t in dag["tasks"].items()
            if "executorLabel" in doc["components"][t["componentRef"]["name"]]}


def test_tasks_whose_pod_dies_are_retried_with_a_bounded_backoff(tmp_path):
    from entgan.steps.deadlines import Deadlines

    _, doc, platform = _compile_with_gpus(tmp_path, [0, 1], rounds=2)
    policies = _retry_policies(doc)
    retried = {k.rstrip("-0123456789") for k, p in policies.items() if p}
    # Every edge task, the aggregate of each round (losing it would waste the round) and deploy;
    # not the one-shot cloud steps and not `finish`.
    assert retried == {"inspect-edge", "train-edge", "edge-gpus", "eval-edge", "aggregate", "deploy"}
    for key, policy in policies.items():
        if policy:
            assert policy == {"maxRetryCount": 2, "backoffDuration": "30s", "backoffFactor": 2.0,
                              "backoffMaxDuration": "60s"}, key
    # Tries x the pod deadline, with the backoffs, end before the run deadline ...
    deadlines = Deadlines()
    assert deadlines.worst_edge_task_s() == 3 * 6 * 3600 + 30 + 60 < deadlines.run_s
    # ... and a setting where they would not is refused.
    with pytest.raises(ValueError, match="longer than the run deadline"):
        Deadlines(edge_task_s=9 * 3600)


def test_the_gpu_count_runs_on_the_edge_node_without_an_image_pull(tmp_path):
    _, doc, platform = _compile_with_gpus(tmp_path, [0, 1, 2], rounds=2)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    counters = [e for e in doc["deploymentSpec"]["executors"] if e.startswith("exec-edge-gpus")]
    assert counters
    for name in counters:
        # the same node as the training task it feeds (which uses the same image) ...
        selector = executors[name]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"]
        assert selector.endswith("create-job-Output-loop-item")
        assert {"key": EDGE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in executors[name]["tolerations"]
        # ... and the image already there is used, never pulled again
        assert executors[name]["imagePullPolicy"] == "IfNotPresent"


def test_components_use_the_project_image_without_runtime_pip(compiled):
    _, doc, _, _, _, text = compiled
    for name, spec in doc["deploymentSpec"]["executors"].items():
        assert spec["container"]["image"] == DEFAULT_IMAGE, name
        assert "pip install" not in " ".join(spec["container"]["command"]), name
    assert "entgan.steps" in text  # thin adapters calling the library


def test_job_is_the_pipeline_parameter(compiled):
    job, doc, *_ = compiled
    default = doc["root"]["inputDefinitions"]["parameters"]["job_json"]["defaultValue"]
    assert json.loads(default)["name"] == job.name


def test_demo_job_compiles_from_the_file(tmp_path):
    path = compile_job(load_job(REPO / "jobs" / "demo.yaml"), tmp_path / "demo.yaml")
    assert path.stat().st_size > 10_000


def test_kubeflow_ui_names_documents_and_visualizes(compiled):
    job, doc, *_ = compiled
    # The pipeline parameter is documented on the run page.
    assert "JobSpec" in doc["root"]["inputDefinitions"]["parameters"]["job_json"]["description"]
    dags = [doc["root"]["dag"]] + [c["dag"] for c in doc["components"].values() if "dag" in c]
    tasks = {key: t for dag in dags for key, t in dag["tasks"].items()}
    names = {key: t["taskInfo"]["name"] for key, t in tasks.items()}
    assert names["aggregate-2"] == "aggregate round 2" and names["train-edge-3"] == "train round 3 (each edge)"
    assert names["inspect-edge"] == "inspect edge (each edge)" and names["deploy"] == "deploy"
    # Loops keep KFP's own names: `ParallelFor(name=...)` + `Collected` breaks on the KFP backend
    # (kubeflow/pipelines#13239).
    for key, task in tasks.items():
        if "parameterIterator" in task:
            assert task["taskInfo"]["name"] == key, key
    # Metrics (per type FID, precision, recall, CAS, losses) and the HTML report reach the run page.
    outputs = {name: c.get("outputDefinitions", {}).get("artifacts", {}) for name, c in doc["components"].items()}
    kinds = {name: {k: v["artifactType"]["schemaTitle"] for k, v in arts.items()} for name, arts in outputs.items()}
    assert kinds["comp-train-edge"]["metrics"] == "system.Metrics"
    assert kinds["comp-aggregate"]["metrics"] == kinds["comp-evaluate"]["metrics"] == "system.Metrics"
    assert kinds["comp-deploy"]["metrics"] == "system.Metrics" and kinds["comp-deploy"]["run_report"] == "system.HTML"
