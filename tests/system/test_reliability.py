"""Crashed and malicious edges, retries, and a task library that loses nothing.

Real parts: the pipeline's steps in-process (tests/steps_driver.py), an embedded MLflow store,
the KFP compiler. A kfp.local run with a failing edge is in system/test_security.py.
"""

import json
import shutil

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from entgan.cli.verbs import format_summary
from entgan.gan.aggregate import AggregationError
from entgan.gan.bundle import BundleHeader, load_bundle, pack, save_bundle
from entgan.job.lifecycle import Stage, State, current_states, edge_failures
from entgan.job.spec import parse_job
from entgan.library.registry import RegistryError, library_for
from entgan.steps import records
from entgan.steps.common import TaskContext
from entgan.steps.deploy import deploy
from entgan.steps.plan import Plan
from entgan.steps.records import EDGE_FAILURE, record, run_edge_task, split_failures
from entgan.steps.train import AggregateFiles, aggregate
from pipelines.entgan_pipeline import compile_job
from tests.conftest import tiny_job_dict
from tests.steps_driver import drive

torch.set_num_threads(1)
EDGES = ["edge-1", "edge-2", "edge-3", "edge-4"]


def _job(root, **train):
    data = tiny_job_dict(root, EDGES)
    data["train"].update(train)
    data["eval"]["cas_steps"] = 5
    return parse_job(data)


@pytest.fixture(scope="module")
def crashed(demo_edges, tmp_path_factory):
    """edge-3 holds a corrupt image (its inspection fails); edge-2's disk is gone in round 2."""
    root = tmp_path_factory.mktemp("crashed")
    shutil.copytree(demo_edges / "edges", root / "edges")
    (root / "edges" / "edge-3" / "robot" / "broken.png").write_bytes(b"not a png")
    job = _job(root, min_edges=2)

    def disk_lost(round_):
        if round_ == 2:
            shutil.rmtree(root / "edges" / "edge-2")

    return drive(job, root / "work", before_round=disk_lost)


def test_a_crashed_edge_is_left_out_and_the_round_goes_on(crashed):
    # Assert: the run completed and registered what the remaining edges trained
    assert crashed.error is None
    library = library_for(crashed.job)
    history = library.states(library.run_for(crashed.kfp_run_id))
    assert all(s is State.COMPLETED for s in current_states(history).values())
    assert sorted(crashed.summary["types"]) and all(i["version"] == "1" for i in crashed.summary["types"].values())
    # Assert: the stage states say which edge failed, when and why
    failures = {(c.stage, c.edge): c for c in edge_failures(history)}
    inspect = failures[(Stage.TRAIN, "edge-3")]
    assert inspect.detail == "inspection: edge left out" and "broken.png: cannot read image" in inspect.error
    lost = [c for c in edge_failures(history, Stage.TRAIN) if c.edge == "edge-2"][0]
    assert lost.detail == "round 2: edge left out" and "edge-2 does not exist" in lost.error
    assert (Stage.EVAL, "edge-2") in failures
    # Assert: round 2's metrics count the two edges left out
    client = MlflowClient(crashed.job.tracking_uri)
    metric = client.get_metric_history(library.run_for(crashed.kfp_run_id), "failed_edges")
    assert {int(m.step): m.value for m in metric} == {1: 0.0, 2: 1.0}
    # Assert: edge-3 was planned out (it trains nothing), edge-2 only missed round 2
    plan = Plan.load(crashed.work / "plan")
    assert "edge-3" in plan.failed_edges and plan.assignments.get("edge-3") is None
    assert load_bundle(crashed.work / "update-2-edge-2").header.kind == EDGE_FAILURE


def test_the_summary_lists_the_edges_left_out_and_why(crashed):
    # Assert: the run's summary names each edge left out, where and why
    left_out = crashed.summary["left_out"]
    assert sorted(left_out) == ["edge-2", "edge-3"]
    assert left_out["edge-3"].startswith("inspection: ") and "broken.png: cannot read image" in left_out["edge-3"]
    assert left_out["edge-2"].startswith("round 2: ") and "edge-2 does not exist" in left_out["edge-2"]
    # Assert: so does the table `entgan run` ends with
    last = format_summary(crashed.summary).splitlines()[-1]
    assert last.startswith("edges left out: edge-2 (round 2: ") and ", edge-3 (inspection: " in last, last


