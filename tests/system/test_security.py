"""Nothing leaked, nothing executed: no pickle from anything that crossed a node, credentials in
no compiled YAML, log, MLflow record or error message, containers as non-root.

Real parts: safetensors, the KFP compiler and kfp.local runner, an embedded MLflow store. The
planted "secrets" are set in the environment, where credentials come from.
"""

import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from entgan.cli.verbs import run_local
from entgan.gan.bundle import BundleError, BundleHeader, load_bundle, pack, save_bundle
from entgan.job.lifecycle import Stage, edge_failures
from entgan.job.redact import SECRET_ENVS, redact
from entgan.job.spec import parse_job
from entgan.library.registry import library_for
from entgan.steps.records import run_edge_task
from pipelines.entgan_pipeline import compile_job
from tests.conftest import tiny_job_dict

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "planted-s3-secret-7Hq2",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-K9",
    "KFP_TOKEN": "planted-kfp-token-x31",
}


# ---------------------------------------------------------------- nothing executed


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    # Prepare: a pickle that would create a file when unpickled, under a bundle's name
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "update.safetensors"
    evil.write_bytes(pickle.dumps({"box/G/w": Payload()}))
    torch_file = tmp_path / "torch.safetensors"
    torch.save({"box/G/w": torch.zeros(2)}, torch_file)  # torch's format is a pickle too
    # Execute / Assert
    for path in (evil, torch_file):
        with pytest.raises(BundleError, match="not a readable safetensors bundle"):
            load_bundle(path)
    assert not marker.exists()


def test_no_code_path_can_unpickle():
    """Every torch.load says weights_only=True; no pickle, cloudpickle or allow_pickle=True."""
    sources = [p for d in ("entgan", "components", "pipelines") for p in (REPO / d).rglob("*.py")]
    offenders = []
    for path in sources:
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{path.name}: {call}")
        for bad in ("pickle.load", "cloudpickle", "allow_pickle=True", "mlflow.pytorch.load_model", "dill."):
            if bad in text:
                offenders.append(f"{path.name}: {bad}")
    assert offenders == []


_VALID = None


def _valid_bundle_bytes(tmp: Path) -> bytes:
    global _VALID
    if _VALID is None:
        path = tmp / "valid.safetensors"
        save_bundle(path, pack({"box/G": {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}}),
                    BundleHeader(kind="edge-update", round=1, edge="edge-1", num_examples={"box": 5}))
        _VALID = path.read_bytes()
    return _VALID


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_bundle_reader_refuses_or_verifies_whatever_it_is_given(tmp_path, data):
    """Random bytes, bit flips, truncations and forged headers: load_bundle answers with a
    verified Bundle or a BundleError naming the file, never another exception."""
    valid = _valid_bundle_bytes(tmp_path)
    kind = data.draw(st.sampled_from(["random", "flip", "truncate", "header"]))
    if kind == "random":
        raw = data.draw(st.binary(max_size=300))
    elif kind == "flip":
        raw = bytearray(valid)
        for i in data.draw(st.lists(st.integers(0, len(valid) - 1), min_size=1, max_size=4)):
            raw[i] ^= data.draw(st.integers(1, 255))
        raw = bytes(raw)
    elif kind == "truncate":
        raw = valid[: data.draw(st.integers(0, len(valid) - 1))]
    else:
        header = data.draw(st.recursive(st.none() | st.integers() | st.text(max_size=6) | st.floats(),
                                        lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                            st.sampled_from(["kind", "round", "edge", "num_examples", "extra",
                                                             "sha256", "format", "x"]), c, max_size=6),
                                        max_leaves=10))
        forged = tmp_path / "forged.safetensors"
        save_file({"box/G/w": torch.zeros(2)}, str(forged), metadata={"entgan": __import__("json").dumps(header)})
        raw = forged.read_bytes()
    path = tmp_path / "probe.safetensors"
    path.write_bytes(raw)
    try:
        bundle = load_bundle(path)
    except BundleError as err:
        assert str(path) in str(err)
    else:  # only an intact bundle gets through
        assert bundle.header.kind == "edge-update" and bundle.tensors["box/G/w"].shape == (2, 3)


# ---------------------------------------------------------------- nothing leaked


