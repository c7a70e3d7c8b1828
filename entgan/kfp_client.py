"""Upload and schedule the compiled pipeline on a Kubeflow Pipelines API server (REST, v2beta1).

    upload:   the pipeline `entgan-<job>` is created (POST /pipelines/upload) or, if it exists, gets
              a new version (POST /pipelines/upload_version) named after the package's digest, so
              uploading an unchanged pipeline again changes nothing.
    schedule: a recurring run (cron, max_concurrency, no_catchup) of the newest version in an
              experiment (got or created). The API has no update call: a recurring run of the same
              name whose settings differ is deleted and created anew.

Host from `--host` or `KFP_HOST` (e.g. http://localhost:8888 after `kubectl port-forward -n
kubeflow svc/ml-pipeline 8888:8888`, or https://<kubeflow>/pipeline); bearer token from `KFP_TOKEN`
or the file named by `KFP_TOKEN_FILE`. The token is sent only as the `authorization` header and
never printed or put in an error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

API = "/apis/v2beta1"
HOST_ENV, TOKEN_ENV, TOKEN_FILE_ENV, NAMESPACE_ENV = "KFP_HOST", "KFP_TOKEN", "KFP_TOKEN_FILE", "KFP_NAMESPACE"
HOST_HINT = (
    "pass --host or set KFP_HOST, e.g. KFP_HOST=http://localhost:8888 after "
    "`kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888`"
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


class KfpError(RuntimeError):
    """The KFP API cannot be used as asked; the message names the host, the call and the fix."""


@dataclass(frozen=True)
class KfpTarget:
    """Where the KFP API answers and who we are there (the token is kept out of repr)."""

    host: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None


def target_from_env(
    host: str | None = None, namespace: str | None = None, env: Mapping[str, str] | None = None
) -> KfpTarget:
    """The KFP target from flags, falling back to KFP_HOST / KFP_NAMESPACE / KFP_TOKEN(_FILE)."""
    env = os.environ if env is None else env
    host = (host or env.get(HOST_ENV) or "").strip()
    if not host:
        raise KfpError(f"no KFP API host given; {HOST_HINT}")
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KfpError(f"KFP host {host!r} is not an http(s) URL; {HOST_HINT}")
    token = env.get(TOKEN_ENV) or None
    if not token and env.get(TOKEN_FILE_ENV):
        path = Path(env[TOKEN_FILE_ENV])
        if not path.is_file():
            raise KfpError(f"{TOKEN_FILE_ENV} names {path}, which does not exist; fix the path or unset it")
        token = path.read_text().strip() or None
    return KfpTarget(host.rstrip("/"), token, namespace or env.get(NAMESPACE_ENV) or None)


# ---------------------------------------------------------------- the REST calls


class KfpApi:
    """The v2beta1 calls EntGAN needs, one method each; errors become one-line KfpErrors."""

    def __init__(self, target: KfpTarget, timeout: float = 30.0) -> None:
        import requests

        self.target = target
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if target.token:
            self.session.headers["authorization"] = f"Bearer {target.token}"

    def _call(self, method: str, path: str, what: str, *, params=None, body=None, files=None, missing_ok=False):
        import requests

        url = f"{self.target.host}{API}{path}"
        try:
            reply = self.session.request(
                method, url, params=params, json=body, files=files, timeout=self.timeout
            )
        except requests.RequestException as err:
            raise KfpError(
                f"KFP API at {self.target.host} is unreachable while trying to {what} "
                f"({type(err).__name__}); {HOST_HINT}"
            ) from None
        if reply.status_code == 404 and missing_ok:
            return None
        if reply.status_code >= 400:
            message = self._scrub(_error_message(reply))
            fix = ""
            if reply.status_code in (401, 403):
                fix = f"; set {TOKEN_ENV} to a token allowed to do this" + (
                    f" in namespace {self.target.namespace!r}" if self.target.namespace else ""
                )
            raise KfpError(
                f"KFP API at {self.target.host}: {what} failed (HTTP {reply.status_code}: {message}){fix}"
            )
        try:
            return reply.json() if reply.content else {}
        except ValueError:
            raise KfpError(
                f"KFP API at {self.target.host}: {what} answered with something that is not JSON; "
                "is --host the KFP API (not the dashboard's login page)?"
            ) from None

    def _scrub(self, text: str) -> str:
        return text.replace(self.target.token, "***") if self.target.token else text

    def _ns(self) -> dict[str, str]:
        return {"namespace": self.target.namespace} if self.target.namespace else {}

    # pipelines
    def pipeline_by_name(self, name: str) -> dict | None:
        return self._call(
            "GET", f"/pipelines/names/{quote(name, safe='')}", f"look up pipeline {name!r}",
            params=self._ns(), missing_ok=True,
        )

    def upload_pipeline(self, package: Path, name: str, description: str) -> dict:
        params = {"name": name, "display_name": name, "description": description, **self._ns()}
        with open(package, "rb") as f:
            files = {"uploadfile": (package.name, f, "application/x-yaml")}
            return self._call("POST", "/pipelines/upload", f"upload pipeline {name!r}", params=params, files=files)

    def upload_pipeline_version(self, package: Path, pipeline_id: str, name: str, description: str) -> dict:
        params = {"name": name, "display_name": name, "pipelineid": pipeline_id, "description": description}
        with open(package, "rb") as f:
            files = {"uploadfile": (package.name, f, "application/x-yaml")}
            return self._call(
                "POST", "/pipelines/upload_version", f"upload version {name!r}", params=params, files=files
            )

    def pipeline_versions(self, pipeline_id: str) -> list[dict]:
        """The pipeline's versions, newest first (the first page: at most 100)."""
        reply = self._call(
            "GET", f"/pipelines/{quote(pipeline_id, safe='')}/versions", "list pipeline versions",
            params={"sort_by": "created_at desc", "page_size": "100"},
        )
        return reply.get("pipeline_versions", [])

    # experiments
    def experiment_by_name(self, name: str) -> dict | None:
        params = {"filter": _equals("display_name", name), "page_size": "1", **self._ns()}
        reply = self._call("GET", "/experiments", f"look up experiment {name!r}", params=params)
        return next(iter(reply.get("experiments", [])), None)

    def create_experiment(self, name: str, description: str) -> dict:
        body = {"display_name": name, "description": description, **self._ns()}
        return self._call("POST", "/experiments", f"create experiment {name!r}", body=body)

    # recurring runs
    def recurring_runs(self, experiment_id: str, name: str) -> list[dict]:
        params = {"experiment_id": experiment_id, "filter": _equals("display_name", name), **self._ns()}
        reply = self._call("GET", "/recurringruns", f"list recurring runs named {name!r}", params=params)
        return reply.get("recurringRuns", [])  # sic: the published spec names this field in camelCase

    def create_recurring_run(self, body: dict) -> dict:
        return self._call("POST", "/recurringruns", f"create recurring run {body['display_name']!r}", body=body)

    def delete_recurring_run(self, recurring_run_id: str) -> None:
        self._call(
            "DELETE", f"/recurringruns/{quote(recurring_run_id, safe='')}",
            f"delete recurring run {recurring_run_id}",
        )


