"""`entgan upload` / `entgan schedule` against a STAND-IN for the KFP v2beta1 API server.

No KFP API server can run here (it needs Kubernetes, Argo and MySQL). `tests/kfp_stand_in.py`
is a local HTTP server that accepts exactly what the v2beta1 spec defines (as the installed
`kfp-server-api` package carries it) and rejects the rest; these tests assert on the requests
that `kfp.Client`, driven by EntGAN's policy, sends it (paths, query parameters, multipart
upload, recurring-run body, bearer token).
"""

import json

import pytest
import requests
import yaml

from entgan.cli import verbs as cli
from entgan.cluster import kfp_api as kfp_client
from entgan.cluster.kfp_api import KfpApi, KfpError, KfpTarget, Schedule
from entgan.job.spec import parse_job
from pipelines import package_size
from pipelines.package_size import PipelineTooLarge
from tests.conftest import tiny_job_dict
from tests.kfp_stand_in import KfpStandIn
from tests.servers import free_port

TOKEN = "kfp-test-token-4f9a"


@pytest.fixture
def job(tmp_path):
    return parse_job(tiny_job_dict(tmp_path, ["edge-1", "edge-2"]))


@pytest.fixture
def kfp(monkeypatch):
    """The stand-in, with KFP_HOST and KFP_TOKEN set as an operator would set them."""
    with KfpStandIn(token=TOKEN) as server:
        for key in ("KFP_HOST", "KFP_TOKEN", "KFP_TOKEN_FILE", "KFP_NAMESPACE", "KFP_COOKIES", "KFP_CA_CERT", "KFP_PROXY"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("KFP_HOST", server.url)
        monkeypatch.setenv("KFP_TOKEN", TOKEN)
        yield server


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from pipelines.entgan_pipeline import compile_job

    folder = tmp_path_factory.mktemp("pkg")
    job = parse_job(tiny_job_dict(folder, ["edge-1", "edge-2"]))
    return compile_job(job, folder / "tiny.pipeline.yaml")


def _api(server: KfpStandIn, token: str | None = TOKEN, namespace: str | None = None) -> KfpApi:
    return KfpApi(KfpTarget(server.url, token, namespace))


def _versions(kfp: KfpStandIn, pipeline_id: str) -> list[str]:
    return [v["name"] for v in kfp.state.versions[pipeline_id]]


# ---------------------------------------------------------------- settings (no server)


def test_host_comes_from_flag_then_env_and_must_be_a_url(tmp_path):
    # Prepare
    token_file = tmp_path / "token"
    token_file.write_text(" from-file\n")
    env = {"KFP_HOST": "http://env-host:8888/", "KFP_TOKEN_FILE": str(token_file), "KFP_NAMESPACE": "team-a"}
    # Execute
    from_env = kfp_client.target_from_env(env=env)
    from_flag = kfp_client.target_from_env("https://kubeflow.example.com/pipeline", "team-b", env=env)
    # Assert
    assert (from_env.host, from_env.token, from_env.namespace) == ("http://env-host:8888", "from-file", "team-a")
    assert (from_flag.host, from_flag.namespace) == ("https://kubeflow.example.com/pipeline", "team-b")
    assert "from-file" not in repr(from_env)
    with pytest.raises(KfpError, match="pass --host or set KFP_HOST"):
        kfp_client.target_from_env(env={})
    with pytest.raises(KfpError, match="not an http"):
        kfp_client.target_from_env("ml-pipeline:8888", env={})


@pytest.mark.parametrize(
    ("given", "expected"),
    [("0 */6 * * *", "0 0 */6 * * *"), ("30 0 2 * * MON-FRI", "30 0 2 * * MON-FRI")],
)
def test_cron_gets_kfp_six_fields(given, expected):
    assert kfp_client.normalize_cron(given) == expected


@pytest.mark.parametrize("bad", ["* * *", "0 0 * * * * *", "0 0 $(rm) * *"])
def test_bad_cron_says_how_to_write_one(bad):
    with pytest.raises(KfpError, match="write 5 fields"):
        kfp_client.normalize_cron(bad)


def test_max_concurrency_outside_kfp_range_is_refused():
    with pytest.raises(KfpError, match="1 to 10"):
        Schedule(name="s", cron="0 * * * *", experiment="e", max_concurrency=11)


def test_pipeline_name_is_the_compiled_pipeline_name(package):
    doc = next(yaml.safe_load_all(package.read_text()))
    assert doc["pipelineInfo"]["name"] == kfp_client.pipeline_name("tiny")


# ---------------------------------------------------------------- the stand-in is strict


def test_stand_in_rejects_what_the_spec_does_not_define(kfp):
    # Prepare
    headers = {"authorization": f"Bearer {TOKEN}"}
    api = f"{kfp.url}/apis/v2beta1"
    # Execute
    unknown_path = requests.get(f"{api}/pipelines/names/x/extra", headers=headers)
    unknown_query = requests.get(f"{api}/experiments", params={"name": "x"}, headers=headers)
    unknown_field = requests.post(f"{api}/experiments", json={"display_name": "e", "owner": "me"}, headers=headers)
    output_only = requests.post(
        f"{api}/recurringruns", json={"display_name": "r", "namespace": "ns", "max_concurrency": "1"},
        headers=headers,
    )
    int_as_number = requests.post(
        f"{api}/recurringruns", json={"display_name": "r", "max_concurrency": 1}, headers=headers
    )
    no_file = requests.post(f"{api}/pipelines/upload", files={"other": ("p.yaml", b"x")}, headers=headers)
    no_token = requests.get(f"{api}/pipelines/names/x")
    # Assert
    assert unknown_path.status_code == 404
    assert unknown_query.status_code == 400 and "unknown query parameter" in unknown_query.json()["message"]
    assert unknown_field.status_code == 400 and "'owner'" in unknown_field.json()["message"]
    assert output_only.status_code == 400 and "output only" in output_only.json()["message"]
    assert int_as_number.status_code == 400
    assert no_file.status_code == 400 and "unknown form field" in no_file.json()["message"]
    assert no_token.status_code == 401


# ---------------------------------------------------------------- upload


def test_first_upload_creates_the_pipeline_with_one_version_named_by_digest(kfp, package):
    # Execute
    result = kfp_client.upload(_api(kfp), package, "entgan-tiny", "desc")
    # Assert: health, looked up by name, uploaded, its digest version added, KFP's default one removed
    assert [r.operation for r in kfp.requests] == [
        "healthz_service_get_healthz", "pipeline_service_list_pipelines", "upload_pipeline",
        "pipeline_service_list_pipeline_versions", "upload_pipeline_version",
        "pipeline_service_delete_pipeline_version",
    ]
    up = kfp.calls("upload_pipeline")[0]
    assert up.path == "/apis/v2beta1/pipelines/upload" and up.status == 200
    assert up.query["name"] == "entgan-tiny" and up.query["description"] == "desc"
    assert up.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert up.files["uploadfile"] == (package.name, package.read_bytes())
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in kfp.requests)
    digest_name = kfp_client.version_name("entgan-tiny", package)
    assert result.action == "created pipeline" and result.version_name == digest_name
    assert _versions(kfp, result.pipeline_id) == [digest_name]
    assert result.version_id == kfp.state.versions[result.pipeline_id][0]["pipeline_version_id"]


