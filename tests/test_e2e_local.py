"""The whole pipeline, compiled and run with kfp.local, on a tiny job; then the task library.

Real parts only: the KFP compiler and local runner, an embedded MLflow (SQLite) store.
"""

import json

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from entgan.cli import format_summary, run_local
from entgan.registry import CHAMPION

pytestmark = pytest.mark.e2e
TYPES = ["box", "clutter", "robot", "table"]


@pytest.fixture(scope="module")
def first_run(demo_edges, tmp_path_factory):
    from tests.conftest import tiny_job_dict
    from entgan.config import parse_job

    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2", "edge-3", "edge-4"])
    data["state_dir"] = str(tmp_path_factory.mktemp("e2e") / "state")
    job = parse_job(data)
    return job, run_local(job)


def test_summary_covers_every_type(first_run):
    job, summary = first_run
    assert sorted(summary["types"]) == TYPES
    for t, info in summary["types"].items():
        assert info["fid"] > 0 and info["baseline_fid"] > 0
        assert info["promoted"] and info["version"] == "1" and info["champion"] == "1"
        grid = Image.open(info["grid"])
        assert grid.size[0] > 16 and grid.mode == "RGB"
    text = format_summary(summary)
    assert "FID before" in text and all(t in text for t in TYPES)


def test_registry_holds_one_model_per_type_with_champion(first_run):
    job, summary = first_run
    client = MlflowClient(tracking_uri=job.tracking_uri, registry_uri=job.tracking_uri)
    names = sorted(m.name for m in client.search_registered_models())
    assert names == sorted([f"entgan-tiny-{t}" for t in TYPES] + ["entgan-tiny-evaluator"])
    for t in TYPES:
        mv = client.get_model_version_by_alias(f"entgan-tiny-{t}", CHAMPION)
        assert str(mv.version) == "1"
        tags = mv.tags
        assert tags["entgan.data_type"] == t
        assert tags["entgan.strategy"] == "entgan"
        assert tags["entgan.rounds"] == "2"
        assert tags["entgan.kfp_run_id"] == summary["kfp_run_id"] != ""
        assert int(tags["entgan.train_images"]) > 0
        assert float(tags["entgan.fid"]) == pytest.approx(summary["types"][t]["fid"], rel=1e-3)
        assert set(tags["entgan.edges"].split(",")) <= set(job.edge_names)
        files = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(mv.run_id, f"tasks/{t}")}
        assert {"model.safetensors", "samples.png"} <= files


def test_second_run_starts_from_champions_and_gate_decides(first_run):
    job, first = first_run
    second = run_local(job)
    client = MlflowClient(tracking_uri=job.tracking_uri, registry_uri=job.tracking_uri)
    for t in TYPES:
        info = second["types"][t]
        assert info["version"] == "2"
        mv = client.get_model_version(f"entgan-tiny-{t}", "2")
        assert mv.tags["entgan.parent_version"] == "1"
        champion = client.get_model_version_by_alias(f"entgan-tiny-{t}", CHAMPION)
        # The alias moved if and only if the candidate beat the champion (both scored now).
        assert info["promoted"] == (info["fid"] < info["baseline_fid"])
        assert str(champion.version) == ("2" if info["promoted"] else "1")