def _equals(key: str, value: str) -> str:
    """A v2beta1 list filter (JSON of a Filter message) matching one field exactly."""
    return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "string_value": value}]})


def _error_message(reply) -> str:
    try:
        return str(reply.json().get("message") or reply.reason)
    except ValueError:
        return reply.reason or "no message"


# ---------------------------------------------------------------- upload


@dataclass(frozen=True)
class UploadResult:
    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    action: str  # "created pipeline" | "new version" | "unchanged"


def version_name(pipeline_name: str, package: Path) -> str:
    """A version is named after its package's content: the same YAML is the same version."""
    return f"{pipeline_name}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"


def upload(api: KfpApi, package: Path, pipeline_name: str, description: str) -> UploadResult:
    """Create the pipeline from `package`, or add it as a new version if the pipeline exists."""
    name = version_name(pipeline_name, package)
    pipeline = api.pipeline_by_name(pipeline_name)
    if pipeline is None:
        pipeline = api.upload_pipeline(package, pipeline_name, description)
        newest = _newest_version(api, pipeline["pipeline_id"], pipeline_name)
        return UploadResult(
            pipeline["pipeline_id"], pipeline_name, newest["pipeline_version_id"], newest.get("name", ""),
            "created pipeline",
        )
    pipeline_id = pipeline["pipeline_id"]
    same = [v for v in api.pipeline_versions(pipeline_id) if v.get("name") == name]
    if same:
        return UploadResult(pipeline_id, pipeline_name, same[0]["pipeline_version_id"], name, "unchanged")
    version = api.upload_pipeline_version(package, pipeline_id, name, description)
    return UploadResult(pipeline_id, pipeline_name, version["pipeline_version_id"], name, "new version")


