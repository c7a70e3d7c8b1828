"""The kustomize manifests, rendered with `kubectl kustomize` and validated strictly offline.

Every overlay is rendered from a copy of manifests/ with fresh credentials written by
`new-credentials.sh` (as an operator would), validated against the Kubernetes OpenAPI schemas
of the oldest and newest supported versions (unknown fields rejected), and checked for what the
deployment promises: credentials only through Secrets, least-privilege RBAC, deny-by-default
NetworkPolicies, restricted pods with probes and resources, and edge placement.
"""

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from entgan.job.spec import EDGE_LABEL, load_job
from pipelines.entgan_pipeline import EDGE_TAINT_KEY

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
K8S_VERSIONS = ("1.29.0", "1.37.0")
CREDENTIAL_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "TOKEN", "ROOT_USER")


def _kubectl() -> str:
    path = Path(sys.executable).with_name("kubectl")
    return str(path) if path.exists() else "kubectl"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """{overlay: rendered resources}, plus the credentials that were generated for them."""
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, copy, ignore=shutil.ignore_patterns("*.env"))
    subprocess.run(["sh", str(copy / "new-credentials.sh")], check=True, capture_output=True)
    credentials = {}
    for env_file in copy.glob("components/*/*.env"):
        credentials.update(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
    rendered = {}
    for overlay in OVERLAYS:
        out = subprocess.run(
            [_kubectl(), "kustomize", str(copy / "overlays" / overlay)], check=True, capture_output=True, text=True
        ).stdout
        rendered[overlay] = [d for d in yaml.safe_load_all(out) if d]
    return rendered, credentials


def _all(deployed, kind=None, namespace=None):
    rendered, _ = deployed
    docs = [d for docs in rendered.values() for d in docs]
    return [
        d for d in docs
        if (kind is None or d["kind"] == kind) and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def _get(docs, kind, name, namespace="entgan"):
    return next(
        d for d in docs
        if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == namespace
    )


def _pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield d, d["spec"]["template"]["spec"]


def _containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


# ---------------------------------------------------------------- rendering and schemas


def test_there_are_cloud_and_kubeedge_overlays():
    assert {"cloud", "kubeedge"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_overlay_validates_strictly(deployed, version):
    # Prepare
    rendered, _ = deployed
    errors = []
    # Execute
    for overlay, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{overlay} {doc['kind']}/{doc['metadata']['name']}: {err.message}")
    # Assert
    assert errors == []
    assert all(len(docs) > 15 for docs in rendered.values())


def test_strict_validation_rejects_an_unknown_field(deployed):
    # Prepare: a real Deployment with one misspelled field
    doc = _get(_all(deployed), "Deployment", "mlflow")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    # Execute / Assert
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_base_holds_the_services_in_their_namespace(deployed):
    rendered, _ = deployed
    for docs in rendered.values():
        names = {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"].get("namespace") == "entgan"}
        assert {
            ("Deployment", "minio"), ("PersistentVolumeClaim", "minio-data"), ("Service", "minio"),
            ("Secret", "entgan-s3"), ("StatefulSet", "postgres"), ("Service", "postgres"),
            ("Deployment", "mlflow"), ("Service", "mlflow"), ("ConfigMap", "entgan-config"),
        } <= names
        assert ("Namespace", "entgan") in {(d["kind"], d["metadata"]["name"]) for d in docs}


# ---------------------------------------------------------------- credentials


def test_no_credential_is_committed_in_manifests():
    # Prepare
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "manifests"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split()
    # Assert: no env file would be committed, and no Secret carries inline data
    assert tracked and not [f for f in tracked if f.endswith(".env")]
    for name in tracked:
        if name.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all((REPO / name).read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    pytest.fail(f"{name} defines a Secret inline; generate it from an ignored env file")


def test_secrets_hold_the_generated_credentials_in_both_namespaces(deployed):
    _, credentials = deployed
    for namespace in ("entgan", "kubeflow"):
        secret = _get(_all(deployed), "Secret", "entgan-s3", namespace)
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert decoded == {k: credentials[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert "entgan-postgres" not in {s["metadata"]["name"] for s in _all(deployed, "Secret", "kubeflow")}


def test_credentials_reach_containers_only_through_secret_refs(deployed):
    # Prepare
    _, credentials = deployed
    secret_values = [v for v in credentials.values() if len(v) >= 8]
    # Execute / Assert
    for doc, spec in _pod_specs(_all(deployed)):
        for c in _containers(spec):
            for env in c.get("env", []):
                if any(word in env["name"] for word in CREDENTIAL_WORDS):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{doc['metadata']['name']}: {env['name']}"
                assert not any(v in env.get("value", "") for v in secret_values)
            assert not any(v in " ".join(c.get("args", []) + c.get("command", [])) for v in secret_values)
    non_secrets = yaml.safe_dump_all([d for d in _all(deployed) if d["kind"] != "Secret"])
    assert not any(v in non_secrets for v in secret_values)


# ---------------------------------------------------------------- least privilege


def test_rbac_is_namespaced_read_only_and_never_reads_secrets(deployed):
    docs = _all(deployed)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for role in [d for d in docs if d["kind"] == "Role"]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "secrets" not in rule["resources"]
            writes = set(rule["verbs"]) - {"get", "list", "watch"}
            assert not writes or (rule["resources"] == ["pods/portforward"] and writes == {"create"})


def test_pods_run_restricted_with_their_own_tokenless_service_account(deployed):
    for doc, spec in _pod_specs(_all(deployed, namespace="entgan")):
        name = doc["metadata"]["name"]
        assert spec["serviceAccountName"] == name and spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        for c in spec["containers"]:
            assert c.get("readinessProbe") and c.get("livenessProbe"), f"{name}/{c['name']} needs probes"
    service_accounts = _all(deployed, "ServiceAccount", "entgan")
    assert service_accounts and all(sa["automountServiceAccountToken"] is False for sa in service_accounts)


def test_network_policies_deny_by_default_and_open_only_what_is_needed(deployed):
    policies = {p["metadata"]["name"]: p for p in _all(deployed, "NetworkPolicy", "entgan")}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    postgres = policies["postgres"]["spec"]["ingress"]
    assert postgres == [{
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }]
    for name, port in (("mlflow", 5000), ("minio", 9000)):
        (rule,) = policies[name]["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        assert {"namespaceSelector": {"matchLabels": {"entgan.io/pipelines": "true"}}} in rule["from"]


# ---------------------------------------------------------------- MLflow, images, edge placement


def test_mlflow_server_uses_postgres_proxied_minio_and_allowed_hosts(deployed):
    mlflow = _get(_all(deployed), "Deployment", "mlflow")["spec"]["template"]["spec"]
    (server,) = mlflow["containers"]
    args = " ".join(server["args"])
    env = {e["name"]: e for e in server["env"]}
    assert "--serve-artifacts" in args and "--artifacts-destination=s3://entgan/mlflow" in args
    allowed = next(a for a in server["args"] if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "mlflow.entgan.svc.cluster.local:5000" in allowed and "localhost:5000" in allowed
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"] == "postgresql://mlflow:$(POSTGRES_PASSWORD)@postgres:5432/mlflow"
    assert list(env).index("POSTGRES_PASSWORD") < list(env).index("MLFLOW_BACKEND_STORE_URI")  # for $(...) expansion
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"


def test_every_image_is_pinned(deployed):
    for doc, spec in _pod_specs(_all(deployed)):
        for c in _containers(spec):
            repo, _, tag = c["image"].rpartition(":")
            assert repo and tag and tag != "latest" and "/" not in tag, c["image"]


def test_mlflow_image_matches_the_pinned_mlflow(deployed):
    lock = (REPO / "requirements.lock").read_text().split()
    mlflow = _get(_all(deployed), "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert f"mlflow=={mlflow['image'].rsplit(':', 1)[1]}" in lock
    assert "mlflow==" + mlflow["image"].rsplit(":", 1)[1] in (REPO / "images" / "mlflow.Dockerfile").read_text()


def test_kubeedge_overlay_keeps_services_off_edges_and_serves_gpus_there(deployed):
    # Prepare
    rendered, _ = deployed
    edge, cloud = rendered["kubeedge"], rendered["cloud"]
    # Assert: cloud services avoid edge nodes
    for doc, spec in _pod_specs([d for d in edge if d["metadata"].get("namespace") == "entgan"]):
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [{"key": EDGE_TAINT_KEY, "operator": "DoesNotExist"}]}]
    # Assert: the device plugin runs on GPU edge nodes despite the KubeEdge taint
    plugin = _get(edge, "DaemonSet", "entgan-nvidia-device-plugin", "kube-system")["spec"]["template"]["spec"]
    assert {"key": EDGE_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in plugin["tolerations"]
    (term,) = plugin["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "entgan.io/gpu", "operator": "In", "values": ["nvidia"]}]
    assert not [d for d in cloud if d["kind"] == "DaemonSet"]


def test_cluster_job_points_at_the_deployed_services(deployed):
    # Prepare
    job = load_job(REPO / "jobs" / "cluster.yaml")
    config = _get(_all(deployed), "ConfigMap", "entgan-config")["data"]
    # Assert
    assert job.mlflow_tracking_uri == config["MLFLOW_TRACKING_URI"]
    assert all(e.data.startswith(f"s3://{config['ENTGAN_BUCKET']}/edges/{e.name}") for e in job.edges)
    assert all(EDGE_LABEL in e.selector and e.gpus >= 1 for e in job.edges)
    assert _get(_all(deployed), "ConfigMap", "entgan-config", "kubeflow")["data"] == config
