"""`entgan preflight` against STAND-INS of the Kubernetes API and the KFP API.

No Kubernetes API server can run here (no cluster, no Docker, no etcd), and no KFP API server
either. `tests/kube_stand_in.py` plays the core/v1 calls preflight makes and `tests/kfp_stand_in.py`
the KFP API; both check each request against the spec as the installed generated clients carry
it (`kubernetes`, `kfp-server-api`). The checks reach them through the real `kubernetes` client
(with a kubeconfig, as an operator's laptop would) and the real `kfp.Client`.
"""

from urllib.parse import unquote

import pytest

from entgan.cli import verbs as cli
from entgan.cluster import preflight
from entgan.cluster.kfp_api import KfpApi, KfpTarget
from entgan.job.spec import parse_job
from tests.conftest import tiny_job_dict, write_job
from tests.kfp_stand_in import KfpStandIn
from tests.kube_stand_in import KubeStandIn, node

NS = "team-a"
EDGE = "entgan.io/edge"
TAINT = ("node-role.kubernetes.io/edge", "NoSchedule")
MLFLOW = "http://mlflow.entgan.svc:5000"


def _job(tmp_path, **edge_settings):
    data = tiny_job_dict(tmp_path, list(edge_settings), mlflow_tracking_uri=MLFLOW)
    for edge in data["edges"]:
        edge.update(edge_settings[edge["name"]])
    return parse_job(data)


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """A healthy cluster: Secret, ConfigMap, MLflow Service; nodes are added per test."""
    with KubeStandIn() as server:
        server.secrets[(NS, "entgan-s3")] = {"AWS_ACCESS_KEY_ID": "YQ==", "AWS_SECRET_ACCESS_KEY": "Yg=="}
        server.config_maps[(NS, "entgan-config")] = {"ENTGAN_S3_ENDPOINT": "http://minio:9000"}
        server.services[("entgan", "mlflow:5000")] = 200
        monkeypatch.setenv("KUBECONFIG", server.kubeconfig(tmp_path / "kubeconfig"))
        yield server


@pytest.fixture
def kfp(monkeypatch):
    with KfpStandIn(token="t") as server:
        monkeypatch.setenv("KFP_HOST", server.url)
        monkeypatch.setenv("KFP_TOKEN", "t")
        monkeypatch.delenv("KFP_NAMESPACE", raising=False)
        yield server


def test_a_ready_cluster_passes_every_check(kube, kfp, tmp_path):
    # Prepare: a CPU edge on a tainted KubeEdge node, a 2-GPU edge with an extra label
    job = _job(tmp_path, **{"edge-1": {}, "edge-2": {"gpus": 2, "node_selector": {"pool": "gpu"}}})
    kube.nodes += [
        node("pi-1", {EDGE: "edge-1"}, taints=[TAINT]),
        node("gpu-1", {EDGE: "edge-2", "pool": "gpu"}, gpus=2),
        node("gpu-2", {EDGE: "edge-2"}, gpus=4),  # lacks the extra label: not a candidate
    ]
    # Execute
    checks = preflight.preflight(job, preflight.kube_api(), NS, KfpApi(KfpTarget(kfp.url, "t")))
    # Assert
    assert all(c.ok for c in checks), preflight.report(checks)
    assert [c.what for c in checks] == [
        "edge edge-1 node", "edge edge-1 taints", "edge edge-1 GPUs",
        "edge edge-2 node", "edge edge-2 taints", "edge edge-2 GPUs",
        f"Secret {NS}/entgan-s3", f"ConfigMap {NS}/entgan-config", "MLflow server", "Kubeflow Pipelines",
    ]
    assert [r.query["labelSelector"] for r in kube.calls("list_node")] == [
        "entgan.io/edge=edge-1", "entgan.io/edge=edge-2,pool=gpu",
    ]
    assert "gpu-1 has 2 allocatable nvidia.com/gpu" in checks[5].detail
    (proxy,) = kube.calls("connect_get_namespaced_service_proxy_with_path")
    assert unquote(proxy.path) == "/api/v1/namespaces/entgan/services/mlflow:5000/proxy/health"


