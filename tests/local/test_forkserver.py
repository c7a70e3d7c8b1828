"""`entgan.local.forkserver`: kfp.local tasks started as forks of one pre-warmed process.

Real parts: kfp.local's SubprocessRunner running a real (tiny) pipeline, and the real server
process. The server preloads `colorsys` here (a module nothing else imports), so a task can tell
whether it is a fork of the server or a fresh Python."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from kfp import dsl
from kfp.dsl import Artifact, Output

from entgan.local import forkserver
from tests.conftest import hang_guard

PRELOAD = ("kfp.dsl.executor_main", "colorsys")


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # as components/ are
def probe(name: str, report: Output[Artifact]) -> str:
    import json
    import os
    import random
    import sys

    print(f"probe {name}: hello from the task")
    with open(report.path, "w") as f:
        json.dump({"forked": "colorsys" in sys.modules, "pid": os.getpid(), "cwd": os.getcwd(),
                   "env": os.environ.get("PROBE_VALUE"), "kfp_runtime": os.environ.get("_KFP_RUNTIME"),
                   "draw": random.random()}, f)
    return name.upper()


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # as components/ are
def broken(message: str):
    raise ValueError(message)


@dsl.pipeline(name="probe-pipeline")
def probes() -> str:
    first = probe(name="one")
    first.set_env_variable("PROBE_VALUE", "from-the-task-env")
    second = probe(name="two").after(first)
    return second.outputs["Output"]


@dsl.pipeline(name="broken-pipeline")
def broken_pipeline():
    broken(message="edge-3 has no images: add some")


def _reports(root) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("report")) if p.is_file()]


def test_tasks_are_forks_of_the_server_with_their_own_env_cwd_seeds_and_output(local_runner, capsys):
    with forkserver.serving(PRELOAD) as server:
        result = probes()
        server_pid = server.process.pid
    assert result.output == "TWO"
    one, two = _reports(local_runner / "root")
    assert one["forked"] and two["forked"]  # ran in forks of the server (it had imported colorsys)
    assert len({one["pid"], two["pid"], server_pid, os.getpid()}) == 4  # each task its own process
    assert one["env"] == "from-the-task-env" and two["env"] is None  # the task's env, not the last one's
    assert one["kfp_runtime"] == "true" and one["cwd"] == str(local_runner)
    assert one["draw"] != two["draw"]  # re-seeded: forks do not share the server's random state
    out = capsys.readouterr().out
    assert "probe one: hello from the task" in out and "probe two: hello from the task" in out
    assert server.process.poll() is not None  # stopped on leaving


def test_without_the_server_tasks_are_fresh_processes(local_runner):
    probes()
    assert [r["forked"] for r in _reports(local_runner / "root")] == [False, False]


def test_a_failing_task_fails_the_run_with_its_own_error(local_runner, capsys):
    with forkserver.serving(PRELOAD), pytest.raises(RuntimeError, match="broken"):
        broken_pipeline()
    assert "ValueError: edge-3 has no images: add some" in capsys.readouterr().out


@pytest.mark.parametrize("source, status", [
    ("import sys\nsys.exit(3)\n", 3),
    ("raise ValueError('bad input, named')\n", 1),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", -signal.SIGKILL),
])
def test_exit_status_is_the_tasks_as_popen_reports_it(source, status, capsys):
    server = forkserver.ForkServer(PRELOAD)
    try:
        assert server.wait_ready()
        args = ["--executor_input", "{}", "--function_to_execute", "f"]
        assert server.run(source, args, env=dict(os.environ)) == status
        assert server.run("import sys\nsys.exit(0)\n", args, env=dict(os.environ)) == 0  # the server lives on
    finally:
        server.close()
    if status == 1:
        assert "ValueError: bad input, named" in capsys.readouterr().out


def test_a_server_that_cannot_start_falls_back_to_fresh_processes(local_runner, capsys):
    with forkserver.serving(("kfp.dsl.executor_main", "no_such_module_for_entgan")):
        assert probes().output == "TWO"
    assert [r["forked"] for r in _reports(local_runner / "root")] == [False, False]
    err = capsys.readouterr().err
    assert "fork server did not start" in err and "no_such_module_for_entgan" in err


def test_only_kfp_lightweight_component_commands_are_forked():
    spec = probe.component_spec.implementation.container
    source, args = forkserver.parse_command([*spec.command, *spec.args])
    assert "def probe(" in source and args[args.index("--function_to_execute") + 1] == "probe"
    assert forkserver.parse_command(["python", "-m", "kfp.dsl.executor_main"]) is None
    # A component that pip-installs kfp first (kfp's default) runs as a plain subprocess: its
    # command is more than the executor.
    installs = dsl.component(probe.python_func, base_image="python:3.11").component_spec.implementation.container
    assert forkserver.parse_command([*installs.command, *installs.args]) is None
    assert forkserver.parse_command(["sh", "-ec", "echo hello", "x"]) is None


def test_the_server_stops_when_entgan_run_is_killed(tmp_path):
    code = ("import sys, os\nfrom entgan.local.forkserver import ForkServer\ns = ForkServer(('colorsys',))\n"
            "assert s.wait_ready()\nprint(s.process.pid, s.folder, flush=True)\nos._exit(0)\n")  # no close()
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=hang_guard(120))
    pid, folder = child.stdout.split()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_alive(int(pid)) or os.path.exists(folder)):
        time.sleep(0.2)
    assert not _alive(int(pid)) and not os.path.exists(folder)  # gone, and its socket folder with it


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_server_that_dies_mid_run_leaves_the_next_tasks_to_fresh_processes(local_runner, capsys):
    with forkserver.serving(PRELOAD) as server:
        assert server.wait_ready()
        server.process.kill()
        server.process.wait()
        assert probes().output == "TWO"
    assert [r["forked"] for r in _reports(local_runner / "root")] == [False, False]
    assert "tasks start fresh processes instead" in capsys.readouterr().err
