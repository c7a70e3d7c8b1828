"""Bad input through the `entgan` CLI that needs no pipeline run (issue 19): each case is one
line on stderr, exit status 2, naming the bad thing and the fix; a wrong result (a credential
compiled into YAML, a duplicate key that silently wins, a folder named '~') is refused.

Real parts: the `entgan` CLI entry point, the job parser, argparse, an embedded MLflow store
where a case needs one, and a closed TCP port (127.0.0.1:9) for an unreachable server.
Imports of new modules sit inside the tests so that this file also runs against older code
(to see every case fail before the fix).
"""

import time
from pathlib import Path

import pytest
import yaml

from entgan.cli.verbs import main

GOOD_EDGE = "edges/edge-1"


def _job(tmp_path: Path, **fields) -> dict:
    (tmp_path / GOOD_EDGE / "box").mkdir(parents=True, exist_ok=True)
    job = {"name": "j", "edges": [{"name": "edge-1", "data": str(tmp_path / GOOD_EDGE)}],
           "data_types": ["box", "table"], "state_dir": str(tmp_path / "state")}
    job.update(fields)
    return job


def _write(tmp_path: Path, job: dict | str | bytes) -> Path:
    path = tmp_path / "job.yaml"
    if isinstance(job, bytes):
        path.write_bytes(job)
    elif isinstance(job, str):
        path.write_text(job)
    else:
        path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _two_edges(tmp_path: Path, second: str) -> dict:
    job = _job(tmp_path)
    job["edges"].append({"name": "edge-2", "data": second})
    return job


def _symlinked_twin(tmp_path: Path) -> dict:
    (tmp_path / "twin").symlink_to(tmp_path / GOOD_EDGE)
    return _two_edges(tmp_path, str(tmp_path / "twin"))


def _data_is_file(tmp_path: Path) -> dict:
    (tmp_path / "images.zip").write_bytes(b"PK")
    return _job(tmp_path, edges=[{"name": "edge-1", "data": str(tmp_path / "images.zip")}])


def _data_loops(tmp_path: Path) -> dict:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return _job(tmp_path, edges=[{"name": "edge-1", "data": str(tmp_path / "loop")}])


def _shared_type_folder(tmp_path: Path) -> dict:
    (tmp_path / "edges" / "edge-2").mkdir(parents=True)
    (tmp_path / "edges" / "edge-2" / "box").symlink_to(tmp_path / GOOD_EDGE / "box")
    return _two_edges(tmp_path, str(tmp_path / "edges" / "edge-2"))


def _state_under_file(tmp_path: Path) -> dict:
    (tmp_path / "blocker").write_text("a file")
    return _job(tmp_path, state_dir=str(tmp_path / "blocker" / "state"))


DUP_TOP = "name: j\nedges:\n- {name: edge-1, data: edges/edge-1}\ntrain: {rounds: 1}\ntrain: {rounds: 200}\n"
DUP_NESTED = "name: j\nedges:\n- {name: edge-1, data: edges/edge-1}\ntrain:\n  rounds: 1\n  rounds: 200\n"
DUP_IN_EDGE = "name: j\nedges:\n- name: edge-1\n  data: a\n  data: b\n"
LATIN1 = "name: j\n# Caf\xe9 edge\nedges:\n- {name: edge-1, data: edges/edge-1}\n".encode("latin-1")

