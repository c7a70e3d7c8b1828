"""The Argo Workflow the KFP backend builds from a compiled pipeline, modelled to size it.

Argo refuses to store a Workflow whose JSON (spec plus status) is over `MAX_WORKFLOW_SIZE`, 1 MiB
by default (argo-workflows v4 `workflow/packer/packer.go` lines 15-23, 52-55): it first gzips and
base64-encodes the node status (`compressWorkflow`, lines 74-98) and, if that is still too big,
marks the run Error "workflow is longer than maximum allowed size". That is the limit that binds
an EntGAN run; a single argument no longer does (KFP >= 2.16 reads `--component @file`,
`backend/src/v2/cmd/driver/main.go` lines 320-323, #12737; Argo >= 3.7.10 / 4.0.1 moves argument
lists over 128 KiB to a ConfigMap, `workflow/controller/workflowpod.go` lines 480-580).

`argo_workflow(pipeline, platform)` builds the Workflow's spec as KFP 2.17.0's Argo compiler does
(`backend/src/v2/compiler/argocompiler/`):

- `spec.arguments`: each component spec once, as JSON (`argo.go` `saveProtoToArguments`, lines
  398-454); container components are keyed by the hash of their container, so identical
  executors (train-edge, train-edge-2, ...) are stored once (`hashComponentContainer`, lines
  474-508); each container once more as `implementations-<hash>`; each component's Kubernetes
  settings as `kubernetes-<component>` (`spec_patch.go` line 28);
- one DAG template per DAG component; in it, every task's JSON is inlined again as the driver's
  `--task` argument (`dag.go` line 238 and `container.go` lines 152-165), and a loop's task JSON
  twice: in the iteration driver and in each iteration's driver (`dag.go` lines 410-446, "TODO:
  avoid duplicating task JSON twice in the template");
- the root driver's runtime config (the pipeline parameters' values: the job JSON, `dag.go`
  lines 150-181, 525-537) and the fixed system templates (drivers, executors; sizes from the
  compiled workflows in kubeflow/pipelines `test_data/compiled-workflows/`).

`status_bytes` models the node status of a run where every loop has `edges` iterations: each
node keeps its resolved inputs (argo-workflows `workflow/controller/operator.go` line 2782,
`node.Inputs = executeTmpl.Inputs`): a driver node the component, task and container JSON, an
executor node the pod spec patch. The nodes' JSON is gzipped and base64-encoded as Argo does.

tests/pipelines/test_workflow_size.py checks the spec model against the compiled workflows
that kubeflow/pipelines 2.17.0 ships for its own test pipelines.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import random
from dataclasses import dataclass

MAX_WORKFLOW_SIZE = 1024 * 1024  # argo-workflows workflow/packer/packer.go: the default
# Room left for what the model does not count: retried pods (one node more per try), failure
# messages, node-status churn while the run goes on, the model's own error (a few percent
# against the backend's compiled workflows).
HEADROOM = 0.15
BUDGET = int(MAX_WORKFLOW_SIZE * (1 - HEADROOM))

# The fixed templates the compiler adds once (bytes of their JSON in 2.17.0's compiled
# workflows): container driver, DAG driver, container executor + impl (and their retry-
# variants when a task has a retry policy), the entrypoint.
SYSTEM_TEMPLATES = {"container-driver": 2280, "dag-driver": 2092, "executor": 2307, "retry-executor": 3293}
NODE_FIXED = 640  # one node's status fields besides inputs/outputs: id, name, type, phase, times, children...


def _go_numbers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Go writes 2.0 as 2
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    return value


def go_json(value) -> str:
    """JSON as Go's encoding/json writes it: compact, integral floats as integers, `<`, `>`, `&` escaped."""
    text = json.dumps(_go_numbers(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _hash(value) -> str:
    return hashlib.sha256(go_json(value).encode()).hexdigest()


def _param(name: str, value: str) -> dict:
    return {"name": name, "value": value}


def _placeholder(name: str) -> str:
    return "{{workflow.parameters.%s}}" % name


@dataclass
class _Compiler:
    pipeline: dict
    platform: dict

    def __post_init__(self) -> None:
        self.arguments: dict[str, str] = {}
        self.templates: list[dict] = []
        self.executors = self.pipeline.get("deploymentSpec", {}).get("executors", {})
        self.k8s = ((self.platform or {}).get("platforms", {}).get("kubernetes", {})
                    .get("deploymentSpec", {}).get("executors", {}))
        self.retry = self.plain = False

    def key(self, component: str) -> str:
        spec = self.pipeline["components"].get(component, {})
        container = self.executors.get(spec.get("executorLabel"), {}).get("container")
        return _hash(container) if container is not None else component

    def save(self, name: str, value) -> str:
        self.arguments.setdefault(name, go_json(value))
        return _placeholder(name)

    def component(self, name: str) -> tuple[str, str | None, str | None]:
        """Placeholders of a component's spec, container and Kubernetes settings."""
        spec = self.pipeline["root"] if name == "root" else self.pipeline["components"][name]
        comp = self.save(f"components-{self.key(name)}", spec)
        label = spec.get("executorLabel")
        if label is None:
            return comp, None, None
        impl = self.save(f"implementations-{self.key(name)}", self.executors[label]["container"])
        k8s = self.save(f"kubernetes-{name}", self.k8s[label]) if label in self.k8s else None
        return comp, impl, k8s

    def dag(self, name: str, dag: dict) -> None:
        tasks, hooks = [], []
        for task_name in sorted(dag.get("tasks", {})):
            task = dag["tasks"][task_name]
            exit_task = task.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"
            made = self.task(task_name, task)
            if exit_task:
                hooks.append({"name": f"exit-hook-{name}-{task_name}", "inputs": {"parameters": [{"name": "parent-dag-id"}]},
                              "dag": {"tasks": made}})
            else:
                tasks.extend(made)
        self.templates += hooks + [{"name": name, "inputs": {"parameters": [{"name": "parent-dag-id"}]},
                                    "metadata": {}, "outputs": {}, "dag": {"tasks": tasks}}]

    def task(self, name: str, task: dict, iteration: bool = False) -> list[dict]:
        component = task["componentRef"]["name"]
        spec = self.pipeline["components"][component]
        comp, impl, k8s = self.component(component)
        task_json = go_json(task)
        parent = _param("parent-dag-id", "{{inputs.parameters.parent-dag-id}}")
        if "parameterIterator" in task and not iteration:  # the loop: its task JSON twice
            driver = {"name": "iteration-driver", "template": "system-dag-driver", "arguments": {"parameters": [
                _param("component", comp), parent, _param("task", task_json), _param("task-name", name)]}}
            items = {"name": "iteration-iterations", "template": f"{component}-iteration",
                     "depends": "iteration-driver.Succeeded",
                     "withSequence": {"count": "{{tasks.iteration-driver.outputs.parameters.iteration-count}}"},
                     "arguments": {"parameters": [
                         _param("parent-dag-id", "{{tasks.iteration-driver.outputs.parameters.execution-id}}"),
                         _param("iteration-index", "{{item}}")]}}
            inner = self.task("iteration-item", task, iteration=True)
            for tmpl_name, tasks in ((f"{component}-{name}-iterator", [driver, items]),
                                     (f"{component}-iteration", inner)):
                self.templates.append({"name": tmpl_name, "inputs": {"parameters": [{"name": "parent-dag-id"}]},
                                       "metadata": {}, "outputs": {}, "dag": {"tasks": tasks}})
            return [{"name": name, "template": f"{component}-{name}-iterator", "depends": _depends(task),
                     "arguments": {"parameters": [_param("parent-dag-id", "{{inputs.parameters.parent-dag-id}}")]}}]
        params = [_param("component", comp), _param("task", task_json)]
        if impl is not None:
            params.append(_param("container", impl))
        params += [_param("task-name", name), parent]
        if iteration:
            params.append(_param("iteration-index", "{{inputs.parameters.iteration-index}}"))
        if k8s is not None:
            params.append(_param("kubernetes-config", k8s))
        driver = {"name": f"{name}-driver", "template": "system-container-driver" if impl else "system-dag-driver",
                  "depends": _depends(task), "arguments": {"parameters": params}}
        if impl is None:  # a DAG: the condition, the exit handler, a loop's body
            self.dag(component, spec["dag"])
            body = {"name": name, "template": component, "depends": f"{name}-driver.Succeeded", "arguments": {
                "parameters": [_param("parent-dag-id", f"{{{{tasks.{name}-driver.outputs.parameters.execution-id}}}}"),
                               _param("condition", f"{{{{tasks.{name}-driver.outputs.parameters.condition}}}}")]}}
            return [driver, body]
        retry = task.get("retryPolicy")
        self.retry, self.plain = self.retry or retry is not None, self.plain or retry is None
        out = "{{tasks.%s-driver.outputs.parameters.%s}}"
        executor = {"name": name, "template": ("retry-" if retry else "") + "system-container-executor",
                    "depends": f"{name}-driver.Succeeded", "arguments": {"parameters": [
                        _param("pod-spec-patch", out % (name, "pod-spec-patch")),
                        {"name": "cached-decision", "default": "false", "value": out % (name, "cached-decision")},
                        *[_param(k, str(v)) for k, v in (retry or {}).items()]]}}
        if task.get("triggerPolicy", {}).get("condition"):
            executor["when"] = out % (name, "condition") + " != false"
        return [driver, executor]

    def build(self) -> dict:
        self.dag("root", self.pipeline["root"]["dag"])
        comp, _, _ = self.component("root")
        values = {k: v.get("defaultValue") for k, v in
                  self.pipeline["root"].get("inputDefinitions", {}).get("parameters", {}).items()}
        self.templates.append({"name": "entrypoint", "dag": {"tasks": [
            {"name": "root-driver", "template": "system-dag-driver", "arguments": {"parameters": [
                _param("component", comp), _param("runtime-config", go_json({"parameterValues": values})),
                _param("driver-type", "ROOT_DAG")]}},
            {"name": "root", "template": "root", "depends": "root-driver.Succeeded", "arguments": {"parameters": [
                _param("parent-dag-id", "{{tasks.root-driver.outputs.parameters.execution-id}}"),
                _param("condition", "")]}}]}})
        name = self.pipeline["pipelineInfo"]["name"]
        return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": f"{name}-"},
                "spec": {"arguments": {"parameters": [_param(k, v) for k, v in self.arguments.items()]},
                         "entrypoint": "entrypoint", "serviceAccountName": "pipeline-runner",
                         "templates": self.templates}}


def _depends(task: dict) -> str:
    return " && ".join(f"{d}.Succeeded" for d in task.get("dependentTasks", []))


def argo_workflow(pipeline: dict, platform: dict | None = None) -> dict:
    """The Workflow (spec only, the system templates left out) that KFP 2.17.0 compiles `pipeline` to."""
    return _Compiler(pipeline, platform or {}).build()


def spec_bytes(pipeline: dict, platform: dict | None = None) -> int:
    """Bytes of the Workflow's JSON before it runs: the model's spec plus the fixed templates."""
    compiler = _Compiler(pipeline, platform or {})
    workflow = compiler.build()
    fixed = SYSTEM_TEMPLATES["container-driver"] + SYSTEM_TEMPLATES["dag-driver"]
    fixed += SYSTEM_TEMPLATES["executor"] * compiler.plain + SYSTEM_TEMPLATES["retry-executor"] * compiler.retry
    return len(go_json(workflow)) + fixed


# ---------------------------------------------------------------- the node status of a run


def _resolve(value: str, arguments: dict[str, str]) -> str:
    if value.startswith("{{workflow.parameters.") and value.endswith("}}"):
        return arguments[value[len("{{workflow.parameters."):-2]]
    return value


def _nodes(workflow: dict, edges: int) -> list[tuple[str, int]]:
    """Each node a run makes, as (its inputs and outputs as JSON, how many times it occurs), when
    every loop runs `edges` iterations and every condition is true."""
    arguments = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    out: list[tuple[str, int]] = []
    root = next(t for t in templates["entrypoint"]["dag"]["tasks"] if t["name"] == "root-driver")
    job = next(p["value"] for p in root["arguments"]["parameters"] if p["name"] == "runtime-config")

    def visit(template: str, times: int, patch: str) -> None:
        for task in templates[template]["dag"]["tasks"]:
            inputs = [{"name": p["name"], "value": _resolve(p["value"], arguments)}
                      for p in task.get("arguments", {}).get("parameters", [])]
            n = times * (edges if "withSequence" in task else 1)
            if task["template"] == "system-container-driver":
                values = {p["name"]: p["value"] for p in inputs}
                # the pod spec patch it writes: the user container, the launcher's arguments
                # (component spec and executor input, which carries the job JSON) and env
                patch = go_json({"containers": [{"name": "main", "command": [values["container"],
                                 values["component"], job]}]})
                outputs = [{"name": "pod-spec-patch", "value": patch}, {"name": "cached-decision", "value": "false"},
                           {"name": "condition", "value": "true"}]
                out.append((go_json({"inputs": inputs, "outputs": outputs}), n))
            elif task["template"] == "system-dag-driver":
                out.append((go_json({"inputs": inputs, "outputs": [{"name": "execution-id", "value": "1234"}]}), n))
            elif task["template"].endswith("system-container-executor"):
                inputs = [dict(p, value=patch) if p["name"] == "pod-spec-patch" else p for p in inputs]
                pods = 2 if task["template"].startswith("retry-") else 1  # a Retry node and its pod
                out.append((go_json({"inputs": inputs}), n * (1 + pods)))  # the executor DAG node, its pod(s)
            else:
                out.append((go_json({"inputs": inputs}), n))
                if "withSequence" in task:
                    out.append(("{}", times))  # the TaskGroup node
                visit(task["template"], n, patch)

    visit("entrypoint", 1, "")
    for template in templates.values():  # exit hooks run once
        if template["name"].startswith("exit-hook-"):
            visit(template["name"], 1, "")
    return out


def _node(rng: random.Random, body: str) -> str:
    """One node as Argo stores it (`NodeStatus`): ids and times differ from node to node."""
    wf = "entgan-demo-x7k2p"
    ids = [f"{wf}-{rng.getrandbits(32)}" for _ in range(3)]
    start = f"2026-12-04T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"
    fixed = {"id": ids[0], "name": f"{wf}.root.exit-handler-1.condition-3.for-loop-{rng.randrange(99)}"
             f"(0:{rng.randrange(64)}).iteration-item.train-edge-{rng.randrange(64)}-driver",
             "displayName": "train-edge-driver", "type": "Pod", "templateName": "system-container-driver",
             "templateScope": f"local/{wf}", "phase": "Succeeded", "boundaryID": ids[1], "startedAt": start,
             "finishedAt": start, "progress": "1/1", "resourcesDuration": {"cpu": rng.randrange(9),
             "memory": rng.randrange(99)}, "hostNodeName": f"node-{rng.randrange(64)}", "children": [ids[2]],
             "outputs": {"exitCode": "0"}, "taskResultSynced": True}
    return f'"{ids[0]}":' + go_json(fixed)[:-1] + f',"body":{body}}}'


def status_bytes(workflow: dict, edges: int, seed: int = 0) -> tuple[int, int]:
    """(number of nodes, bytes of the gzipped, base64-encoded node status) of a run in which
    every loop has `edges` iterations. Nodes are stored as a JSON map keyed by node id (a hash, so
    similar nodes are not neighbours); the compression ratio is measured on a shuffled sample."""
    nodes = _nodes(workflow, edges)
    count = sum(n for _, n in nodes)
    raw = sum((len(body) + NODE_FIXED) * n for body, n in nodes)
    rng = random.Random(seed)
    weights = [n for _, n in nodes]
    sample, size = [], 0
    while size < min(raw, 2 * 1024 * 1024):
        body = rng.choices(nodes, weights)[0][0]
        item = _node(rng, body)
        sample.append(item)
        size += len(item)
    packed = len(base64.b64encode(gzip.compress(",".join(sample).encode(), 6)))
    return count, int(raw * packed / size)


@dataclass(frozen=True)
class WorkflowSize:
    spec_bytes: int  # the Workflow before it runs
    status_bytes: int  # its node status, compressed, when every edge has run every task
    nodes: int
    edges: int

    @property
    def total(self) -> int:
        return self.spec_bytes + self.status_bytes

    def fits(self, budget: int = BUDGET) -> bool:
        return self.total <= budget


def workflow_size(pipeline: dict, platform: dict | None, edges: int) -> WorkflowSize:
    """The modelled size of the Workflow of `pipeline` run on `edges` edges."""
    workflow = argo_workflow(pipeline, platform)
    nodes, status = status_bytes(workflow, edges)
    return WorkflowSize(spec_bytes(pipeline, platform), status, nodes, edges)
