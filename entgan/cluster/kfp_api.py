"""EntGAN's policy for Kubeflow Pipelines, on top of `kfp.Client` (the KFP SDK's v2beta1 client).

    upload:   the pipeline `entgan-<job>` holds one version per distinct compiled package, named
              after the package's digest, so uploading an unchanged pipeline again changes nothing.
    schedule: a recurring run (cron, max_concurrency, no_catchup) of the newest version in an
              experiment (got or created). The API has no update call: a recurring run of the same
              name whose settings differ is deleted and created anew.
    version:  both refuse a backend older than MIN_BACKEND (it reports its version in `healthz`).

Connection settings come from flags or the environment and go to `kfp.Client`'s own options:
KFP_HOST (e.g. http://localhost:8888 after `kubectl port-forward -n kubeflow svc/ml-pipeline
8888:8888`, or https://<kubeflow>/pipeline), KFP_TOKEN or KFP_TOKEN_FILE (bearer token),
KFP_COOKIES (a Cookie header, e.g. `authservice_session=...` from a Kubeflow login), KFP_CA_CERT
(a CA bundle file for a private TLS certificate), KFP_PROXY (an http(s) proxy URL) and
KFP_NAMESPACE (multi-user Kubeflow). The token and cookies are never printed or put in an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.package_size import check_package_size

HOST_ENV, TOKEN_ENV, TOKEN_FILE_ENV, NAMESPACE_ENV = "KFP_HOST", "KFP_TOKEN", "KFP_TOKEN_FILE", "KFP_NAMESPACE"
COOKIES_ENV, CA_CERT_ENV, PROXY_ENV = "KFP_COOKIES", "KFP_CA_CERT", "KFP_PROXY"
HOST_HINT = (
    "pass --host or set KFP_HOST, e.g. KFP_HOST=http://localhost:8888 after "
    "`kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888`"
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")

# The oldest KFP backend that runs EntGAN's pipeline correctly, and why (see docs/kubeflow-backend-notes.md).
MIN_BACKEND = (2, 17, 0)
MIN_BACKEND_WHY = (
    "backends up to 2.16 reject the upload: their strict parser does not know the run deadline "
    "(pipelineConfig field 5, activeDeadlineSeconds; backend/src/apiserver/template/v2_template.go); "
    "also PipelineTaskFinalStatus and task display names need 2.14, `optional` Secret/ConfigMap env 2.15, "
    "collected artifact lists 2.16, and an exit handler around loops is reported correctly from 2.17"
)


class KfpError(RuntimeError):
    """The KFP API cannot be used as asked; the message names the host, the call and the fix."""


@dataclass(frozen=True)
class KfpTarget:
    """Where the KFP API answers and who we are there (secrets are kept out of repr)."""

    host: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    cookies: str | None = field(default=None, repr=False)
    ca_cert: str | None = None
    proxy: str | None = None


def target_from_env(
    host: str | None = None, namespace: str | None = None, env: Mapping[str, str] | None = None
) -> KfpTarget:
    """The KFP target from flags, falling back to the KFP_* variables listed in the module doc."""
    env = os.environ if env is None else env
    host = (host or env.get(HOST_ENV) or "").strip()
    if not host:
        raise KfpError(f"no KFP API host given; {HOST_HINT}")
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KfpError(f"KFP host {host!r} is not an http(s) URL; {HOST_HINT}")
    token = env.get(TOKEN_ENV) or None
    if not token and env.get(TOKEN_FILE_ENV):
        token = _read_file(env[TOKEN_FILE_ENV], TOKEN_FILE_ENV).strip() or None
    ca_cert = env.get(CA_CERT_ENV) or None
    if ca_cert:
        _read_file(ca_cert, CA_CERT_ENV)
    return KfpTarget(
        host.rstrip("/"), token, namespace or env.get(NAMESPACE_ENV) or None,
        env.get(COOKIES_ENV) or None, ca_cert, env.get(PROXY_ENV) or None,
    )


def _read_file(path: str, variable: str) -> str:
    if not Path(path).is_file():
        raise KfpError(f"{variable} names {path}, which does not exist; fix the path or unset it")
    return Path(path).read_text()


# ---------------------------------------------------------------- the client


class KfpApi:
    """A `kfp.Client` for one target; its errors become one-line KfpErrors without secrets."""

    def __init__(self, target: KfpTarget) -> None:
        import kfp

        class _Client(kfp.Client):
            # kfp.Client retries healthz five times, 5 s apart, even on HTTP 401: one try is enough.
            def get_kfp_healthz(self, sleep_duration: int = 5):
                return self.healthzs.healthz_service_get_healthz()

        self.target = target
        options = {"namespace": target.namespace} if target.namespace else {}
        with self.calling("connect"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "only works with v2.0.0-beta.2 and later"
            self.client = _Client(
                host=target.host, existing_token=target.token, cookies=target.cookies,
                ssl_ca_cert=target.ca_cert, proxy=target.proxy, **options,
            )

    @contextlib.contextmanager
    def calling(self, what: str):
        """Run kfp.Client calls quietly (it prints UI links) and turn their errors into KfpErrors."""
        import kfp_server_api
        import urllib3

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        except kfp_server_api.ApiException as err:
            fix = ""
            if err.status in (401, 403):
                fix = f"; set {TOKEN_ENV} (or {COOKIES_ENV}) to credentials allowed to do this" + (
                    f" in namespace {self.target.namespace!r}" if self.target.namespace else ""
                )
            message = self._scrub(_error_message(err))
            raise KfpError(
                f"KFP API at {self.target.host}: {what} failed (HTTP {err.status}: {message}){fix}"
            ) from None
        except urllib3.exceptions.HTTPError as err:
            raise KfpError(
                f"KFP API at {self.target.host} is unreachable while trying to {what} "
                f"({type(err).__name__}); {HOST_HINT}"
            ) from None

    def _scrub(self, text: str) -> str:
        for secret in (self.target.token, self.target.cookies):
            text = text.replace(secret, "***") if secret else text
        return text

    def as_dict(self, model) -> dict:
        """A kfp_server_api model as its JSON form (the field names of the API)."""
        return self.client.pipelines.api_client.sanitize_for_serialization(model) if model else {}

    def backend_version(self) -> str:
        """The backend's version as it reports it, e.g. '2.17.0'.

        The API server answers /apis/v2beta1/healthz with `tag_name` (backend/src/apiserver/main.go,
        `healthzResponse`), a field the generated model lacks: read the raw JSON reply."""
        with self.calling("read the backend version (healthz)"):
            reply = self.client.healthzs.healthz_service_get_healthz(_preload_content=False)
        try:
            return str(json.loads(reply.data).get("tag_name") or "")
        except (ValueError, AttributeError):
            raise KfpError(
                f"KFP API at {self.target.host}: healthz answered with something that is not JSON; "
                "is --host the KFP API (not the dashboard's login page)?"
            ) from None

    def pipeline_id(self, name: str) -> str | None:
        with self.calling(f"look up pipeline {name!r}"):
            reply = self.client.list_pipelines(
                filter=_equals("display_name", name), page_size=2, namespace=self.target.namespace
            )
        found = [p for p in reply.pipelines or [] if p.display_name == name]
        return found[0].pipeline_id if found else None

    def versions(self, pipeline_id: str, page_size: int = 100) -> list:
        """The pipeline's versions, newest first (the first page)."""
        with self.calling("list pipeline versions"):
            reply = self.client.list_pipeline_versions(pipeline_id, page_size=page_size, sort_by="created_at desc")
        return reply.pipeline_versions or []


