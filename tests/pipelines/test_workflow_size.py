"""The Argo Workflow model (`pipelines.workflow_size`) on EntGAN's own compiled pipeline.

No Argo or KFP backend can run here. While the model was written it was measured against the
Workflows that kubeflow/pipelines 2.17.0's Argo compiler produced for four of its test pipelines
(test_data/compiled-workflows/): the stored component arguments were identical and the whole
Workflow's bytes within 3 % (docs/kubeflow-backend-notes.md). Those upstream files are not copied
into this repository, so these tests check the model's rules on a pipeline compiled here.
"""

import copy
import json

import pytest
import yaml

from entgan.job.data import materialize_demo
from entgan.job.spec import parse_job
from pipelines.entgan_pipeline import compile_job
from pipelines.workflow_size import argo_workflow, go_json, status_bytes
from tests.conftest import tiny_job_dict


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("wf")
    materialize_demo(root / "edges", {"edge-1": {"box": 1.0}, "edge-2": {"box": 1.0}}, per_type=8)
    job = parse_job(tiny_job_dict(root, ["edge-1", "edge-2"]))
    docs = list(yaml.safe_load_all(compile_job(job, root / "p.yaml").read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else None)


def _loops(pipeline):
    dags = [pipeline["root"]["dag"]] + [c["dag"] for c in pipeline["components"].values() if "dag" in c]
    return [t for dag in dags for t in dag["tasks"].values() if "parameterIterator" in t]


def test_a_loops_task_json_is_inlined_twice_and_identical_executors_are_stored_once(compiled):
    pipeline, platform = compiled
    loops = _loops(pipeline)
    assert loops  # the edges' ParallelFor
    templates = go_json(argo_workflow(pipeline, platform)["spec"]["templates"])  # where the drivers' arguments are
    for task in loops:
        inlined = go_json(go_json(task))[1:-1]  # the task's JSON as a string inside the Workflow's JSON
        assert templates.count(inlined) == 2
    # Two components with one container: one `components-<hash>` argument.
    twice = copy.deepcopy(pipeline)
    label = next(iter(twice["deploymentSpec"]["executors"]))
    comp = next(k for k, c in twice["components"].items() if c.get("executorLabel") == label)
    twice["components"][comp + "-2"] = dict(twice["components"][comp], executorLabel=label + "-2")
    twice["deploymentSpec"]["executors"][label + "-2"] = twice["deploymentSpec"]["executors"][label]
    args = lambda p: {a["name"] for a in argo_workflow(p, platform)["spec"]["arguments"]["parameters"]}  # noqa: E731
    assert args(twice) == args(pipeline)


def test_every_task_is_inlined_in_the_workflow(compiled):
    pipeline, platform = compiled
    text = json.dumps(argo_workflow(pipeline, platform))
    dags = [pipeline["root"]["dag"]] + [c["dag"] for c in pipeline["components"].values() if "dag" in c]
    for dag in dags:
        for name in dag["tasks"]:
            assert name in text, name


def test_the_status_grows_with_the_iterations_of_every_loop(compiled):
    pipeline, platform = compiled
    workflow = argo_workflow(pipeline, platform)
    nodes_4, bytes_4 = status_bytes(workflow, 4)
    nodes_16, bytes_16 = status_bytes(workflow, 16)
    assert nodes_16 > 3 * nodes_4 * 0.8 and bytes_16 > 2 * bytes_4
