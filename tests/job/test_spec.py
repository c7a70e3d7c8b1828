from pathlib import Path

import pytest

from entgan.job.spec import EDGE_LABEL, JobError, JobSpec, load_job, parse_job

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "j", "edges": [{"name": "edge-1", "data": "/data/edge-1"}]}


def with_(base: dict, **changes) -> dict:
    return {**base, **changes}


def test_demo_job_file_is_valid():
    job = load_job(REPO / "jobs" / "demo.yaml")
    assert job.name == "demo"
    assert job.edge_names == ["edge-1", "edge-2", "edge-3", "edge-4"]
    assert job.train.strategy == "entgan"
    assert job.data_types == "discover"


def test_defaults_and_selector():
    job = parse_job(with_(MINIMAL, edges=[{"name": "e1", "data": "x", "node_selector": {"gpu": "a100"}}]))
    assert job.edges[0].selector == {EDGE_LABEL: "e1", "gpu": "a100"}
    assert job.train.cloud_steps == max(1, job.train.local_steps // 50)
    assert job.tracking_uri.startswith("sqlite:///") and job.tracking_uri.endswith("mlflow.db")


@pytest.mark.parametrize("train, expected", [({"local_steps": 500}, 10), ({"local_steps": 10}, 1),
                                             ({"local_steps": 500, "cloud_steps": 7}, 7)])
def test_cloud_steps_is_one_name_with_its_default_filled_in(train, expected):
    job = parse_job(with_(MINIMAL, train=train))
    assert job.train.cloud_steps == expected
    assert not hasattr(job.train, "global_steps")
    assert JobSpec.model_validate_json(job.model_dump_json()).train.cloud_steps == expected


@pytest.mark.parametrize(
    "data, expected",
    [
        (with_(MINIMAL, colour="red"), "colour: unknown field"),
        ({"edges": MINIMAL["edges"]}, "name: required field is missing"),
        (with_(MINIMAL, name="Bad Name"), "job name 'Bad Name' is not a safe name"),
        (with_(MINIMAL, edges=[]), "edges: List should have at least 1 item"),
        (with_(MINIMAL, edges=[{"name": "e/1", "data": "x"}]), "edges.0.name: edge name 'e/1'"),
        (with_(MINIMAL, edges=[{"name": "e1"}]), "edges.0.data: required field is missing"),
        (with_(MINIMAL, edges=[{"name": "e", "data": "x"}, {"name": "e", "data": "y"}]), "['e'] appear more than once"),
        (with_(MINIMAL, train={"strategy": "gossip"}), "train.strategy: Input should be 'entgan' or 'fedgan'"),
        (with_(MINIMAL, train={"rounds": 0}), "train.rounds: Input should be greater than or equal to 1"),
        (with_(MINIMAL, train={"image_size": 30}), "train.image_size"),
        (with_(MINIMAL, train={"min_edges": 3}), "train.min_edges is 3 but the job has only 1 edges"),
        (with_(MINIMAL, data_types=["box", "box"]), "listed twice"),
        (with_(MINIMAL, data_types=["../etc"]), "data type '../etc' is not a safe name"),
        (with_(MINIMAL, eval={"holdout_fraction": 1.5}), "eval.holdout_fraction"),
        ([1, 2], "must be a YAML mapping"),
    ],
)
def test_bad_jobs_name_the_field(data, expected):
    with pytest.raises(JobError) as err:
        parse_job(data, "job.yaml")
    assert expected in str(err.value)


def test_unreadable_job_files(tmp_path):
    with pytest.raises(JobError, match="job file not found"):
        load_job(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(JobError, match="not valid YAML"):
        load_job(broken)


def test_local_paths_are_resolved(tmp_path):
    job = parse_job(with_(MINIMAL, edges=[{"name": "e1", "data": "rel/e1"}, {"name": "e2", "data": "s3://b/e2"}]))
    local = job.with_local_paths(tmp_path)
    assert local.edges[0].data == str(tmp_path / "rel" / "e1")
    assert local.edges[1].data == "s3://b/e2"
    assert Path(local.state_dir).is_absolute()