# (case, job document/text or a function of tmp_path giving one, what stderr must say)
BAD_JOBS = [
    ("duplicate top-level key", DUP_TOP, ["key 'train' appears twice", "lines 4 and 5", "keep one"]),
    ("duplicate nested key", DUP_NESTED, ["key 'rounds' appears twice", "lines 5 and 6"]),
    ("duplicate key in an edge", DUP_IN_EDGE, ["key 'data' appears twice", "lines 4 and 5"]),
    ("latin-1 job file", LATIN1, ["line 2", "not UTF-8", "save the job file as UTF-8"]),
    ("token as user in tracking uri", lambda t: _job(t, mlflow_tracking_uri="http://ghp_SECRETTOKEN123@host:5000"),
     ["mlflow_tracking_uri holds a user name or token", "MLFLOW_TRACKING_TOKEN"]),
    ("password only in tracking uri", lambda t: _job(t, mlflow_tracking_uri="http://:hunter22@host:5000"),
     ["mlflow_tracking_uri holds a user name and password", "set it in the environment"]),
    ("token in tracking uri query", lambda t: _job(t, mlflow_tracking_uri="http://host:5000/?token=SECRET123"),
     ["mlflow_tracking_uri holds a secret in its query ('token=')", "set it in the environment"]),
    ("signature in data query", lambda t: _job(t, edges=[{"name": "edge-1",
                                                          "data": "s3://b/x?X-Amz-Signature=abc"}]),
     ["data holds a secret in its query ('X-Amz-Signature=')", "AWS_SECRET_ACCESS_KEY"]),
    ("access key as user in data", lambda t: _job(t, edges=[{"name": "edge-1", "data": "s3://AKIAXXXX@bucket/e1"}]),
     ["data holds a user name or token", "AWS_ACCESS_KEY_ID"]),
    ("tracking uri without scheme", lambda t: _job(t, mlflow_tracking_uri="mlflow.example.com:5000"),
     ["mlflow_tracking_uri 'mlflow.example.com:5000' has no known scheme", "write e.g. http://mlflow:5000"]),
    ("tracking uri with unknown scheme", lambda t: _job(t, mlflow_tracking_uri="ftp://mlflow:21"),
     ["has no known scheme", "sqlite:///path/mlflow.db"]),
    ("two edges, same folder", lambda t: _two_edges(t, str(t / GOOD_EDGE)),
     ["edges 'edge-1' and 'edge-2' read the same folder", "give each edge its own data folder"]),
    ("two edges, same folder spelled differently", lambda t: _two_edges(t, str(t / "edges" / "." / "edge-1") + "/"),
     ["read the same folder", "counted twice"]),
    ("two edges, one a symlink to the other", _symlinked_twin, ["read the same folder", "its own data folder"]),
    ("edge data is a file", _data_is_file, ["images.zip is a file, not a folder", "give the folder"]),
    ("edge data is a symlink loop", _data_loops, ["is a symlink that points to itself", "point it at the image"]),
    ("state_dir under a file", _state_under_file, ["state_dir", "is a file, not a folder", "a folder you can write"]),
    ("state_dir empty", lambda t: _job(t, state_dir=" "), ["state_dir is empty", "give a folder"]),
    ("state_dir a URI", lambda t: _job(t, state_dir="s3://bucket/state"), ["state_dir 's3://bucket/state' is a URI",
                                                                           "give a local folder"]),
    # issue 26
    ("train.lr .nan", "name: j\nedges:\n- {name: edge-1, data: edges/edge-1}\ntrain: {lr: .nan}\n",
     ["train.lr: Input should be a finite number", "not .nan or .inf"]),
    ("train.mu .inf", "name: j\nedges:\n- {name: edge-1, data: edges/edge-1}\ntrain: {mu: .inf}\n",
     ["train.mu: Input should be a finite number", "not .nan or .inf"]),
    ("state_dir inside an edge's data", lambda t: _job(t, state_dir=str(t / GOOD_EDGE / "state")),
     ["state_dir", "is inside the data folder", "of edge 'edge-1'", "outside every edge's data"]),
    ("a type folder symlinked to another edge's", _shared_type_folder,
     ["edges 'edge-1' and 'edge-2' read the same type folder", "box", "give each edge its own images"]),
]