def test_below_min_edges_the_round_fails_cleanly_and_nothing_is_registered(demo_edges, tmp_path):
    # Prepare: every edge is inspected; then edge-4's disk is gone and min_edges is 4
    shutil.copytree(demo_edges / "edges", tmp_path / "edges")
    job = _job(tmp_path, min_edges=4, rounds=1)
    # Execute
    out = drive(job, tmp_path / "work", before_round=lambda r: shutil.rmtree(tmp_path / "edges" / "edge-4"))
    # Assert: one clear error naming the edge, the setting and the fix
    assert isinstance(out.error, AggregationError)
    message = str(out.error)
    assert "fewer than train.min_edges=4" in message and "edge-4: DataError" in message
    assert "lower train.min_edges" in message and "nothing is aggregated or registered" in message
    # Assert: no model, no version, no alias; the run is FAILED with train Failed
    library = library_for(job)
    assert library.known_types() == [] and library.evaluator() is None
    run_id = library.run_for(out.kfp_run_id)
    assert MlflowClient(job.tracking_uri).get_run(run_id).info.status == "FAILED"
    assert current_states(library.states(run_id))[Stage.TRAIN] is State.FAILED
    assert not (tmp_path / "work" / "state-1").exists()  # no new global state was written


def test_a_retried_deploy_creates_no_duplicate_version(crashed):
    # Prepare
    library = library_for(crashed.job)
    before = {t: [v.version for v in library.versions(t)] for t in crashed.summary["types"]}
    evaluators = len(library.versions("evaluator"))
    # Execute: the deploy task runs again for the same run (a KFP retry)
    again = deploy(*crashed.deploy_args)
    # Assert
    assert {t: [v.version for v in library.versions(t)] for t in before} == before
    assert len(library.versions("evaluator")) == evaluators
    for t, info in again["types"].items():
        assert info["version"] == "1" and library.champion(t).version == crashed.summary["types"][t]["champion"]


def test_the_champion_moves_only_to_a_fully_written_version(crashed):
    # Prepare: a version whose files were never written (a deploy killed before log_files)
    library = library_for(crashed.job)
    t = sorted(crashed.summary["types"])[0]
    champion = library.champion(t).version
    run_id = library.run_for(crashed.kfp_run_id)
    empty = library.register(t, run_id, "tasks/never-written", {"entgan.data_type": t})
    # Execute / Assert: the alias is not moved to it
    with pytest.raises(RegistryError, match="weights are missing or damaged.*champion not moved"):
        library.set_champion(t, empty.version)
    assert library.champion(t).version == champion


def test_a_stale_candidate_never_replaces_a_newer_champion(crashed):
    # Prepare: the champion is v1; a candidate gated against "no champion" arrives late
    library = library_for(crashed.job)
    t = sorted(crashed.summary["types"])[-1]
    champion = library.champion(t).version
    run_id = library.run_for(crashed.kfp_run_id)
    late = library.register(t, run_id, f"tasks/{t}-late", {"entgan.data_type": t})
    # Execute
    moved = library.promote(t, late.version, replaces=None)
    # Assert: nothing moved; promoting the champion itself again is a no-op that succeeds
    assert moved is False and library.champion(t).version == champion
    assert library.promote(t, champion, replaces="99") is True


def test_bad_bundles_are_refused_and_their_edges_left_out(crashed, tmp_path):
    # Prepare: two good round-1 updates, and four bad ones named after other edges
    work = crashed.work
    good = [str(work / "update-1-edge-1"), str(work / "update-1-edge-4")]
    state = load_bundle(work / "state-0").groups()
    honest = load_bundle(good[0])
    groups = honest.groups()

    def send(name, groups, round_=1):
        path = tmp_path / name
        header = BundleHeader(kind="edge-update", round=round_, edge=name, num_examples=honest.header.num_examples)
        save_bundle(path, pack(groups), header)
        return str(path)

    nan = {g: {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in s.items()}
           for g, s in groups.items()}
    wrong = {g: {k: torch.zeros(3) if v.is_floating_point() else v for k, v in s.items()} for g, s in groups.items()}
    tampered = send("edge-tampered", groups)
    raw = bytearray(open(tampered, "rb").read())
    raw[-8:] = b"\x00\x00\x80\x7f\x00\x00\x80\x7f"
    open(tampered, "wb").write(bytes(raw))
    bad = [send("edge-nan", nan), send("edge-wrong", wrong), send("edge-stale", groups, round_=7), tampered]
    # Execute
    metrics = aggregate(TaskContext(crashed.job, round=1),
                        AggregateFiles(work / "plan", work / "state-0", good + bad, tmp_path / "out"))
    # Assert: aggregated from the two good edges only; every refusal named
    assert metrics["failed_edges"] == 4.0
    new_state = load_bundle(tmp_path / "out").groups()
    assert new_state.keys() == state.keys()
    assert all(torch.isfinite(t).all() for s in new_state.values() for t in s.values() if t.is_floating_point())
    _, _, reasons = split_failures(bad)  # the two that fail verification; the others fail checks later
    assert sorted(reasons) == ["edge-nan", "edge-tampered"]
    assert "NaN or infinite" in reasons["edge-nan"] and "checksum mismatch" in reasons["edge-tampered"]


