"""The task library against a real `mlflow server` whose artifacts live in a real S3 bucket.

Both servers are started here on 127.0.0.1: SeaweedFS (S3) and `mlflow server
--artifacts-destination s3://...` (artifacts proxied, as in manifests/base). The client side runs
with NO S3 credentials in its environment: only the server holds them. The e2e test runs the
whole local pipeline with edge data in the bucket (s3:// URIs) and MLflow in server mode, then
reads the champions back through the server's REST API.
"""

import json
import urllib.error
import urllib.request

import pytest
import torch

from entgan.gan.bundle import BundleHeader, load_bundle, pack, save_bundle
from entgan.job import storage
from entgan.job.spec import parse_job
from entgan.library.registry import CHAMPION, TaskLibrary
from tests.conftest import tiny_job_dict
from tests.servers import mlflow_server, seaweedfs

ARTIFACT_BUCKET, DATA_BUCKET = "mlflow-artifacts", "edge-data"
TYPES = ["box", "clutter", "robot", "table"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("servers")
    with seaweedfs(root / "s3") as s3:
        s3.client().make_bucket(ARTIFACT_BUCKET)
        s3.client().make_bucket(DATA_BUCKET)
        with mlflow_server(root / "mlflow", s3, f"s3://{ARTIFACT_BUCKET}/mlflow") as mlflow:
            yield s3, mlflow


@pytest.fixture
def no_s3_credentials(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "ENTGAN_S3_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)


def _rest(url: str, host: str | None = None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=30) as reply:
        body = reply.read()
        return json.loads(body) if reply.headers.get_content_type() == "application/json" else body


def _objects(s3, prefix: str = "") -> list[str]:
    return [o.object_name for o in s3.client().list_objects(ARTIFACT_BUCKET, prefix=prefix, recursive=True)]


def test_task_library_registers_through_the_server_into_the_bucket(servers, no_s3_credentials, tmp_path):
    # Prepare
    s3, mlflow = servers
    library = TaskLibrary(mlflow.url, "srv")
    folder = tmp_path / "box"
    folder.mkdir()
    weights = pack({"box/G": {"w": torch.arange(6.0).reshape(2, 3)}})
    save_bundle(folder / "model.safetensors", weights, BundleHeader(kind="model", num_examples={"box": 7}))
    # Execute
    run_id = library.start_run("server-test", {"rounds": "2"}, {"entgan.kfp_run_id": "local"})
    library.log_files(run_id, folder, "tasks/box")
    version = library.register("box", run_id, "tasks/box", {"entgan.data_type": "box"})
    library.set_champion("box", version.version)
    library.end_run(run_id)
    champion = library.champion("box")
    loaded = library.load(champion)
    # Assert: the champion reads back, its weights verify, and the file is in the S3 bucket
    assert champion is not None and champion.version == version.version == "1"
    assert torch.equal(loaded.tensors["box/G/w"], weights["box/G/w"])
    assert any(name.endswith(f"{run_id}/artifacts/tasks/box/model.safetensors") for name in _objects(s3, "mlflow/"))
    # ... and the version is an MLflow Model (a logged model) whose files are in the bucket too
    assert champion.source == f"models:/{champion.model_id}"
    assert any(name.endswith(f"models/{champion.model_id}/artifacts/MLmodel") for name in _objects(s3, "mlflow/"))


def test_server_answers_only_its_allowed_host_names(servers):
    # Prepare
    _, mlflow = servers
    url = f"{mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1"
    # Execute
    allowed = _rest(url)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _rest(url, host="attacker.example:5000")
    # Assert
    assert "experiments" in allowed
    assert refused.value.code == 403


@pytest.mark.e2e
def test_pipeline_with_s3_edge_data_and_mlflow_server(servers, demo_edges, tmp_path, monkeypatch):
    from entgan.cli.verbs import run_local

    # Prepare: edge folders uploaded to the data bucket; the pipeline's tasks read them with the
    # S3 key (as pipeline pods get it from the entgan-s3 Secret); MLflow needs no key at all.
    s3, mlflow = servers
    for edge in ("edge-1", "edge-2", "edge-3", "edge-4"):
        storage.upload_folder(demo_edges / "edges" / edge, f"s3://{DATA_BUCKET}/{edge}", env=s3.env)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2", "edge-3", "edge-4"])
    data.update(name="srv-e2e", mlflow_tracking_uri=mlflow.url, state_dir=str(tmp_path / "state"))
    for edge in data["edges"]:
        edge["data"] = f"s3://{DATA_BUCKET}/{edge['name']}"
    job = parse_job(data)
    # Execute
    summary = run_local(job)
    # Assert: every type has a champion, read back through the server's REST API
    assert sorted(summary["types"]) == TYPES
    api = f"{mlflow.url}/api/2.0/mlflow"
    for t in TYPES:
        name = f"entgan-srv-e2e-{t}"
        version = _rest(f"{api}/registered-models/alias?name={name}&alias={CHAMPION}")["model_version"]
        assert version["version"] == summary["types"][t]["champion"] == "1"
        tags = {tag["key"]: tag["value"] for tag in version["tags"]}
        assert tags["entgan.data_type"] == t and tags["entgan.kfp_run_id"] == summary["kfp_run_id"]
        # The version is an MLflow logged model (source `models:/m-<id>`): its weights come back
        # through the server's artifact proxy, from the model's own artifacts, and verify.
        assert version["source"].startswith("models:/m-"), version["source"]
        model = _rest(f"{api}/logged-models/{version['source'].removeprefix('models:/')}")["model"]
        path = model["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
        blob = _rest(f"{mlflow.url}/api/2.0/mlflow-artifacts/artifacts/{path}/artifacts/model.safetensors")
        (tmp_path / f"{t}.safetensors").write_bytes(blob)
        assert f"{t}/G" in {k.rsplit("/", 1)[0] for k in load_bundle(tmp_path / f"{t}.safetensors").tensors}
    # No credential ended up in MLflow's params or tags.
    run = _rest(f"{api}/runs/get?run_id={summary['mlflow_run_id']}")["run"]
    logged = json.dumps(run["data"])
    assert s3.secret_key not in logged and s3.access_key not in logged
    assert any(name.endswith("model.safetensors") for name in _objects(s3, "mlflow/"))