@pytest.mark.parametrize("case, job, says", BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
def test_a_bad_job_is_refused_before_anything_runs(case, job, says, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, job(tmp_path) if callable(job) else job)
    # Execute: compile reads the job and writes YAML; nothing may reach the YAML
    started = time.monotonic()
    code = main(["compile", str(path), "-o", str(tmp_path / "out.yaml")])
    # Assert
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: "), err
    assert all(s in err for s in says), err
    assert "Traceback" not in err
    assert not any(secret in err for secret in ("SECRETTOKEN123", "hunter22", "SECRET123", "AKIAXXXX", "abc"))
    assert not (tmp_path / "out.yaml").exists()
    assert time.monotonic() - started < 60


def test_a_duplicate_key_does_not_silently_win(tmp_path):
    from entgan.job.spec import JobError, load_job

    with pytest.raises(JobError, match="'train' appears twice"):
        load_job(_write(tmp_path, DUP_TOP))


def test_state_dir_and_data_with_tilde_are_in_home_not_a_folder_named_tilde(tmp_path, monkeypatch):
    from entgan.job.spec import parse_job

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    job = parse_job({"name": "j", "edges": [{"name": "e", "data": "~/edges/e"}], "state_dir": "~/entgan-state"})
    assert job.state_dir == str(tmp_path / "home" / "entgan-state")
    assert job.edges[0].data == str(tmp_path / "home" / "edges" / "e")
    local = job.with_local_paths(tmp_path)
    assert "~" not in local.state_dir and "~" not in local.tracking_uri


# ---------------------------------------------------------------- verb options


def _good_job(tmp_path: Path) -> Path:
    return _write(tmp_path, _job(tmp_path))


def _file(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).write_text("x")
    return tmp_path / name


# (case, argv as a function of (tmp_path, job file), what stderr must say)
BAD_OPTIONS = [
    ("generate -n 0", lambda t, j: ["generate", "--job", str(j), "-n", "0", "--out", str(t / "o")],
     ["-n is 0", "at least 1"]),
    ("generate -n -5", lambda t, j: ["generate", "--job", str(j), "-n", "-5", "--out", str(t / "o")],
     ["-n is -5", "at least 1", "e.g. -n 64"]),
    ("generate --out an existing file", lambda t, j: ["generate", "--job", str(j), "--out", str(_file(t, "o.png"))],
     ["--out", "o.png is an existing file", "give a folder"]),
    ("generate --out under a file", lambda t, j: ["generate", "--job", str(j), "--out", str(_file(t, "f") / "o")],
     ["--out", "is a file, not a folder", "choose a path under a folder"]),
    ("generate --type unknown", lambda t, j: ["generate", "--job", str(j), "--type", "pillar", "--out", str(t / "o")],
     ["--type pillar: not a data type of job 'j'", "its types: box, table"]),
    ("generate --type one known one unknown",
     lambda t, j: ["generate", "--job", str(j), "--type", "box", "--type", "boxes", "--out", str(t / "o")],
     ["--type boxes: not a data type", "box, table"]),
    ("generate --out an edge's data folder", lambda t, j: ["generate", "--job", str(j), "--out", str(t / GOOD_EDGE)],
     ["--out", "is inside the data folder", "of edge 'edge-1'", "outside every edge's data"]),
    ("generate --out inside an edge's data", lambda t, j: ["generate", "--job", str(j), "--out",
                                                           str(t / GOOD_EDGE / "synth")],
     ["--out", "is inside the data folder", "the next run would train on the synthetic images"]),
    ("data demo --per-type -5", lambda t, j: ["data", "demo", "--root", str(t / "d"), "--per-type", "-5"],
     ["--per-type is -5", "at least 1"]),
    ("data demo --per-type 0", lambda t, j: ["data", "demo", "--root", str(t / "d"), "--per-type", "0"],
     ["--per-type is 0", "at least 1"]),
    ("status --runs -1", lambda t, j: ["status", str(j), "--runs", "-1"], ["--runs is -1", "e.g. --runs 5"]),
    ("status --runs 0", lambda t, j: ["status", str(j), "--runs", "0"], ["--runs is 0", "it must be 1-1000"]),
    ("compile -o under a file", lambda t, j: ["compile", str(j), "-o", str(_file(t, "f") / "p.yaml")],
     ["-o", "is a file, not a folder", "choose a path"]),
    ("compile -o an existing folder", lambda t, j: ["compile", str(j), "-o", str(t)],
     ["-o", "is a folder; give a file name"]),
    ("compile -o in a read-only place", lambda t, j: ["compile", str(j), "-o", "/proc/entgan.pipeline.yaml"],
     ["-o /proc/entgan.pipeline.yaml", "choose a path you can write"]),
    ("upload -o under a file", lambda t, j: ["upload", str(j), "--dry-run", "-o", str(_file(t, "f") / "p.yaml")],
     ["-o", "is a file, not a folder"]),
    ("upload --image with a space", lambda t, j: ["upload", str(j), "--dry-run", "--image", "my image:1"],
     ["--image 'my image:1' is not an image reference", "write e.g."]),
    ("schedule --max-concurrency 0", lambda t, j: ["schedule", str(j), "--cron", "0 * * * *", "--dry-run",
                                                   "--max-concurrency", "0"], ["--max-concurrency is 0", "1-10"]),
    ("schedule --max-concurrency 11", lambda t, j: ["schedule", str(j), "--cron", "0 * * * *", "--dry-run",
                                                    "--max-concurrency", "11"], ["--max-concurrency is 11", "1-10"]),
    ("figures --out an existing file", lambda t, j: ["figures", str(j), "--out", str(_file(t, "fig.png"))],
     ["--out", "fig.png is an existing file"]),
]


@pytest.mark.parametrize("case, argv, says", BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_a_bad_option_is_one_line_naming_the_flag_and_the_fix(case, argv, says, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)
    job = _good_job(tmp_path)
    # Execute
    code = main(argv(tmp_path, job))
    # Assert: exit 2, one line, the flag and the fix; nothing written
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert all(s in err for s in says), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


# ---------------------------------------------------------------- an unreachable tracking server


UNREACHABLE = "http://127.0.0.1:9"  # port 9 (discard): nothing listens


@pytest.mark.parametrize("verb", [
    lambda t, j: ["run", str(j)],
    lambda t, j: ["status", str(j)],
    lambda t, j: ["generate", "--job", str(j), "-n", "2", "--out", str(t / "o")],
    lambda t, j: ["figures", str(j)],
], ids=["run", "status", "generate", "figures"])
def test_an_unreachable_tracking_server_fails_fast_saying_what_it_waited_for(verb, tmp_path, capsys, monkeypatch):
    # Prepare: MLflow's own retry settings untouched (the defaults retry for minutes)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "ENTGAN_MLFLOW_WAIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    job = _write(tmp_path, _job(tmp_path, mlflow_tracking_uri=UNREACHABLE))
    # Execute
    started = time.monotonic()
    code = main(verb(tmp_path, job))
    took = time.monotonic() - started
    # Assert: bounded (loosely: not the minutes of MLflow's retries), announced, then one clear error
    err = capsys.readouterr().err
    assert took < 60, took
    assert code == 2, err
    assert f"waiting for the MLflow server at {UNREACHABLE}" in err
    assert f"error: MLflow at {UNREACHABLE} is unreachable" in err and "start the server or fix mlflow_tracking_uri" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "state").exists()


def test_the_reachability_check_passes_a_server_that_answers_anything():
    import http.server
    import threading

    from entgan.library.server_check import check_tracking_server

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        said = []
        check_tracking_server(f"http://127.0.0.1:{server.server_port}", wait_s=5, say=said.append)
        assert said == []
    finally:
        server.shutdown()


def test_the_reachability_check_skips_local_stores():
    from entgan.library.server_check import check_tracking_server

    check_tracking_server("sqlite:////nowhere/mlflow.db", wait_s=0, say=pytest.fail)


# ---------------------------------------------------------------- edge folders at inspection


@pytest.mark.parametrize("case, make, says", [
    ("a file", lambda p: p.write_bytes(b"x"), ["is a file, not a folder", "fix the job's edge data path"]),
    ("a symlink loop", lambda p: p.symlink_to(p), ["symlink that points to itself", "fix the job's edge data path"]),
    ("a dangling symlink", lambda p: p.symlink_to(p.parent / "gone"), ["which does not exist", "fix the job's"]),
], ids=["file", "symlink loop", "dangling symlink"])
def test_an_edge_path_that_is_not_a_folder_says_what_it_is(case, make, says, tmp_path):
    from entgan.job.data import DataError, inspect_edge

    make(tmp_path / "edge")
    with pytest.raises(DataError) as err:
        inspect_edge("edge-1", tmp_path / "edge", 0.2, 16)
    assert all(s in str(err.value) for s in says), str(err.value)


def test_an_edge_with_only_tif_images_names_the_extensions_read(tmp_path):
    from entgan.job.data import DataError, inspect_edge

    (tmp_path / "edge" / "box").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "edge" / "box" / f"{i}.tif").write_bytes(b"II*\x00")
    with pytest.raises(DataError) as err:
        inspect_edge("edge-1", tmp_path / "edge", 0.2, 16)
    message = str(err.value)
    assert "found only 3 .tif" in message and ".png .jpg .jpeg .bmp .webp" in message and "convert" in message


