"""Assertions on the compiled pipeline YAML: locally, kubernetes settings are ignored, so this is
where node pinning, GPU requests and tolerations are checked."""

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from entgan.registry import TaskLibrary
from entgan.steps.common import TaskContext
from entgan.steps.job import CreateFiles, create_job
from entgan.config import DEFAULT_IMAGE, EDGE_LABEL, load_job, parse_job
from pipelines.entgan_pipeline import EDGE_TAINT_KEY, compile_job

REPO = Path(__file__).resolve().parents[1]
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


def test_training_tasks_request_gpus(compiled):
    job, doc, *_ = compiled
    train = _executors(doc, "train-edge")
    assert len(train) == job.train.rounds
    for spec in train.values():
        accelerator = spec["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu"
        assert accelerator["resourceCount"] == str(max(e.gpus for e in job.edges)) == "2"
    for spec in {**_executors(doc, "plan"), **_executors(doc, "deploy")}.values():
        assert "accelerator" not in spec["container"].get("resources", {})


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