def test_each_problem_is_one_failed_line_with_its_fix(kube, kfp, tmp_path):
    # Prepare
    job = _job(tmp_path, **{
        "edge-1": {}, "edge-2": {}, "edge-3": {}, "edge-4": {"gpus": 2},
    })
    kube.nodes += [
        node("n2", {EDGE: "edge-2"}, ready=False),
        node("n3", {EDGE: "edge-3"}, taints=[("dedicated", "NoSchedule")]),
        node("n4", {EDGE: "edge-4"}, gpus=1),
    ]
    del kube.secrets[(NS, "entgan-s3")]
    kube.config_maps[(NS, "entgan-config")] = {"OTHER": "x"}
    kube.services[("entgan", "mlflow:5000")] = 503
    kfp.state.version = "2.16.1"
    # Execute
    checks = preflight.preflight(job, preflight.kube_api(), NS, KfpApi(KfpTarget(kfp.url, "t")))
    lines = preflight.report(checks).splitlines()
    # Assert
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 8 and lines[-1] == "preflight: 3 of 11 checks passed"
    expected = [
        "edge edge-1 node: no node is labelled entgan.io/edge=edge-1; fix: kubectl label node NODE entgan.io/edge=edge-1",
        "edge edge-2 node: n2 (labelled entgan.io/edge=edge-2) not Ready; fix: see `kubectl describe node n2`",
        "edge edge-3 taints: n3 has dedicated:NoSchedule, which the pipeline does not tolerate",
        "edge edge-4 GPUs: n4 has 1 allocatable nvidia.com/gpu, the edge requests 2; fix: lower edges[edge-4].gpus",
        f"Secret {NS}/entgan-s3: not found; fix: kubectl -n {NS} create secret generic entgan-s3",
        f"ConfigMap {NS}/entgan-config: lacks ENTGAN_S3_ENDPOINT",
        f"MLflow server: {MLFLOW}/health answered HTTP 503",
        "Kubeflow Pipelines: KFP at",
    ]
    for line, start in zip(failed, expected):
        assert line.startswith(f"FAIL  {start}"), line
    assert "is version 2.16.1; EntGAN needs >= 2.17.0" in failed[-1]
    assert "YQ==" not in "\n".join(lines)


def test_a_job_without_an_mlflow_server_fails_the_mlflow_check(kube, tmp_path):
    job = parse_job(tiny_job_dict(tmp_path, ["edge-1"]))
    check = preflight.mlflow_check(job, preflight.kube_api())
    assert not check.ok and "set mlflow_tracking_uri" in check.line()


def test_no_cluster_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "")
    with pytest.raises(preflight.KubeError, match="set KUBECONFIG"):
        preflight.kube_api()


def test_cli_preflight_and_upload_stop_before_sending_a_pipeline(kube, kfp, tmp_path, capsys, monkeypatch):
    # Prepare: edge-1 has its node, edge-2 has none
    monkeypatch.chdir(tmp_path)
    data = tiny_job_dict(tmp_path, ["edge-1", "edge-2"], mlflow_tracking_uri=MLFLOW)
    job_file = write_job(tmp_path / "job.yaml", data)
    kube.nodes.append(node("n1", {EDGE: "edge-1"}))
    # Execute
    verb = cli.main(["preflight", str(job_file), "--namespace", NS])
    upload = cli.main(["upload", str(job_file), "--namespace", NS])
    out, err = capsys.readouterr()
    skipped = cli.main(["upload", str(job_file), "--namespace", NS, "--skip-preflight"])
    # Assert
    assert verb == 2 and upload == 2 and skipped == 0
    assert out.count("FAIL  edge edge-2 node: no node is labelled entgan.io/edge=edge-2") == 2
    assert "PASS  edge edge-1 node: n1 Ready" in out
    assert "1 of 8 preflight checks failed" in err
    assert len(kfp.calls("upload_pipeline")) == 1  # only the upload with --skip-preflight