def _newest_version(api: KfpApi, pipeline_id: str, pipeline_name: str) -> dict:
    versions = api.pipeline_versions(pipeline_id)
    if not versions:
        raise KfpError(f"KFP API at {api.target.host}: pipeline {pipeline_name!r} has no version; upload it again")
    return versions[0]


# ---------------------------------------------------------------- schedule


def normalize_cron(expression: str) -> str:
    """KFP's cron has six fields, seconds first; a classic five-field cron gets second 0."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise KfpError(
            f"cron {expression!r} is not a cron expression; write 5 fields (minute hour day month weekday) "
            "or 6 (with seconds first), e.g. '0 */6 * * *'"
        )
    return " ".join(fields)


@dataclass(frozen=True)
class Schedule:
    """A recurring run of the pipeline: the check period of the job's trigger."""

    name: str
    cron: str
    experiment: str
    max_concurrency: int = 1
    no_catchup: bool = True
    pipeline_root: str | None = None
    service_account: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cron", normalize_cron(self.cron))
        if not 1 <= self.max_concurrency <= 10:
            raise KfpError(f"max_concurrency is {self.max_concurrency}; KFP accepts 1 to 10")

    def body(self, pipeline_id: str, version_id: str, experiment_id: str) -> dict:
        """The v2beta1 RecurringRun to create (only input fields, as the API defines them)."""
        runtime = {"pipeline_root": self.pipeline_root} if self.pipeline_root else {}
        body = {
            "display_name": self.name,
            "description": self.description,
            "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            "runtime_config": runtime,
            "max_concurrency": str(self.max_concurrency),  # int64 travels as a JSON string
            "trigger": {"cron_schedule": {"cron": self.cron}},
            "mode": "ENABLE",
            "no_catchup": self.no_catchup,
            "experiment_id": experiment_id,
        }
        if self.service_account:
            body["service_account"] = self.service_account
        return body


@dataclass(frozen=True)
class ScheduleResult:
    action: str  # "created" | "replaced" | "unchanged"
    recurring_run_id: str
    experiment_id: str
    pipeline_version_id: str
    body: dict


_COMPARED = (
    "pipeline_version_reference", "runtime_config", "max_concurrency", "trigger", "no_catchup",
    "service_account", "description",
)


def _same_settings(existing: dict, wanted: dict) -> bool:
    if existing.get("status") == "DISABLED":
        return False
    normal = {"max_concurrency": str, "runtime_config": lambda v: {k: x for k, x in (v or {}).items() if x}}
    for key in _COMPARED:
        convert = normal.get(key, lambda v: v)
        if convert(existing.get(key) or None) != convert(wanted.get(key) or None):
            return False
    return True


def schedule(api: KfpApi, pipeline_name: str, wanted: Schedule) -> ScheduleResult:
    """Create, keep or replace the recurring run `wanted.name` of the newest pipeline version."""
    pipeline = api.pipeline_by_name(pipeline_name)
    if pipeline is None:
        raise KfpError(
            f"KFP API at {api.target.host} has no pipeline {pipeline_name!r}; run `entgan upload JOB` first"
        )
    version = _newest_version(api, pipeline["pipeline_id"], pipeline_name)
    experiment = api.experiment_by_name(wanted.experiment) or api.create_experiment(
        wanted.experiment, f"EntGAN runs of pipeline {pipeline_name}"
    )
    body = wanted.body(pipeline["pipeline_id"], version["pipeline_version_id"], experiment["experiment_id"])
    existing = api.recurring_runs(experiment["experiment_id"], wanted.name)
    keep = [r for r in existing if _same_settings(r, body)]
    if len(existing) == 1 and keep:
        return ScheduleResult(
            "unchanged", keep[0]["recurring_run_id"], experiment["experiment_id"],
            version["pipeline_version_id"], body,
        )
    for old in existing:
        api.delete_recurring_run(old["recurring_run_id"])
    created = api.create_recurring_run(body)
    return ScheduleResult(
        "replaced" if existing else "created", created["recurring_run_id"], experiment["experiment_id"],
        version["pipeline_version_id"], body,
    )


def pipeline_name(job_name: str) -> str:
    """The KFP pipeline (and default experiment and recurring run) name of a job."""
    return f"entgan-{job_name}"