def test_upload_of_the_same_package_again_changes_nothing(kfp, package):
    # Prepare: the first upload of all (the one that used to keep KFP's default version name)
    api = _api(kfp)
    first = kfp_client.upload(api, package, "entgan-tiny", "d")
    kfp.requests.clear()
    # Execute
    again = kfp_client.upload(api, package, "entgan-tiny", "d")
    # Assert
    assert again.action == "unchanged" and again.version_id == first.version_id
    assert not kfp.calls("upload_pipeline_version") and not kfp.calls("upload_pipeline")
    assert len(kfp.state.versions[first.pipeline_id]) == 1


def test_changed_package_becomes_a_new_version_of_the_existing_pipeline(kfp, package, tmp_path):
    # Prepare
    api = _api(kfp)
    created = kfp_client.upload(api, package, "entgan-tiny", "d")
    changed = tmp_path / "changed.yaml"
    changed.write_text(package.read_text().replace("ghcr.io/entgan/entgan:0.1.0", "registry.example/entgan:2"))
    kfp.requests.clear()
    # Execute
    result = kfp_client.upload(api, changed, "entgan-tiny", "d")
    # Assert
    (call,) = kfp.calls("upload_pipeline_version")
    assert call.path == "/apis/v2beta1/pipelines/upload_version"
    assert call.query["pipelineid"] == created.pipeline_id
    assert call.query["name"] == kfp_client.version_name("entgan-tiny", changed) == result.version_name
    assert b"registry.example/entgan:2" in call.files["uploadfile"][1]
    assert result.action == "new version" and len(kfp.state.versions[created.pipeline_id]) == 2


def test_wrong_token_is_one_clear_error_without_the_token(kfp, package):
    with pytest.raises(KfpError) as err:
        kfp_client.upload(_api(kfp, token="not-the-right-token"), package, "entgan-tiny", "d")
    assert "HTTP 401" in str(err.value) and "KFP_TOKEN" in str(err.value)
    assert len(kfp.requests) == 1  # one try, not kfp.Client's five healthz retries 5 s apart
    assert "not-the-right-token" not in str(err.value)