def test_errors_recorded_for_an_edge_are_redacted(tiny_job, tmp_path, monkeypatch):
    # Prepare: a library error that quotes a credential
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    def leaky():
        raise RuntimeError(f"PUT failed: X-Amz-Secret={SECRETS['AWS_SECRET_ACCESS_KEY']} token {SECRETS['KFP_TOKEN']}")

    # Execute
    run_edge_task(tiny_job, "no-run", Stage.TRAIN, "edge-1", tmp_path / "f", leaky, round_=1)
    # Assert
    error = load_bundle(tmp_path / "f").header.extra["error"]
    assert "X-Amz-Secret=*** token ***" in error and not any(s in error for s in SECRETS.values())
    assert set(SECRETS) <= set(SECRET_ENVS) and redact("abc") == "abc"


def test_the_compiled_pipeline_holds_no_credential_and_runs_as_non_root(tiny_job, tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    text = compile_job(tiny_job, tmp_path / "p.yaml").read_text()
    assert not any(s in text for s in SECRETS.values())
    spec, platform = list(yaml.safe_load_all(text))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {tiny_job.image}  # every task runs in the project image, whose USER is 10001
    dockerfile = (REPO / "images" / "Dockerfile").read_text()
    assert dockerfile.rstrip().splitlines()[-3:][0] == "USER 10001:10001"
    # Credentials reach edge tasks only as references to the Secret, never as values
    secret_refs = re.findall(r"secretName: ([^\n]*)", yaml.safe_dump(platform))
    assert secret_refs and set(secret_refs) == {"entgan-s3"}


@pytest.mark.e2e
def test_a_local_run_with_a_failing_edge_leaks_no_planted_secret(demo_edges, tmp_path, monkeypatch, capfd):
    """One real kfp.local run: edge-3 holds a corrupt image and is left out (the run completes
    and says so), while planted credentials never reach logs, MLflow or any file written."""
    # Prepare
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    shutil.copytree(demo_edges / "edges", tmp_path / "edges")
    (tmp_path / "edges" / "edge-3" / "robot" / "broken.png").write_bytes(b"not a png")
    data = tiny_job_dict(tmp_path, ["edge-1", "edge-2", "edge-3", "edge-4"])
    data["train"].update(rounds=1, min_edges=3)
    data["eval"]["cas_steps"] = 5
    job = parse_job(data)
    # Execute
    summary = run_local(job)
    out = capfd.readouterr()
    # Assert: the run completed without edge-3 and the stage states say why
    library = library_for(job.with_local_paths(Path.cwd()))
    history = library.states(summary["mlflow_run_id"])
    failed = edge_failures(history, Stage.TRAIN)
    assert [c.edge for c in failed] == ["edge-3"] and "broken.png: cannot read image" in failed[0].error
    assert summary["types"] and all(info["version"] == "1" for info in summary["types"].values())
    # Assert: no planted secret in the logs, in MLflow, or in any file of the run
    assert not any(s in out.out + out.err for s in SECRETS.values())
    client = MlflowClient(job.tracking_uri)
    records = []
    for run in client.search_runs([client.get_experiment_by_name("entgan-tiny").experiment_id]):
        records += [*run.data.params.items(), *run.data.tags.items()]
    for model in client.search_registered_models():
        records += [model.description or "", *model.tags.items()]
        for version in client.search_model_versions(f"name='{model.name}'"):
            records += [version.description or "", *version.tags.items()]
    assert records and not any(s in str(records) for s in SECRETS.values())
    for path in Path(job.state_dir).rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(s.encode() in content for s in SECRETS.values()), path
    assert os.environ["KFP_TOKEN"] == SECRETS["KFP_TOKEN"]  # they were really there


def test_a_job_with_a_password_in_a_uri_is_refused_without_echoing_it(tmp_path, capsys, monkeypatch):
    # Prepare: the password is written in the job file (and set where it belongs, too)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRETS["MLFLOW_TRACKING_PASSWORD"])
    job = tiny_job_dict(tmp_path, ["edge-1"], mlflow_tracking_uri=f"https://ops:{SECRETS['MLFLOW_TRACKING_PASSWORD']}@mlflow")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    # Execute
    from entgan.cli.verbs import main

    code = main(["compile", str(path), "-o", str(tmp_path / "p.yaml")])
    # Assert: refused, nothing compiled, the password not repeated
    err = capsys.readouterr().err
    assert code == 2 and "mlflow_tracking_uri holds a user name and password" in err
    assert SECRETS["MLFLOW_TRACKING_PASSWORD"] not in err and not (tmp_path / "p.yaml").exists()
