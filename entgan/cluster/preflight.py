"""Preflight: can this job's pipeline run on the cluster? Checked before a run is scheduled.

    edges     each edge has a Ready node with its labels (`entgan.io/edge=<name>` plus the job's
              extra labels) and no taint that the pipeline's edge tasks do not tolerate, and at
              least the GPUs the edge requests (allocatable `nvidia.com/gpu`);
    storage   the Secret and ConfigMap the tasks read (S3 credentials, S3 endpoint) exist in the
              pipeline namespace with their keys;
    mlflow    the MLflow server of the job answers /health (an in-cluster Service through the
              Kubernetes API's service proxy, so it works from a laptop with a kubeconfig);
    kfp       the Kubeflow Pipelines backend is new enough (kfp_client.MIN_BACKEND).

The Kubernetes API is reached with the `kubernetes` client: the current kubeconfig (KUBECONFIG
or ~/.kube/config, optionally another context), else the in-cluster service account. Each check
is one line, PASS or FAIL, and a FAIL says how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from entgan.job.spec import EdgeSpec, JobSpec
from entgan.job.storage import CONFIG_NAME, ENDPOINT_ENVS, KEY_ENV, SECRET_ENV, SECRET_NAME
from pipelines.entgan_pipeline import EDGE_TAINT_KEY

GPU = "nvidia.com/gpu"
DEFAULT_NAMESPACE = "kubeflow"  # where single-user Kubeflow Pipelines runs its pods
TOLERATED = {(EDGE_TAINT_KEY, "NoSchedule")}  # what the pipeline's edge tasks tolerate
_SERVICE_HOST = re.compile(r"^(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)(\.svc(\.cluster\.local)?)?$")


@dataclass(frozen=True)
class Check:
    """One preflight check: what was checked, whether it passed, what was found, the fix."""

    what: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'PASS' if self.ok else 'FAIL'}  {self.what}: {self.detail}"
        return f"{text}; fix: {self.fix}" if not self.ok and self.fix else text


class KubeError(RuntimeError):
    """The Kubernetes API cannot be reached; the message says how to point at a cluster."""


def kube_api(context: str | None = None):
    """A CoreV1Api from the current kubeconfig (or `context`), else the in-cluster config."""
    from kubernetes import client, config

    try:
        return client.CoreV1Api(config.new_client_from_config(os.environ.get("KUBECONFIG"), context=context))
    except (config.ConfigException, OSError, TypeError) as kube_err:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.CoreV1Api(client.ApiClient(configuration))
        except config.ConfigException:
            raise KubeError(
                f"no Kubernetes cluster to check ({kube_err}); set KUBECONFIG (or ~/.kube/config) "
                "to the cluster that runs Kubeflow, or run inside it"
            ) from None


# ---------------------------------------------------------------- edges (pure over V1Node objects)


def _ready(node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def _blocking_taints(node) -> list[str]:
    """The taints that keep the pipeline's edge tasks off this node."""
    return [
        f"{t.key}:{t.effect}" for t in node.spec.taints or []
        if t.effect in ("NoSchedule", "NoExecute") and (t.key, t.effect) not in TOLERATED
    ]


def _gpus(node) -> int:
    return int((node.status.allocatable or {}).get(GPU, "0"))


def edge_checks(edge: EdgeSpec, nodes: list) -> list[Check]:
    """Node, taint and GPU checks of one edge over the nodes that carry its labels."""
    labels = ",".join(f"{k}={v}" for k, v in edge.selector.items())
    what = f"edge {edge.name}"
    if not nodes:
        return [Check(f"{what} node", False, f"no node is labelled {labels}",
                      f"kubectl label node NODE {' '.join(f'{k}={v}' for k, v in edge.selector.items())}")]
    names = ", ".join(n.metadata.name for n in nodes)
    ready = [n for n in nodes if _ready(n)]
    if not ready:
        return [Check(f"{what} node", False, f"{names} (labelled {labels}) not Ready",
                      f"see `kubectl describe node {nodes[0].metadata.name}` (is its kubelet or edgecore running?)")]
    checks = [Check(f"{what} node", True, f"{', '.join(n.metadata.name for n in ready)} Ready, labelled {labels}")]
    usable = [n for n in ready if not _blocking_taints(n)]
    if not usable:
        node = ready[0]
        checks.append(Check(
            f"{what} taints", False, f"{node.metadata.name} has {', '.join(_blocking_taints(node))}, which the "
            f"pipeline does not tolerate (it tolerates {EDGE_TAINT_KEY}:NoSchedule)",
            f"kubectl taint node {node.metadata.name} {_blocking_taints(node)[0]}-",
        ))
        return checks
    tainted = [n.metadata.name for n in usable if any(t.key == EDGE_TAINT_KEY for t in n.spec.taints or [])]
    checks.append(Check(f"{what} taints", True, (
        f"{', '.join(tainted)} carries the edge taint {EDGE_TAINT_KEY}:NoSchedule (tolerated)" if tainted
        else f"no blocking taint (no edge taint {EDGE_TAINT_KEY} either: other pods may use the node)"
    )))
    if edge.gpus == 0:
        checks.append(Check(f"{what} GPUs", True, "none requested"))
        return checks
    best = max(usable, key=_gpus)
    checks.append(Check(
        f"{what} GPUs", _gpus(best) >= edge.gpus,
        f"{best.metadata.name} has {_gpus(best)} allocatable {GPU}, the edge requests {edge.gpus}",
        f"lower edges[{edge.name}].gpus to {_gpus(best)}, or install the NVIDIA device plugin on the node",
    ))
    return checks


# ---------------------------------------------------------------- cluster objects, MLflow, KFP