def test_unreachable_host_says_how_to_reach_kfp(package):
    with pytest.raises(KfpError, match="unreachable.*port-forward") as err:
        kfp_client.upload(KfpApi(KfpTarget(f"http://127.0.0.1:{free_port()}", TOKEN)), package, "entgan-tiny", "d")
    assert TOKEN not in str(err.value)


# ---------------------------------------------------------------- schedule


def _schedule(**overrides) -> Schedule:
    settings = {"name": "entgan-tiny", "cron": "0 */6 * * *", "experiment": "entgan-tiny", "max_concurrency": 2}
    return Schedule(**{**settings, **overrides})


def test_schedule_creates_experiment_and_recurring_run_of_the_newest_version(kfp, package, tmp_path):
    # Prepare
    api = _api(kfp)
    kfp_client.upload(api, package, "entgan-tiny", "d")
    changed = tmp_path / "v2.yaml"
    changed.write_text(package.read_text() + "\n# v2\n")
    newest = kfp_client.upload(api, changed, "entgan-tiny", "d")
    kfp.requests.clear()
    # Execute
    result = kfp_client.schedule(api, "entgan-tiny", _schedule(pipeline_root="s3://entgan/kfp"))
    # Assert
    (create_experiment,) = kfp.calls("experiment_service_create_experiment")
    assert create_experiment.json["display_name"] == "entgan-tiny"
    (create,) = kfp.calls("recurring_run_service_create_recurring_run")
    assert create.path == "/apis/v2beta1/recurringruns" and create.status == 200
    assert create.json == {
        "display_name": "entgan-tiny",
        "description": "",
        "pipeline_version_reference": {"pipeline_id": newest.pipeline_id, "pipeline_version_id": newest.version_id},
        "runtime_config": {"parameters": {}, "pipeline_root": "s3://entgan/kfp"},  # kfp.Client adds {}
        "max_concurrency": "2",
        "trigger": {"cron_schedule": {"cron": "0 0 */6 * * *"}},
        "mode": "ENABLE",
        "no_catchup": True,
        "experiment_id": result.experiment_id,
    }
    assert result.action == "created" and result.recurring_run_id in kfp.state.recurring


def test_schedule_again_keeps_or_replaces_the_recurring_run(kfp, package):
    # Prepare
    api = _api(kfp)
    kfp_client.upload(api, package, "entgan-tiny", "d")
    first = kfp_client.schedule(api, "entgan-tiny", _schedule())
    # Execute
    same = kfp_client.schedule(api, "entgan-tiny", _schedule())
    changed = kfp_client.schedule(api, "entgan-tiny", _schedule(cron="15 3 * * *", no_catchup=False))
    # Assert
    assert same.action == "unchanged" and same.recurring_run_id == first.recurring_run_id
    assert changed.action == "replaced"
    (delete,) = kfp.calls("recurring_run_service_delete_recurring_run")
    assert delete.path == f"/apis/v2beta1/recurringruns/{first.recurring_run_id}"
    assert list(kfp.state.recurring) == [changed.recurring_run_id]
    stored = kfp.state.recurring[changed.recurring_run_id]
    assert stored["trigger"]["cron_schedule"]["cron"] == "0 15 3 * * *" and stored["no_catchup"] is False
    assert len(kfp.calls("experiment_service_create_experiment")) == 1


def test_schedule_before_upload_says_to_upload(kfp):
    with pytest.raises(KfpError, match="no pipeline 'entgan-tiny'.*entgan upload"):
        kfp_client.schedule(_api(kfp), "entgan-tiny", _schedule())


def test_namespace_is_sent_where_the_api_takes_it(kfp, package):
    api = _api(kfp, namespace="team-a")
    kfp_client.upload(api, package, "entgan-tiny", "d")
    kfp_client.schedule(api, "entgan-tiny", _schedule())
    assert kfp.calls("upload_pipeline")[0].query["namespace"] == "team-a"
    assert kfp.calls("pipeline_service_list_pipelines")[0].query["namespace"] == "team-a"
    assert kfp.calls("experiment_service_create_experiment")[0].json["namespace"] == "team-a"


# ---------------------------------------------------------------- the CLI verbs


def test_cli_upload_and_schedule_end_to_end(kfp, job, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(json.loads(job.model_dump_json())))
    # Execute
    up = cli.main(["upload", str(job_file), "--image", "registry.example/entgan:1.2.3", "--skip-preflight"])
    sched = cli.main(["schedule", str(job_file), "--cron", "0 2 * * *", "--max-concurrency", "1", "--skip-preflight"])
    # Assert
    out = capsys.readouterr().out
    assert up == 0 and sched == 0
    assert "created pipeline: pipeline 'entgan-tiny'" in out and "created: recurring run 'entgan-tiny'" in out
    uploaded = kfp.calls("upload_pipeline")[0].files["uploadfile"][1].decode()
    assert "image: registry.example/entgan:1.2.3" in uploaded
    assert (tmp_path / "build" / "tiny.pipeline.yaml").is_file()
    assert TOKEN not in out


