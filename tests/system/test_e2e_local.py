"""The whole pipeline, compiled and run with kfp.local, on a tiny job, three times in a row: the
lifelong story. Then the task library is checked.

Real parts only: the KFP compiler and local runner, an embedded MLflow (SQLite) store.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from entgan.cli.verbs import format_summary, generate, run_local, show_status
from entgan.job.data import materialize_demo
from entgan.job.spec import parse_job
from entgan.library.registry import CHAMPION, library_for
from tests.conftest import tiny_job_dict

pytestmark = pytest.mark.e2e
TYPES = ["box", "clutter", "robot", "table"]


@pytest.fixture(scope="module")
def runs(demo_edges, tmp_path_factory):
    """Run 1 on four types; then `pillar` appears at edge-2 and run 2 trains all five; then a
    run whose trigger asks for more new images than arrived waits."""
    root = tmp_path_factory.mktemp("e2e")
    shutil.copytree(demo_edges / "edges", root / "edges")
    data = tiny_job_dict(root, ["edge-1", "edge-2", "edge-3", "edge-4"])
    job = parse_job(data)
    pairs = sum(1 for edge in (root / "edges").iterdir() for t in edge.iterdir() if t.is_dir())  # (edge, type)
    first = run_local(job)
    first["expected_steps"] = pairs * job.train.rounds * job.train.local_steps
    materialize_demo(root / "edges", {"edge-2": {"pillar": 1.0}}, per_type=24)
    second = run_local(job)
    waiting_job = parse_job({**data, "trigger": {"operator": "ge", "threshold": 1000}})
    third = run_local(waiting_job)
    return job, first, second, third


def _client(job):
    return MlflowClient(tracking_uri=job.tracking_uri, registry_uri=job.tracking_uri)


def test_first_run_registers_and_deploys_every_type(runs):
    job, first, _, _ = runs
    assert sorted(first["types"]) == TYPES
    for t, info in first["types"].items():
        assert info["fid"] > 0 and info["baseline_fid"] > 0
        assert 0 <= info["precision"] <= 1 and 0 <= info["recall"] <= 1 and 0 <= info["cas"] <= 1
        assert info["promoted"] and info["version"] == "1" and info["champion"] == "1"
        assert info["champion_cas"] == info["baseline_cas"]  # no champions yet: no set of their own
        assert Image.open(info["grid"]).mode == "RGB"
    text = format_summary(first)
    assert "FID before" in text and all(t in text for t in TYPES)
    # every edge's training CPU and D+G steps reach the summary and its last line, with the machine
    assert first["train_cpu"]["steps"] == first["expected_steps"] and first["train_cpu"]["cpu_s"] > 0
    line = next(x for x in text.splitlines() if x.startswith("train CPU: "))
    assert f"for {first['expected_steps']} D+G steps = " in line and " ms per step on " in line and "cores" in line
    assert "C2ST [95%]" in text.splitlines()[0] and "KID random" in text.splitlines()[0]  # issue 15's readings


def test_registry_holds_one_model_per_type_with_champion_and_tags(runs):
    job, first, _, _ = runs
    client = _client(job)
    names = sorted(m.name for m in client.search_registered_models())
    assert names == sorted([f"entgan-tiny-{t}" for t in TYPES + ["pillar"]] + ["entgan-tiny-evaluator"])
    for t in TYPES:
        mv = client.get_model_version(f"entgan-tiny-{t}", "1")
        tags = mv.tags
        assert tags["entgan.data_type"] == t and tags["entgan.strategy"] == "entgan" and tags["entgan.rounds"] == "2"
        assert tags["entgan.kfp_run_id"] == first["kfp_run_id"] != ""
        assert int(tags["entgan.train_images"]) > 0
        assert float(tags["entgan.fid"]) == pytest.approx(first["types"][t]["fid"], rel=1e-3)
        assert set(tags["entgan.edges"].split(",")) <= set(job.edge_names)
        assert tags["entgan.gate"] == "promoted" and "first version" in tags["entgan.gate_reason"]
        files = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(mv.run_id, f"tasks/{t}")}
        assert {"model.safetensors", "samples.png"} <= files


def test_second_run_continues_known_types_and_warm_starts_the_new_one(runs):
    job, _, second, _ = runs
    client = _client(job)
    assert sorted(second["types"]) == sorted(TYPES + ["pillar"])
    for t in TYPES:
        info = second["types"][t]
        assert info["version"] == "2" and info["parent_version"] == "1"
        champion = client.get_model_version_by_alias(f"entgan-tiny-{t}", CHAMPION)
        # The alias moved if and only if the gate passed; a rejected candidate leaves v1 deployed.
        assert str(champion.version) == ("2" if info["promoted"] else "1")
        if info["promoted"]:
            assert info["fid"] < info["baseline_fid"]
        # The gate's CAS rule compares with the champions + pillar's candidate (not with pillar's
        # warm start, a copy of its parent): the champion CAS in the reason is `champion_cas`.
        quoted = re.search(r"the champion's ([0-9.]+)", info["reason"].split("CAS", 1)[1])
        assert quoted and float(quoted.group(1)) == pytest.approx(info["champion_cas"], abs=0.006), info["reason"]
    pillar = second["types"]["pillar"]
    assert pillar["version"] == "1" and pillar["parent_version"] is None
    # Warm-started from its nearest known type only when the plan's rule judged it close enough
    # (entgan.steps.plan.warm_start_parent); otherwise trained from scratch, with no parent task.
    parent = client.get_model_version("entgan-tiny-pillar", "1").tags["entgan.parent_task"]
    assert parent == "" or parent.split(" v")[0] in TYPES
    evaluator = client.get_model_version_by_alias("entgan-tiny-evaluator", CHAMPION)
    assert "pillar" in evaluator.tags["entgan.types"]  # the feature network grew a class


def test_a_run_whose_trigger_is_not_met_waits_and_trains_nothing(runs):
    job, _, second, third = runs
    assert third["types"] == {} and "none ge 1000" in third["waiting"]
    client = _client(job)
    for t in TYPES:
        assert len(client.search_model_versions(f"name='entgan-tiny-{t}'")) == 2
    status = show_status(job)
    assert "train=Waiting" in status and "eval=Waiting" in status
    assert "train=Completed  eval=Completed  deploy=Completed" in status


def test_every_state_change_is_recorded_in_order(runs):
    job, first, _, _ = runs
    library = library_for(job)
    history = library.states(first["mlflow_run_id"])
    train = [c.state.value for c in history if c.stage.value == "train"]
    assert train == ["Waiting", "Ready", "Starting", "Running", "Completed"]
    deploy = [c.state.value for c in history if c.stage.value == "deploy"]
    assert deploy == ["Waiting", "Ready", "Starting", "Running", "Completed"]
    assert [c.at for c in history] == sorted(c.at for c in history)


def test_generate_writes_images_from_the_champions(runs, tmp_path):
    job, *_ = runs
    written = generate(job, ["box", "pillar"], 5, tmp_path / "out", seed=1)
    assert {t: len(f) for t, f in written.items()} == {"box": 5, "pillar": 5}
    with Image.open(written["pillar"][0]) as img:
        assert img.size == (16, 16) and img.mode == "RGB"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["box", "pillar"]


def test_what_users_see_of_a_run(runs):
    """MLflow: FID per round as a curve, descriptions, lineage; KFP: metrics and the HTML report;
    the figures `make run` writes."""
    job, first, second, _ = runs
    client = _client(job)
    for t in TYPES:
        history = sorted((m.step, m.value) for m in client.get_metric_history(first["mlflow_run_id"], f"{t}.fid"))
        assert [s for s, _ in history] == list(range(job.train.rounds + 1))
        assert history[0][1] == pytest.approx(first["types"][t]["baseline_fid"], rel=1e-6)
        assert history[-1][1] == pytest.approx(first["types"][t]["fid"], rel=1e-6)
        mv = client.get_model_version(f"entgan-tiny-{t}", "2")
        assert f"**{t}**" in mv.description and "Gate:" in mv.description and second["kfp_run_id"] in mv.description
        assert mv.tags["entgan.parent_model"] == f"entgan-tiny-{t}/1"  # lineage: the version it started from
        model = client.get_registered_model(f"entgan-tiny-{t}")
        assert "held by edges" in model.description and "champion" in model.description
    pillar = client.get_model_version("entgan-tiny-pillar", "1").tags["entgan.parent_model"]
    assert pillar == "" or (pillar.startswith("entgan-tiny-") and pillar.endswith("/1"))  # scratch: no parent
    run = client.get_run(second["mlflow_run_id"])
    assert "| pillar |" in run.data.tags["mlflow.note.content"]
    # The KFP side: the deploy task's HTML report (grids inline) and the edges' metrics artifacts.
    pipeline_root = Path(job.state_dir) / "kfp"
    reports = sorted(pipeline_root.glob("*/deploy/run_report"))
    assert len(reports) == 2  # the waiting run deploys nothing
    page = reports[-1].read_text()
    assert page.count("data:image/png;base64,") == 5 and "Round by round" in page
    outputs = [json.loads(p.read_text()) for p in pipeline_root.glob("*/*/train-edge*/executor_output.json")]
    edge_metrics = [o["artifacts"]["metrics"]["artifacts"][0]["metadata"] for o in outputs]
    assert len(edge_metrics) == 2 * job.train.rounds * len(job.edges)
    assert all(any(k.endswith(".d_loss") for k in m) and any(k.endswith(".images") for k in m) for m in edge_metrics)
    # `make run`'s figures: real vs generated per type, FID per round.
    for path in first["figures"].values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300
