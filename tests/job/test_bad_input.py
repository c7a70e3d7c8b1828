"""Bad input: every case gets one clear error naming the bad thing and the fix, and leaves no
partial state behind (no state folder for a bad job file; no model, version or alias in the
task library and a FAILED run for bad edge data).

Real parts: the `entgan` CLI, the pipeline's steps in-process (tests/steps_driver.py), an
embedded MLflow store, Pillow-written images. Bad S3 credentials are covered against a real S3
server in job/test_storage.py; bad bundles in system/test_reliability.py and system/test_security.py.
"""

import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from PIL import Image

from entgan.cli.verbs import main
from entgan.job.data import DataError, load_images
from entgan.job.spec import MAX_ROUNDS, NAME_PATTERN, JobError, JobSpec, parse_job
from entgan.library.registry import RegistryError, TaskLibrary, library_for
from tests.conftest import tiny_job_dict, write_job
from tests.steps_driver import drive

torch.set_num_threads(1)
BASE = {"name": "j", "edges": [{"name": "edge-1", "data": "edges/edge-1"}]}


def _with(path: str, value) -> dict:
    """BASE with one (dotted) field set; `...` deletes it."""
    import copy

    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


# (what, job document or raw YAML text, the field it names, the fix it gives)
BAD_JOBS = [
    ("yaml syntax", "name: [unclosed\n", "not valid YAML", "fix the syntax"),
    ("not a mapping", "- 1\n- 2\n", "must be a YAML mapping", "name: ..., edges: ..."),
    ("missing name", _with("name", ...), "name: required field is missing", "add it"),
    ("unknown field", _with("colour", "red"), "colour: unknown field", "check its spelling"),
    ("unknown nested field", _with("train.lr_rate", 0.1), "train.lr_rate: unknown field", "remove it"),
    ("unsafe job name", _with("name", "../../etc"), "job name '../../etc' is not a safe name", "use 1-40 lowercase"),
    ("unsafe edge name", _with("edges.0.name", "Edge 1"), "edges.0.name: edge name 'Edge 1'", "use 1-40 lowercase"),
    ("unsafe data type", _with("data_types", ["box; rm -rf /"]), "data type 'box; rm -rf /'", "use 1-40 lowercase"),
    ("no edges", _with("edges", []), "edges: List should have at least 1 item", "add entries"),
    ("duplicate edges", _with("edges", BASE["edges"] * 2), "['edge-1'] appear more than once", "must be unique"),
    ("min_edges too high", _with("train.min_edges", 2), "train.min_edges is 2", "lower min_edges or add edges"),
    ("rounds not a number", _with("train.rounds", "four"), "train.rounds: Input should be a valid integer",
     "write a whole number"),
    ("lr out of range", _with("train.lr", 0), "train.lr: Input should be greater than 0", "change the value"),
    ("bad trigger window", _with("trigger.window", ["25:00", "06:00"]), "'25:00' is not a time of day", "write HH:MM"),
    ("unknown aggregation", _with("train.aggregation", "krum"), "train.aggregation: Input should be 'fedavg'",
     "'trimmed_mean'"),
    ("trim_fraction too high", _with("train.trim_fraction", 0.5), "train.trim_fraction", "change the value"),
    ("negative clip_norm", _with("train.clip_norm", -1), "clip_norm is -1.0", "use a positive number"),
    ("password in tracking uri", _with("mlflow_tracking_uri", "http://bob:hunter22@mlflow:5000"),
     "mlflow_tracking_uri holds a user name and password", "MLFLOW_TRACKING_PASSWORD"),
    ("bad node label", _with("edges.0.node_selector", {"gpu type!": "a100"}), "'gpu type!' is not a Kubernetes label key",
     "write e.g. 'entgan.io/gpu'"),
    ("edge label overridden", _with("edges.0.node_selector", {"entgan.io/edge": "other"}),
     "entgan.io/edge is set from the edge's name", "remove it"),
    ("empty data path", _with("edges.0.data", " "), "edges.0.data: data is empty", "give the edge's image folder"),
    ("image with spaces", _with("image", "my image:1"), "image 'my image:1' is not an image reference", "write e.g."),
]


