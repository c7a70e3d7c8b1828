"""A STAND-IN for the Kubeflow Pipelines API server, for client tests only.

No real KFP API server can run here (it needs Kubernetes, Argo and MySQL), so this small HTTP
server on 127.0.0.1 plays its part. It knows the API only from the v2beta1 spec as the installed
`kfp-server-api` package carries it (the client that `kfp.Client` is built on, generated from the
published swagger files of kubeflow/pipelines `backend/api/v2beta1/swagger/`): each operation's
path, method, query parameters, required parameters, body and file parts, and response type are
read from the generated `kfp_server_api/api/*_service_api.py`, and each message's fields and JSON
names from the models' `openapi_types` / `attribute_map` (output-only fields from their "Output."
docs, enum values from `allowable_values`). It is strict about them:

- a method and path that no operation defines is answered 404; a defined one that the stand-in
  does not implement, 501;
- a query parameter that the operation does not declare, a missing required parameter, a JSON
  body with an undeclared or output-only field or a value of the wrong type, a multipart upload
  without its `uploadfile` file part: 400;
- an operation that requires the Bearer `authorization` header, called without the right
  token: 401.

Its replies are checked against the response types too, so the client cannot come to rely on
fields that a real server does not promise. Every request is recorded for assertions.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from urllib.parse import parse_qs

import kfp_server_api
import yaml

from tests.openapi_spec import Rejected, check, check_query, load_operations, parse_multipart
from tests.stand_in_server import Request, StandInServer

# The API server answers GET /apis/v2beta1/healthz from a hand-written handler, not the proto
# (kubeflow/pipelines backend/src/apiserver/main.go, `healthzResponse`): these are its fields.
HEALTHZ_FIELDS = {"commit_sha": "str", "tag_name": "str", "multi_user": "bool", "pipeline_store": "str"}


# ---------------------------------------------------------------- the API server's state


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class State:
    """The API server's store: pipelines, versions, experiments, recurring runs."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.version = "2.17.0"  # what healthz reports as the backend's tag_name

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids):04d}"


def _matches(item: dict, filter_json: str | None) -> bool:
    """A v2beta1 Filter (JSON of the proto: either field spelling, enum as name or number)."""
    if not filter_json:
        return True
    try:
        predicates = json.loads(filter_json)["predicates"]
    except (ValueError, KeyError, TypeError):
        raise Rejected(400, 3, f"filter {filter_json!r} is not a JSON Filter with predicates") from None
    for p in predicates:
        if set(p) - {"key", "operation", "string_value", "stringValue", "int_value", "intValue",
                     "long_value", "longValue", "timestamp_value", "timestampValue"}:
            raise Rejected(400, 3, f"filter predicate {p} has unknown fields")
        if p.get("operation") not in ("EQUALS", 1):
            raise Rejected(501, 12, f"the stand-in only implements EQUALS filters, not {p.get('operation')}")
        if item.get(p["key"]) != p.get("string_value", p.get("stringValue")):
            return False
    return True


def _version_yaml(data: bytes) -> None:
    try:
        docs = list(yaml.safe_load_all(data))
    except yaml.YAMLError as err:
        raise Rejected(400, 3, f"uploadfile is not YAML: {err}") from None
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        raise Rejected(400, 3, "uploadfile is not a compiled KFP pipeline (no pipelineInfo)")


