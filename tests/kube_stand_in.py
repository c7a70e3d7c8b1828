"""A STAND-IN for the Kubernetes API server, for preflight tests only.

No Kubernetes API server can run here (no cluster, no Docker, no etcd), so this small HTTP server
on 127.0.0.1 plays the few core/v1 calls that `entgan preflight` makes: list nodes (with a label
selector), read a Secret, read a ConfigMap, and GET through a Service's proxy. It knows the API
from the installed `kubernetes` client (generated from the Kubernetes OpenAPI spec; see
tests/openapi_spec.py): a path or method the client does not define is 404, an undeclared query
parameter 400, a call without the bearer token 401, and every reply must be what the client's
models define (no unknown fields, right types). Errors come back as a `Status` object, like the
real server's. Every request is recorded for assertions.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from kubernetes import client as k8s

from tests.openapi_spec import Rejected, check, check_query, load_operations
from tests.stand_in_server import Request, StandInServer


def node(name: str, labels: dict[str, str], *, ready: bool = True, gpus: int = 0, taints=()) -> dict:
    """A Node as the API server returns it (JSON), with the fields preflight reads."""
    allocatable = {"cpu": "4", "memory": "16Gi", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": {"taints": [{"key": k, "effect": e} for k, e in taints]} if taints else {},
        "status": {
            "allocatable": allocatable, "capacity": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _labels_match(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "=" not in term or any(op in term for op in ("!=", " in ", " notin ")):
            raise Rejected(501, 0, f"the stand-in only implements equality label selectors, not {term!r}")
        key, value = term.split("=", 1)
        if labels.get(key) != value.lstrip("="):
            return False
    return True


class KubeStandIn(StandInServer):
    """`with KubeStandIn(token="t") as kube: kube.nodes.append(node(...)); ... kube.url`"""

    api = "core/v1"

    def __init__(self, token: str = "kube-test-token") -> None:
        super().__init__(load_operations(k8s, "core_v1_api.py"))
        self.token = token
        self.nodes: list[dict] = []
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) -> data
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}
        self.services: dict[tuple[str, str], int] = {}  # (namespace, "name:port") -> HTTP status of /health

    def kubeconfig(self, path) -> str:
        """Write a kubeconfig that points at the stand-in; returns its path."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "me", "user": {"token": self.token}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "me"}}],
        }))
        return str(path)

    def answer(self, req: Request, raw_body: bytes, content_type: str) -> dict | str:
        op, path = self.route(req)
        if op.secured and req.headers.get("authorization") != f"Bearer {self.token}":
            raise Rejected(401, 0, "Unauthorized")
        req.query = check_query(op, parse_qs(req.raw_query, keep_blank_values=True))
        handler = getattr(self, f"_{op.op_id}", None)
        if handler is None:
            raise Rejected(501, 0, f"{op.op_id} is in the API but not implemented by the stand-in")
        reply = handler(req, path)
        if op.response_type != "str":
            check(reply, op.response_type, k8s.models, f"{op.op_id} reply", request=False)
        return reply

    def error_reply(self, err: Rejected) -> dict:
        """A `Status` object, as the real server's errors are."""
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": err.message,
                "code": err.status}

    def _list_node(self, req: Request, path: dict) -> dict:
        selector = req.query.get("labelSelector", "")
        items = [n for n in self.nodes if _labels_match(n["metadata"]["labels"], selector)]
        return {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}

    def _read(self, store: dict, kind: str, path: dict) -> dict:
        data = store.get((path["namespace"], path["name"]))
        if data is None:
            raise Rejected(404, 0, f'{kind.lower()}s "{path["name"]}" not found')
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": path["name"], "namespace": path["namespace"]},
                "data": data}

    def _read_namespaced_secret(self, req: Request, path: dict) -> dict:
        return self._read(self.secrets, "Secret", path)

    def _read_namespaced_config_map(self, req: Request, path: dict) -> dict:
        return self._read(self.config_maps, "ConfigMap", path)

    def _connect_get_namespaced_service_proxy_with_path(self, req: Request, path: dict) -> str:
        status = self.services.get((path["namespace"], path["name"]))
        if status is None:
            raise Rejected(404, 0, f'services "{path["name"]}" not found')
        if path["path"] != "health":
            raise Rejected(404, 0, f"the stand-in's services only answer /health, not /{path['path']}")
        if status != 200:
            raise Rejected(status, 0, "the service answered an error")
        return "OK"