def test_transient_errors_are_retried_with_backoff_then_recorded(tiny_job, tmp_path, monkeypatch):
    # Prepare: a task that loses its connection twice, then works; another that always does
    waits = []
    monkeypatch.setattr(records.time, "sleep", waits.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset by peer")
        return "done"

    # Execute / Assert: two retries with doubling delays, then success; nothing written
    assert run_edge_task(tiny_job, "no-run", Stage.TRAIN, "edge-1", tmp_path / "a", flaky) == "done"
    assert waits == [2.0, 4.0] and not (tmp_path / "a").exists()

    # Execute / Assert: a permanent error is not retried and becomes a failure record
    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("bad weights")

    assert run_edge_task(tiny_job, "no-run", Stage.TRAIN, "edge-1", tmp_path / "b", broken, round_=3) is None
    record = load_bundle(tmp_path / "b")
    assert len(calls) == 1 and record.header.kind == EDGE_FAILURE and record.header.round == 3
    assert record.header.edge == "edge-1" and record.header.extra["error"] == "ValueError: bad weights"


def test_edge_tasks_and_deploy_are_retried_with_backoff_in_the_compiled_pipeline(tiny_job, tmp_path):
    spec = next(yaml.safe_load_all(compile_job(tiny_job, tmp_path / "p.yaml").read_text()))
    tasks = {}

    def walk(component):
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            tasks[name] = task
    walk(spec["root"])
    for component in spec["components"].values():
        walk(component)
    retried = {n: t["retryPolicy"] for n, t in tasks.items() if "retryPolicy" in t}
    # aggregate too (issue 24): a cloud pod killed by OOM or eviction would waste the round. A round
    # with too few edges fails on every try: bounded, 30 s + 60 s, before the run fails.
    for name in ("inspect-edge", "train-edge", "train-edge-2", "eval-edge", "aggregate", "deploy"):
        assert retried[name]["maxRetryCount"] == 2, name
        assert retried[name]["backoffDuration"] == "30s" and retried[name]["backoffFactor"] == 2
        assert retried[name]["backoffMaxDuration"] == "60s", name


def test_a_retried_step_records_no_state_twice(crashed):
    library = library_for(crashed.job)
    run_id = library.run_for(crashed.kfp_run_id)
    before = len(library.states(run_id))
    record(library, run_id, Stage.EVAL, State.READY, State.STARTING, State.RUNNING)
    assert len(library.states(run_id)) == before


def test_cas_pools_the_counts_of_every_classifier_seed(demo_edges, tmp_path):
    # One CAS classifier's per-type score moves by up to ±0.15 with its seed (README, benchmark note
    # 6), so the eval kit holds eval.cas_seeds classifiers per set of generators and an edge sends
    # their counts summed: CAS is the mean over the seeds.
    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2"])
    data["train"].update(rounds=1)
    data["eval"].update(cas_steps=5, cas_seeds=2)
    data["state_dir"] = str(tmp_path / "state")
    run = drive(parse_job(data), tmp_path / "work")
    assert run.error is None
    groups = load_bundle(tmp_path / "work" / "kit").groups()
    assert sorted(g for g in groups if g.startswith("cas/")) == [
        "cas/baseline/0", "cas/baseline/1", "cas/candidate/0", "cas/candidate/1"]
    first, second = groups["cas/candidate/0"], groups["cas/candidate/1"]
    assert any(not torch.equal(first[k], second[k]) for k in first)  # two seeds, two classifiers
    header = load_bundle(tmp_path / "work" / "stats-edge-1").header
    for t, held_out in header.num_examples.items():
        for name in ("candidate", "baseline"):
            correct, total = header.extra["cas"][t][name]
            assert total == 2 * held_out and 0 <= correct <= total, (t, name)
    report = json.loads((tmp_path / "work" / "report").read_text())
    assert all(0 <= r["cas"] <= 1 for r in report.values())