class Handlers:
    """The operations the stand-in implements, by operationId."""

    def __init__(self, state: State) -> None:
        self.s = state

    def pipeline_service_get_pipeline_by_name(self, req: Request, path: dict, body) -> dict:
        for p in self.s.pipelines.values():
            if p["name"] == path["name"] and p.get("namespace", "") == req.query.get("namespace", ""):
                return p
        raise Rejected(404, 5, f"pipeline {path['name']!r} not found")

    def upload_pipeline(self, req: Request, path: dict, body) -> dict:
        name = req.query.get("name") or req.query.get("display_name") or req.files["uploadfile"][0]
        if any(p["name"] == name for p in self.s.pipelines.values()):
            raise Rejected(409, 6, f"pipeline {name!r} already exists")
        pid = self.s.new_id("pipeline")
        pipeline = {"pipeline_id": pid, "name": name, "display_name": req.query.get("display_name", name),
                    "description": req.query.get("description", ""), "created_at": _now()}
        if "namespace" in req.query:
            pipeline["namespace"] = req.query["namespace"]
        self.s.pipelines[pid] = pipeline
        self.s.versions[pid] = [self._version(pid, name, req)]
        return pipeline

    def upload_pipeline_version(self, req: Request, path: dict, body) -> dict:
        pid = req.query.get("pipelineid", "")
        if pid not in self.s.pipelines:
            raise Rejected(404, 5, f"pipeline {pid!r} not found")
        name = req.query.get("name") or req.files["uploadfile"][0]
        if any(v["name"] == name for v in self.s.versions[pid]):
            raise Rejected(409, 6, f"version {name!r} already exists")
        version = self._version(pid, name, req)
        self.s.versions[pid].append(version)
        return version

    def _version(self, pid: str, name: str, req: Request) -> dict:
        _version_yaml(req.files["uploadfile"][1])
        return {"pipeline_id": pid, "pipeline_version_id": self.s.new_id("version"), "name": name,
                "display_name": req.query.get("display_name", name),
                "description": req.query.get("description", ""), "created_at": _now()}

    def healthz_service_get_healthz(self, req: Request, path: dict, body) -> dict:
        return {"commit_sha": "0" * 40, "tag_name": self.s.version, "multi_user": False}

    def pipeline_service_list_pipelines(self, req: Request, path: dict, body) -> dict:
        found = [p for p in self.s.pipelines.values() if _matches(p, req.query.get("filter"))
                 and p.get("namespace", "") == req.query.get("namespace", "")]
        return {"pipelines": found[: int(req.query.get("page_size", "20"))], "total_size": len(found)}

    def pipeline_service_delete_pipeline_version(self, req: Request, path: dict, body) -> dict:
        versions = self.s.versions.get(path["pipeline_id"], [])
        kept = [v for v in versions if v["pipeline_version_id"] != path["pipeline_version_id"]]
        if len(kept) == len(versions):
            raise Rejected(404, 5, f"pipeline version {path['pipeline_version_id']!r} not found")
        self.s.versions[path["pipeline_id"]] = kept
        return {}

    def pipeline_service_list_pipeline_versions(self, req: Request, path: dict, body) -> dict:
        versions = self.s.versions.get(path["pipeline_id"])
        if versions is None:
            raise Rejected(404, 5, f"pipeline {path['pipeline_id']!r} not found")
        found = [v for v in versions if _matches(v, req.query.get("filter"))]
        if req.query.get("sort_by") == "created_at desc":
            found = found[::-1]
        elif req.query.get("sort_by") not in (None, "created_at"):
            raise Rejected(400, 3, f"cannot sort by {req.query['sort_by']!r}")
        return {"pipeline_versions": found[: int(req.query.get("page_size", "20"))], "total_size": len(found)}

    def experiment_service_list_experiments(self, req: Request, path: dict, body) -> dict:
        found = [e for e in self.s.experiments.values() if _matches(e, req.query.get("filter"))
                 and e.get("namespace", "") == req.query.get("namespace", "")]
        return {"experiments": found[: int(req.query.get("page_size", "20"))], "total_size": len(found)}

    def experiment_service_create_experiment(self, req: Request, path: dict, body) -> dict:
        if not body.get("display_name"):
            raise Rejected(400, 3, "experiment display_name is required")
        eid = self.s.new_id("experiment")
        experiment = {**body, "experiment_id": eid, "created_at": _now(), "storage_state": "AVAILABLE"}
        self.s.experiments[eid] = experiment
        return experiment

    def recurring_run_service_list_recurring_runs(self, req: Request, path: dict, body) -> dict:
        found = [r for r in self.s.recurring.values() if _matches(r, req.query.get("filter"))
                 and r["experiment_id"] == req.query.get("experiment_id", r["experiment_id"])]
        return {"recurringRuns": found, "total_size": len(found)}

    def recurring_run_service_create_recurring_run(self, req: Request, path: dict, body) -> dict:
        for required in ("display_name", "pipeline_version_reference", "trigger", "max_concurrency", "mode"):
            if required not in body:
                raise Rejected(400, 3, f"recurring run needs {required!r}")
        if not 1 <= int(body["max_concurrency"]) <= 10:
            raise Rejected(400, 3, "max_concurrency must be in [1, 10]")
        cron = body["trigger"].get("cron_schedule", {}).get("cron", "")
        if len(cron.split()) != 6:
            raise Rejected(400, 3, f"cron {cron!r} must have 6 fields (seconds first)")
        ref = body["pipeline_version_reference"]
        versions = self.s.versions.get(ref.get("pipeline_id"), [])
        if ref.get("pipeline_version_id") not in [v["pipeline_version_id"] for v in versions]:
            raise Rejected(404, 5, f"pipeline version {ref} not found")
        if body.get("experiment_id") not in self.s.experiments:
            raise Rejected(404, 5, f"experiment {body.get('experiment_id')!r} not found")
        rid = self.s.new_id("recurring")
        run = {**body, "recurring_run_id": rid, "created_at": _now(), "updated_at": _now(),
               "status": "ENABLED" if body["mode"] == "ENABLE" else "DISABLED"}
        self.s.recurring[rid] = run
        return run

    def recurring_run_service_delete_recurring_run(self, req: Request, path: dict, body) -> dict:
        if self.s.recurring.pop(path["recurring_run_id"], None) is None:
            raise Rejected(404, 5, f"recurring run {path['recurring_run_id']!r} not found")
        return {}