def _api_failure(err, kind: str, name: str, namespace: str, fix: str) -> Check:
    what = f"{kind} {namespace}/{name}"
    if err.status == 404:
        return Check(what, False, "not found", fix)
    if err.status in (401, 403):
        return Check(what, False, f"not allowed to read it (HTTP {err.status})",
                     f"ask for `get` on {kind}s in {namespace}, or check it yourself and pass --skip-preflight")
    return Check(what, False, f"HTTP {err.status} {err.reason}", "check the Kubernetes API server")


def storage_checks(core, namespace: str) -> list[Check]:
    """The Secret and the ConfigMap that the tasks read as env, with the keys they read."""
    from kubernetes.client.exceptions import ApiException

    wanted = [
        ("Secret", SECRET_NAME, (KEY_ENV, SECRET_ENV), core.read_namespaced_secret,
         f"kubectl -n {namespace} create secret generic {SECRET_NAME} "
         f"--from-literal={KEY_ENV}=... --from-literal={SECRET_ENV}=..."),
        ("ConfigMap", CONFIG_NAME, (ENDPOINT_ENVS[0],), core.read_namespaced_config_map,
         f"kubectl -n {namespace} create configmap {CONFIG_NAME} --from-literal={ENDPOINT_ENVS[0]}=http://minio...:9000"),
    ]
    checks = []
    for kind, name, keys, read, fix in wanted:
        try:
            found = read(name, namespace)
        except ApiException as err:
            checks.append(_api_failure(err, kind, name, namespace, fix))
            continue
        missing = [k for k in keys if k not in (found.data or {})]
        checks.append(Check(
            f"{kind} {namespace}/{name}", not missing,
            f"lacks {', '.join(missing)}" if missing else f"has {', '.join(keys)}", fix,
        ))
    return checks


def mlflow_check(job: JobSpec, core, http_get: Callable[[str], int] | None = None) -> Check:
    """The job's MLflow server answers /health (a cluster Service through the API's service proxy)."""
    uri = job.mlflow_tracking_uri or ""
    what = "MLflow server"
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return Check(what, False, f"the job records to {job.tracking_uri}, which each pod would keep to itself",
                     "set mlflow_tracking_uri in the job to the MLflow server, e.g. http://mlflow.entgan.svc:5000")
    health = f"{parts.path.rstrip('/')}/health".lstrip("/")
    service = _SERVICE_HOST.match(parts.hostname or "")
    try:
        if service:
            from kubernetes.client.exceptions import ApiException

            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                core.connect_get_namespaced_service_proxy_with_path(
                    f"{service['svc']}:{port}", service["ns"], health
                )
                status = 200
            except ApiException as err:
                status = err.status
        else:
            status = (http_get or _http_status)(f"{uri.rstrip('/')}/health")
    except OSError as err:
        return Check(what, False, f"{uri} is unreachable ({type(err).__name__})",
                     "start the MLflow server or fix mlflow_tracking_uri")
    return Check(what, status == 200, f"{uri}/health answered HTTP {status}",
                 "start the MLflow server (see deploy/) or fix mlflow_tracking_uri")


def _http_status(url: str) -> int:
    import requests

    try:
        return requests.get(url, timeout=10).status_code
    except requests.RequestException as err:
        raise OSError(str(err)) from None


def kfp_check(kfp_api) -> Check:
    """The KFP backend is at least kfp_client.MIN_BACKEND."""
    from entgan.cluster.kfp_api import KfpError, check_backend_version

    try:
        return Check("Kubeflow Pipelines", True, f"version {check_backend_version(kfp_api)}")
    except KfpError as err:
        return Check("Kubeflow Pipelines", False, str(err))


# ---------------------------------------------------------------- all of it


def preflight(job: JobSpec, core, namespace: str, kfp_api=None, http_get=None) -> list[Check]:
    """Every check of `job` against the cluster behind `core` (a kubernetes CoreV1Api)."""
    from kubernetes.client.exceptions import ApiException

    checks = []
    for edge in job.edges:
        selector = ",".join(f"{k}={v}" for k, v in edge.selector.items())
        try:
            nodes = core.list_node(label_selector=selector).items
        except ApiException as err:
            checks.append(Check(f"edge {edge.name} node", False, f"cannot list nodes (HTTP {err.status})",
                                "ask for `list` on nodes, or check them yourself and pass --skip-preflight"))
            continue
        checks += edge_checks(edge, nodes)
    checks += storage_checks(core, namespace)
    checks.append(mlflow_check(job, core, http_get))
    if kfp_api is not None:
        checks.append(kfp_check(kfp_api))
    return checks


def report(checks: list[Check]) -> str:
    """One line per check, then a summary line."""
    failed = sum(not c.ok for c in checks)
    summary = f"preflight: {len(checks) - failed} of {len(checks)} checks passed"
    return "\n".join([c.line() for c in checks] + [summary])


def run(job: JobSpec, namespace: str, connect_kfp: Callable[[], object]) -> list[Check]:
    """Connect to Kubernetes (kubeconfig or in-cluster) and KFP (`connect_kfp()`), then check all."""
    from entgan.cluster.kfp_api import KfpError

    try:
        kfp_api, kfp_failed = connect_kfp(), []
    except KfpError as err:
        kfp_api, kfp_failed = None, [Check("Kubeflow Pipelines", False, str(err))]
    try:
        core = kube_api()
    except KubeError as err:
        return [Check("Kubernetes API", False, str(err))] + kfp_failed + ([kfp_check(kfp_api)] if kfp_api else [])
    return preflight(job, core, namespace, kfp_api) + kfp_failed
