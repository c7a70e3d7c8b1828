"""Issue 26: runs and stores kept apart, and vague messages made clear.

- One `entgan run` at a time on a state_dir: a lock that names its holder; a stale one is taken
  over; the run's summary is its own run's, never a newer run of another process.
- A state_dir that cannot hold the store: `status`, `generate`, `figures` say so in one line, at once.
- An MLflow server that answers 500 is reported as answering 500, with what it said.

Real parts: the `entgan` CLI entry point, an embedded MLflow store, a local HTTP server, real
processes and a real read-only folder.
"""

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from entgan.cli.verbs import main
from tests.conftest import hang_guard


def _job(tmp_path: Path, **fields) -> Path:
    (tmp_path / "edges" / "edge-1" / "box").mkdir(parents=True, exist_ok=True)
    job = {"name": "j", "edges": [{"name": "edge-1", "data": str(tmp_path / "edges" / "edge-1")}],
           "data_types": ["box"], "state_dir": str(tmp_path / "state"), **fields}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


VERBS = {
    "status": lambda t, j: ["status", str(j)],
    "generate": lambda t, j: ["generate", "--job", str(j), "-n", "2", "--out", str(t / "o")],
    "figures": lambda t, j: ["figures", str(j)],
}


# ---------------------------------------------------------------- a state_dir that cannot hold the store


@pytest.mark.parametrize("verb", VERBS.values(), ids=VERBS.keys())
def test_a_state_dir_that_cannot_be_made_is_one_clear_line(verb, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path, state_dir="/proc/entgan-state")
    # Execute
    code = main(verb(tmp_path, job))
    # Assert (before: `error: FileNotFoundError: [Errno 2] ...`, exit 1)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "state_dir /proc/entgan-state cannot be used" in err and "a folder you can write" in err
    assert not (tmp_path / "o").exists()


@contextlib.contextmanager
def _read_only(folder: Path):
    """A folder nobody can write into: immutable for root (chmod does not stop root), else 0555."""
    folder.mkdir(parents=True)
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("root without chattr +i: no way to make a folder read-only here")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield folder
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize("verb", VERBS.values(), ids=VERBS.keys())
def test_a_read_only_state_dir_without_a_store_is_one_clear_line_at_once(verb, tmp_path, capsys, monkeypatch):
    # Prepare
    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path)
    with _read_only(tmp_path / "state"):
        # Execute (before: about two minutes of MLflow's retries, then `OperationalError ... unable to open`)
        code = main(verb(tmp_path, job))
    # Assert
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"state_dir {tmp_path / 'state'} cannot be used" in err and "a folder you can write" in err


# ---------------------------------------------------------------- an MLflow server that answers 500


class _Failing(http.server.BaseHTTPRequestHandler):
    """500 with a message on every request; with `healthy`, /health answers 200 (only the API fails)."""

    healthy = False

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.healthy and self.path.startswith("/health"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            return
        body = b"sqlite3.OperationalError: database disk image is malformed\nmore lines\n"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _server(healthy: bool):
    handler = type("Handler", (_Failing,), {"healthy": healthy})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.mark.parametrize("healthy", [False, True], ids=["everything 500", "health ok, api 500"])
def test_a_server_that_answers_500_is_reported_as_answering_not_unreachable(healthy, tmp_path, capsys, monkeypatch):
    # Prepare: short waits and MLflow retries (the server check's and MLflow's own)
    monkeypatch.setenv("ENTGAN_MLFLOW_WAIT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.chdir(tmp_path)
    with _server(healthy) as uri:
        job = _job(tmp_path, mlflow_tracking_uri=uri)
        # Execute
        code = main(["status", str(job)])
    # Assert (before: "MLflow at ... is unreachable ...; start the server")
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"MLflow at {uri} answered 500" in err and "unreachable" not in err, err
    if not healthy:
        assert "answered 500: sqlite3.OperationalError: database disk image is malformed" in err
    assert "the server is up but failing" in err and "log" in err


# ---------------------------------------------------------------- one run at a time on a state_dir


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_a_second_run_on_a_busy_state_dir_is_refused_naming_the_holder(tmp_path, capsys, monkeypatch):
    from entgan.local.lock import LOCK_FILE

    # Prepare: another live process holds the state_dir
    monkeypatch.chdir(tmp_path)
    job = _job(tmp_path)
    other = _sleeper()
    try:
        (tmp_path / "state").mkdir()
        lock = {"pid": other.pid, "host": socket.gethostname(), "started": time.time() - 60, "job": "j"}
        (tmp_path / "state" / LOCK_FILE).write_text(json.dumps(lock))
        # Execute
        code = main(["run", str(job)])
    finally:
        other.kill()
        other.wait()
    # Assert: refused before anything was written; the holder's lock untouched
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"is in use by another entgan run (pid {other.pid} on {socket.gethostname()}" in err
    assert f"kill {other.pid}" in err and "give this job its own state_dir" in err
    assert json.loads((tmp_path / "state" / LOCK_FILE).read_text())["pid"] == other.pid
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [LOCK_FILE]


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    from entgan.local.lock import LOCK_FILE, StateDirBusy, state_dir_lock

    # Prepare: a lock left by a process that is gone (killed with -9)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / LOCK_FILE
    path.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(), "started": 0}))

    # Execute / Assert: taken over, held against a second taker, released at the end
    with state_dir_lock(tmp_path, "j"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(StateDirBusy, match=f"pid {os.getpid()}"):
            with state_dir_lock(tmp_path, "j"):
                pass
    assert not path.exists()


def test_two_processes_racing_for_one_state_dir_never_both_hold_it(tmp_path):
    """Real processes taking the lock at once: exactly one holds it, the others are refused."""
    script = (
        "import sys, time\n"
        "from entgan.local.lock import StateDirBusy, state_dir_lock\n"
        "try:\n"
        "    with state_dir_lock(sys.argv[1], 'j'):\n"
        "        print('held', flush=True); time.sleep(3)\n"
        "except StateDirBusy as busy:\n"
        "    print('busy', busy, flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outs = [p.communicate(timeout=hang_guard(120))[0] for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["busy", "busy", "held"], outs


def test_the_summary_is_this_processs_run_not_a_newer_one(tmp_path):
    from entgan.job.lifecycle import DRIVER_TAG
    from entgan.job.spec import load_job
    from entgan.library.registry import library_for
    from entgan.local.run import latest_summary

    # Prepare: our run, then a newer run of another `entgan run` on the same store
    job = load_job(_job(tmp_path))
    library = library_for(job)
    started = time.time()
    ours = library.start_run("ours", {}, {DRIVER_TAG: f"{socket.gethostname()}:{os.getpid()}"})
    theirs = library.start_run("theirs", {}, {DRIVER_TAG: "other-host:4242"})

    # Execute
    summary = latest_summary(job, started)

    # Assert (before: the newest run, theirs)
    assert library.recent_runs(1)[0].info.run_id == theirs
    assert summary["mlflow_run_id"] == ours
