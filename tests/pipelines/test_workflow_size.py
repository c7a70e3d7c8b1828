"""The Argo Workflow model (`pipelines.workflow_size`) against the backend's own compiler output.

No Argo or KFP backend can run here, so the model is measured against the Workflows that
kubeflow/pipelines 2.17.0's Argo compiler produced for its test pipelines (tests/pipelines/
kfp_2_17_0/, copied unchanged): the same IR in, the real Workflow's bytes out.
"""

import copy
from pathlib import Path

import pytest
import yaml

from pipelines.workflow_size import argo_workflow, go_json, spec_bytes, status_bytes

DATA = Path(__file__).resolve().parent / "kfp_2_17_0"
NAMES = ("collected_artifacts", "nested_parallel_for_secret", "pipeline_with_exit_handler", "pipeline_with_retry")


def _pair(name):
    docs = list(yaml.safe_load_all((DATA / f"{name}.pipeline.yaml").read_text()))
    workflow = yaml.safe_load((DATA / f"{name}.workflow.yaml").read_text())
    return docs[0], (docs[1] if len(docs) > 1 else None), workflow


@pytest.mark.parametrize("name", NAMES)
def test_the_modelled_spec_is_the_backends_within_three_percent(name):
    pipeline, platform, real = _pair(name)
    # What the compiler stores once per component (spec, container, Kubernetes settings) is exact
    # (the hash in a name is Go's own, of Go's struct: only its kind is compared) ...
    model = argo_workflow(pipeline, platform)
    stored = lambda w: sorted((p["name"].split("-")[0], p["value"]) for p in w["spec"]["arguments"]["parameters"])  # noqa: E731
    assert stored(model) == stored(real)
    # ... and the whole Workflow, templates with their inlined task JSON included, is close.
    assert spec_bytes(pipeline, platform) == pytest.approx(len(go_json(real)), rel=0.03)


def test_a_loops_task_json_is_inlined_twice_and_identical_executors_are_stored_once():
    pipeline, platform, real = _pair("collected_artifacts")
    dags = [pipeline["root"]["dag"]] + [c["dag"] for c in pipeline["components"].values() if "dag" in c]
    loops = [t for dag in dags for t in dag["tasks"].values() if "parameterIterator" in t]
    assert loops
    templates = lambda w: go_json(w["spec"]["templates"])  # noqa: E731 - where the drivers' arguments are
    for task in loops:
        inlined = go_json(go_json(task))[1:-1]  # the task's JSON as a string inside the Workflow's JSON
        assert templates(argo_workflow(pipeline, platform)).count(inlined) == 2 == templates(real).count(inlined)
    # Two components with one container: one `components-<hash>` argument.
    twice = copy.deepcopy(pipeline)
    label = next(iter(twice["deploymentSpec"]["executors"]))
    comp = next(k for k, c in twice["components"].items() if c.get("executorLabel") == label)
    twice["components"][comp + "-2"] = dict(twice["components"][comp], executorLabel=label + "-2")
    twice["deploymentSpec"]["executors"][label + "-2"] = twice["deploymentSpec"]["executors"][label]
    args = lambda p: {a["name"] for a in argo_workflow(p, platform)["spec"]["arguments"]["parameters"]}  # noqa: E731
    assert args(twice) == args(pipeline)


def test_the_status_grows_with_the_iterations_of_every_loop():
    pipeline, platform, _ = _pair("collected_artifacts")
    workflow = argo_workflow(pipeline, platform)
    nodes_4, bytes_4 = status_bytes(workflow, 4)
    nodes_16, bytes_16 = status_bytes(workflow, 16)
    assert nodes_16 > 3 * nodes_4 * 0.8 and bytes_16 > 2 * bytes_4