# ---------------------------------------------------------------- the server: routing, checks (HTTP: tests/stand_in_server.py)


class KfpStandIn(StandInServer):
    """`with KfpStandIn(token="t") as api: ... api.url ... api.requests`"""

    api = "the v2beta1 API"
    not_found_code = 5  # gRPC NOT_FOUND, as the API server's errors carry it

    def __init__(self, token: str | None = None) -> None:
        super().__init__(load_operations(kfp_server_api, "*_service_api.py"))
        self.token = token
        self.state = State()
        self.handlers = Handlers(self.state)

    def answer(self, req: Request, raw_body: bytes, content_type: str) -> dict:
        op, path_params = self.route(req)
        if op.secured and self.token is not None and req.headers.get("authorization") != f"Bearer {self.token}":
            raise Rejected(401, 16, "missing or wrong bearer token")
        req.query = check_query(op, parse_qs(req.raw_query, keep_blank_values=True))
        body = None
        if op.files:
            parts = parse_multipart(content_type, raw_body)
            for name in parts:
                if name not in op.files:
                    raise Rejected(400, 3, f"{op.op_id}: unknown form field {name!r}")
            for name in op.files:
                if name in op.required and (name not in parts or parts[name][0] is None):
                    raise Rejected(400, 3, f"{op.op_id}: missing file part {name!r}")
            req.files = parts
        elif op.body:
            if not content_type.startswith("application/json"):
                raise Rejected(400, 3, f"{op.op_id}: expected application/json, got {content_type!r}")
            try:
                body = json.loads(raw_body or b"null")
            except ValueError:
                raise Rejected(400, 3, f"{op.op_id}: body is not JSON") from None
            check(body, op.body[1], kfp_server_api.models, op.body[0], request=True)
            req.json = body
        elif raw_body:
            raise Rejected(400, 3, f"{op.op_id} takes no body")
        handler = getattr(self.handlers, op.op_id, None)
        if handler is None:
            raise Rejected(501, 12, f"{op.op_id} is in the spec but not implemented by the stand-in")
        reply = handler(req, path_params, body)
        if op.op_id == "healthz_service_get_healthz":
            for k, v in reply.items():
                check(v, HEALTHZ_FIELDS[k], kfp_server_api.models, f"healthz reply.{k}", request=False)
        elif op.response_type:
            check(reply, op.response_type, kfp_server_api.models, f"{op.op_id} reply", request=False)
        return reply

    def error_reply(self, err: Rejected) -> dict:
        return {"code": err.code, "message": err.message}