def test_cli_dry_runs_send_nothing(kfp, job, capsys, tmp_path):
    # Execute
    cli.upload(job, image="registry.example/entgan:9", output=tmp_path / "p.yaml", dry_run=True)
    body = cli.schedule(job, "*/30 * * * *", max_concurrency=3, catchup=True, dry_run=True)
    # Assert
    out = capsys.readouterr().out
    assert kfp.requests == []
    assert "would upload" in out and "'entgan-tiny'" in out and "registry.example/entgan:9" in out
    assert body["trigger"] == {"cron_schedule": {"cron": "0 */30 * * * *"}}
    assert body["max_concurrency"] == "3" and body["no_catchup"] is False
    assert json.loads(out[out.index("{") : out.rindex("}") + 1]) == body


def test_cli_errors_are_one_line(job, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.delenv("KFP_HOST", raising=False)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(json.loads(job.model_dump_json())))
    # Execute
    code = cli.main(["schedule", str(job_file), "--cron", "0 2 * * *"])
    bad_cron = cli.main(["schedule", str(job_file), "--cron", "every day", "--dry-run"])
    # Assert
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and bad_cron == 2 and len(err) == 2
    assert err[0].startswith("error: no KFP API host given; pass --host or set KFP_HOST")
    assert err[1].startswith("error: cron 'every day' is not a cron expression")


# ---------------------------------------------------------------- backend version, connection options


@pytest.mark.parametrize("reported", ["2.17.0", "v2.18.1", "2.17.3-rc.1"])
def test_new_enough_backend_passes_the_version_check(kfp, reported):
    kfp.state.version = reported
    assert kfp_client.check_backend_version(_api(kfp)) == reported


@pytest.mark.parametrize(("reported", "says"), [("2.16.1", "is version 2.16.1"), ("unknown", "not a release number")])
def test_old_or_unknown_backend_is_refused_naming_version_minimum_and_why(kfp, reported, says):
    kfp.state.version = reported
    with pytest.raises(KfpError) as err:
        kfp_client.check_backend_version(_api(kfp))
    message = str(err.value)
    assert says in message and ">= 2.17.0" in message
    assert "PipelineTaskFinalStatus" in message and "exit handler around loops" in message
    assert "reject the upload" in message and "pipelineConfig field 5" in message  # the hard reason


def test_cookies_and_proxy_go_through_kfp_client_options(kfp, package):
    # Prepare: a host that does not resolve, reached only through the proxy (the stand-in)
    target = KfpTarget("http://kfp.invalid:8888", TOKEN, cookies="authservice_session=abc", proxy=kfp.url)
    # Execute
    kfp_client.upload(KfpApi(target), package, "entgan-tiny", "d")
    # Assert
    assert kfp.requests and all(r.headers["host"] == "kfp.invalid:8888" for r in kfp.requests)
    assert all(r.headers["cookie"] == "authservice_session=abc" for r in kfp.requests)


def test_connection_settings_come_from_the_environment(tmp_path):
    # Prepare
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"KFP_HOST": "https://kf.example", "KFP_COOKIES": "s=1", "KFP_CA_CERT": str(ca), "KFP_PROXY": "http://p:3128"}
    # Execute
    target = kfp_client.target_from_env(env=env)
    # Assert
    assert (target.cookies, target.ca_cert, target.proxy) == ("s=1", str(ca), "http://p:3128")
    assert "s=1" not in repr(target)
    with pytest.raises(KfpError, match="KFP_CA_CERT names .*does not exist"):
        kfp_client.target_from_env(env={**env, "KFP_CA_CERT": str(tmp_path / "missing.pem")})


# ---------------------------------------------------------------- package size


def test_the_tiny_package_fits_the_backend_limits(package):
    sizes = package_size.check_package_size(package)
    assert 0 < sizes["spec_bytes"] < sizes["workflow_bytes"] <= package_size.BUDGET


def test_a_package_over_a_limit_is_refused_before_anything_is_sent(kfp, package):
    # Prepare: the same package against a budget it does not fit
    sizes = package_size.check_package_size(package)
    # Execute / Assert
    with pytest.raises(PipelineTooLarge, match=r"Argo Workflow .* over the .* MAX_WORKFLOW_SIZE .*lower train.rounds"):
        package_size.check_package_size(package, budget=sizes["workflow_bytes"] - 1)
    big = package.parent / "big.yaml"
    big.write_text(package.read_text().replace("executorLabel:", "description: '" + "x" * 2_000_000 + "'\n    executorLabel:", 1))
    with pytest.raises(PipelineTooLarge, match="MAX_WORKFLOW_SIZE"):
        kfp_client.upload(_api(kfp), big, "entgan-tiny", "d")
    assert not kfp.calls("upload_pipeline")