def test_the_demo_refuses_a_negative_count_from_python_too(tmp_path):
    from entgan.job.data import DataError, materialize_demo

    with pytest.raises(DataError, match="per_type is -5"):
        materialize_demo(tmp_path, per_type=-5)
    assert not any(tmp_path.iterdir())


def test_options_objects_check_themselves_from_python():
    from entgan.cli.options import CliError, GenerateOptions, StatusOptions

    with pytest.raises(CliError, match="-n is 0"):
        GenerateOptions(job="j.yaml", out="o", n=0)
    with pytest.raises(CliError, match="--runs is -1"):
        StatusOptions(job="j.yaml", runs=-1)
    assert GenerateOptions(job="j.yaml", out="o").n == 64


def test_every_option_of_a_verb_comes_from_its_options_object():
    """One declaration: each verb's parser holds exactly its options object's fields."""
    import dataclasses

    from entgan.cli.verbs import VERBS, _parser

    parser = _parser()
    for verb in VERBS:
        sub = parser
        for word in verb.name.split():
            sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[word]
        dests = {a.dest for a in sub._actions if a.dest not in ("help", "debug") and
                 a.__class__.__name__ != "_SubParsersAction"}
        assert dests == {f.name for f in dataclasses.fields(verb.options)}, verb.name


def test_no_folder_named_tilde_is_created(tmp_path, monkeypatch):
    from entgan.job.spec import load_job
    from entgan.local.run import _state_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    job = load_job(_write(tmp_path, _job(tmp_path, state_dir="~/state"))).with_local_paths(tmp_path)
    _state_dir(job)
    assert (tmp_path / "home" / "state").is_dir() and not (tmp_path / "~").exists()