def _equals(key: str, value: str) -> str:
    """A v2beta1 list filter (JSON of a Filter message) matching one field exactly."""
    return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "string_value": value}]})


def _error_message(err) -> str:
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason or "no message")


def check_backend_version(api: KfpApi) -> str:
    """The backend's version; a KfpError naming it, the minimum and why if it is older."""
    found = api.backend_version()
    minimum = ".".join(map(str, MIN_BACKEND))
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", found.strip())
    if match is None:
        raise KfpError(
            f"KFP at {api.target.host} reports version {found!r}, not a release number; EntGAN needs "
            f">= {minimum} ({MIN_BACKEND_WHY}). If this build is newer, pass --skip-preflight"
        )
    if tuple(map(int, match.groups())) < MIN_BACKEND:
        raise KfpError(
            f"KFP at {api.target.host} is version {found}; EntGAN needs >= {minimum} because "
            f"{MIN_BACKEND_WHY}. Upgrade Kubeflow Pipelines"
        )
    return found


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
    """Create the pipeline from `package`, or add it as a new version if the pipeline exists.

    KFP names a new pipeline's first version after the pipeline, not after its content; that
    version is replaced by the digest-named one at once, so a second upload finds it unchanged.
    A package too big for the backend is refused before anything is sent."""
    check_package_size(package)
    name = version_name(pipeline_name, package)
    pipeline_id = api.pipeline_id(pipeline_name)
    action = "new version"
    if pipeline_id is None:
        with api.calling(f"upload pipeline {pipeline_name!r}"):
            pipeline_id = api.client.upload_pipeline(
                str(package), pipeline_name, description, namespace=api.target.namespace
            ).pipeline_id
        action = "created pipeline"
    existing = api.versions(pipeline_id)
    same = [v for v in existing if v.name == name]
    if same:
        return UploadResult(pipeline_id, pipeline_name, same[0].pipeline_version_id, name, "unchanged")
    with api.calling(f"upload version {name!r}"):
        version = api.client.upload_pipeline_version(
            str(package), name, pipeline_id=pipeline_id, description=description
        )
    if action == "created pipeline":
        for default in existing:  # the version KFP named after the pipeline a moment ago
            with api.calling(f"delete the default version {default.name!r}"):
                api.client.delete_pipeline_version(pipeline_id, default.pipeline_version_id)
    return UploadResult(pipeline_id, pipeline_name, version.pipeline_version_id, name, action)


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
        """The v2beta1 RecurringRun this schedule asks for (only input fields, as the API names them)."""
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
    pipeline_id = api.pipeline_id(pipeline_name)
    newest = api.versions(pipeline_id, page_size=1) if pipeline_id else []
    if not newest:
        raise KfpError(
            f"KFP API at {api.target.host} has no pipeline {pipeline_name!r}; run `entgan upload JOB` first"
        )
    version_id = newest[0].pipeline_version_id
    with api.calling(f"get or create experiment {wanted.experiment!r}"):
        experiment_id = api.client.create_experiment(
            wanted.experiment, f"EntGAN runs of pipeline {pipeline_name}", namespace=api.target.namespace
        ).experiment_id
    body = wanted.body(pipeline_id, version_id, experiment_id)
    with api.calling(f"list recurring runs named {wanted.name!r}"):
        reply = api.client.list_recurring_runs(
            experiment_id=experiment_id, filter=_equals("display_name", wanted.name), page_size=100
        )
    existing = [api.as_dict(r) for r in reply.recurring_runs or [] if r.display_name == wanted.name]
    keep = [r for r in existing if _same_settings(r, body)]
    if len(existing) == 1 and keep:
        return ScheduleResult("unchanged", keep[0]["recurring_run_id"], experiment_id, version_id, body)
    for old in existing:
        with api.calling(f"delete recurring run {old['recurring_run_id']}"):
            api.client.delete_recurring_run(old["recurring_run_id"])
    with api.calling(f"create recurring run {wanted.name!r}"):
        created = api.client.create_recurring_run(
            experiment_id, wanted.name, description=wanted.description, cron_expression=wanted.cron,
            max_concurrency=str(wanted.max_concurrency), no_catchup=wanted.no_catchup,
            pipeline_id=pipeline_id, version_id=version_id, pipeline_root=wanted.pipeline_root,
            service_account=wanted.service_account,
        )
    action = "replaced" if existing else "created"
    return ScheduleResult(action, created.recurring_run_id, experiment_id, version_id, body)


def pipeline_name(job_name: str) -> str:
    """The KFP pipeline (and default experiment and recurring run) name of a job."""
    return f"entgan-{job_name}"