@pytest.mark.parametrize("what, job, names, fix", BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
def test_a_bad_job_file_is_one_clear_error_and_creates_nothing(what, job, names, fix, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "job.yaml"
    if isinstance(job, str):
        path.write_text(job)
    else:
        write_job(path, {**job, "state_dir": str(tmp_path / "state")})
    # Execute
    code = main(["run", str(path)])
    # Assert: exit code 2, the field and the fix on stderr, nothing on disk but the job file
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ")
    assert names in err and fix in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


def test_a_missing_job_file_says_to_pass_one(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "job file not found; pass the path of a YAML job file" in capsys.readouterr().err


# ---------------------------------------------------------------- edge data


def _png_header_only(path, width, height):
    """A tiny PNG whose header claims width x height pixels (its pixel data is a few bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))


def _truncated(path):
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])


# (what, how to break edge-1's folder, what the error must say: the thing, the fix)
BAD_DATA = [
    ("missing edge folder", lambda edge: shutil.rmtree(edge), "does not exist", "fix the job's edge data path"),
    ("empty edge", lambda edge: [shutil.rmtree(p) for p in edge.iterdir()], "holds no images",
     "add them as <folder>/<type>/*.png"),
    ("too few images", lambda edge: [f.unlink() for t in edge.iterdir() for f in sorted(t.iterdir())[3:]],
     "fewer than train.min_images_per_type=8", "add images at an edge"),
    ("corrupt image", lambda edge: (edge / "box" / "junk.png").write_bytes(b"\x00not an image"),
     "junk.png: cannot read image", "remove or replace the file"),
    ("truncated image", lambda edge: _truncated(edge / "box" / "cut.png"), "cut.png: cannot read image",
     "remove or replace the file"),
    ("zero-byte image", lambda edge: (edge / "box" / "empty.png").write_bytes(b""), "empty.png: cannot read image",
     "remove or replace the file"),
    ("decompression bomb", lambda edge: _png_header_only(edge / "box" / "bomb.png", 60000, 60000),
     "bomb.png: image is too large to decode safely", "downscale it"),
    ("unsafe type folder", lambda edge: (edge / "box").rename(edge / "Box Stuff"),
     "type folder name 'Box Stuff' is not a safe name", "rename the folder"),
]


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory):
    """One MLflow store for all cases (each case is its own job in it): creating a store is slow."""
    return tmp_path_factory.mktemp("library")


@pytest.mark.parametrize("what, breaks, names, fix", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_edge_data_stops_the_run_clearly_and_registers_nothing(what, breaks, names, fix, demo_edges, tmp_path,
                                                                   shared_state):
    # Prepare: one edge holding box and table, broken one way; a job of its own in the shared store
    shutil.copytree(demo_edges / "edges" / "edge-1", tmp_path / "edges" / "edge-1")
    breaks(tmp_path / "edges" / "edge-1")
    name = "bad-" + what.replace(" ", "-")
    job = parse_job(tiny_job_dict(tmp_path, ["edge-1"], name=name, state_dir=str(shared_state)))
    # Execute
    out = drive(job, tmp_path / "work")
    # Assert: one error that names the thing and the fix
    assert isinstance(out.error, DataError), out.error
    assert names in str(out.error) and fix in str(out.error), str(out.error)
    # Assert: no model, version or alias; the job's run is FAILED; no global state was written
    library = library_for(job)
    assert library.known_types() == [] and library.evaluator() is None
    run = MlflowClient(job.tracking_uri).get_run(library.run_for(out.kfp_run_id))
    assert run.info.status == "FAILED"
    assert not (tmp_path / "work" / "state-0").exists()


def _refused_at_plan(tmp_path, shared_state, name: str, **train) -> str:
    """Run a job over tmp_path's edge-1 and edge-2; check that it failed at plan having trained and
    registered nothing, and return its error message."""
    data = tiny_job_dict(tmp_path, ["edge-1", "edge-2"], name=name, state_dir=str(shared_state))
    data["train"].update(train)
    data["eval"]["cas_steps"] = 5  # if it trained after all: keep that short
    job = parse_job(data)
    out = drive(job, tmp_path / "work")
    assert isinstance(out.error, DataError), out.error
    library = library_for(job)
    assert library.known_types() == [] and library.evaluator() is None
    assert MlflowClient(job.tracking_uri).get_run(library.run_for(out.kfp_run_id)).info.status == "FAILED"
    assert not (tmp_path / "work" / "update-1-edge-1").exists()
    return str(out.error)


def test_an_edge_with_too_few_images_to_train_is_named_with_its_counts(demo_edges, tmp_path, shared_state):
    # Prepare: edge-1 keeps 3 box images (box needs 8); edge-2 can train table; both edges must train
    edges = tmp_path / "edges"
    shutil.copytree(demo_edges / "edges" / "edge-1" / "box", edges / "edge-1" / "box")
    shutil.copytree(demo_edges / "edges" / "edge-2", edges / "edge-2")
    for f in sorted((edges / "edge-1" / "box").iterdir())[3:]:
        f.unlink()
    # Execute
    message = _refused_at_plan(tmp_path, shared_state, "too-few-at-one-edge", min_edges=2)
    # Assert: the error names the idle edge, its counts per type and both thresholds
    assert "edge-1: holds box=3 training images" in message, message
    assert "train.min_images_per_type=8" in message and "train.min_edges=2" in message, message
    assert "no edge holds a type to train" not in message


def test_two_edges_holding_the_same_images_are_refused_at_plan(demo_edges, tmp_path, shared_state):
    # Prepare: edge-2 is a copy of edge-1 (different folders, so the job file itself is fine)
    for edge in ("edge-1", "edge-2"):
        shutil.copytree(demo_edges / "edges" / "edge-1", tmp_path / "edges" / edge)
    # Execute
    message = _refused_at_plan(tmp_path, shared_state, "same-images")
    # Assert: one error naming both edges and the fix
    assert "edges 'edge-1' and 'edge-2' hold the same images" in message, message
    assert "give each edge its own data" in message


def test_other_sizes_and_modes_are_converted_not_refused(tmp_path):
    # Prepare: grayscale, RGBA, 16-bit, palette, and a 40x24 RGB image
    rgb = np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)
    images = {
        "gray.png": Image.fromarray(rgb[..., 0], "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "deep.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "wide.png": Image.fromarray(rgb),
    }
    for name, img in images.items():
        img.save(tmp_path / name)
    # Execute
    x = load_images(sorted(tmp_path.iterdir()), image_size=16)
    # Assert
    assert x.shape == (5, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_unreachable_mlflow_names_the_server_and_the_fix(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    library = TaskLibrary("http://127.0.0.1:9", "j")  # port 9 (discard): nothing listens
    with pytest.raises(RegistryError) as err:
        library.champion("box")
    message = str(err.value)
    assert "MLflow at http://127.0.0.1:9 is unreachable" in message
    assert "start the server or fix mlflow_tracking_uri" in message


# ---------------------------------------------------------------- the job parser, by property

_names = st.from_regex(NAME_PATTERN, fullmatch=True)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(["name", "edges", "data_types", "trigger", "train", "eval", "deploy",
                           "mlflow_tracking_uri", "state_dir", "image", "extra"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(_fields, _json, max_size=3))
def test_any_document_is_a_job_or_a_job_error(changes):
    """Whatever a job file holds, the parser answers with a JobSpec or a JobError that names
    where the problem is: never another exception."""
    try:
        job = parse_job({**BASE, **changes}, "job.yaml")
    except JobError as err:
        lines = str(err).splitlines()
        assert lines[0].startswith("job.yaml:") and all(line.strip() for line in lines)
    else:
        assert JobSpec.model_validate_json(job.model_dump_json()) == job


@settings(max_examples=100, deadline=None)
@given(name=_names, edges=st.lists(_names, min_size=1, max_size=5, unique=True),
       types=st.lists(_names, min_size=1, max_size=4, unique=True), rounds=st.integers(1, MAX_ROUNDS))
def test_every_safe_job_parses_and_round_trips(name, edges, types, rounds):
    job = parse_job({"name": name, "edges": [{"name": e, "data": f"/data/{e}"} for e in edges],
                     "data_types": types, "train": {"rounds": rounds}})
    assert job.edge_names == edges and job.data_types == types
    assert JobSpec.model_validate_json(job.model_dump_json()) == job
