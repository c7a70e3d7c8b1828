"""MLflow's usage telemetry is off in every process that imports entgan (the CLI, kfp.local tasks,
the components), in the images and in the Makefile's tools, unless the user set it (issue 26).

Real parts: fresh Python processes with the environment a user's shell would have (no CI or
pytest variables, which MLflow itself treats as "do not track"), MLflow's own telemetry client.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What MLflow reads as "a CI or a test run" (mlflow/telemetry/utils.py): not in a user's shell.
NOT_A_USER = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD")

CLIENT_AFTER = """
import os, sys
for module in sys.argv[1:]:
    __import__(module)
from mlflow.telemetry import get_telemetry_client
print(os.environ.get("MLFLOW_DISABLE_TELEMETRY"), get_telemetry_client() is not None)
"""


def _user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in NOT_A_USER and k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    return {**env, "HOME": str(tmp_path), "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("first", ["entgan.cli", "entgan.steps.wiring", "entgan.library.pyfunc"],
                         ids=["the CLI", "a component's steps", "a served model"])
def test_telemetry_is_off_wherever_entgan_is_imported_first(first, tmp_path):
    done = subprocess.run([sys.executable, "-c", CLIENT_AFTER, first], env=_user_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["true", "False"]  # set, and MLflow started no telemetry client
    assert not (tmp_path / ".config" / "mlflow").exists()


def test_a_users_explicit_choice_is_kept(tmp_path):
    """MLFLOW_DISABLE_TELEMETRY=false (the documented way to turn it on) is not overridden."""
    script = "import os, entgan; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
    done = subprocess.run([sys.executable, "-c", script], env=_user_env(tmp_path, MLFLOW_DISABLE_TELEMETRY="false"),
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "false", done.stderr[-2000:]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "mlflow.Dockerfile"])
def test_the_images_turn_it_off(dockerfile):
    text = (REPO / "images" / dockerfile).read_text()
    assert "MLFLOW_DISABLE_TELEMETRY=true" in text


def test_the_makefile_turns_it_off_unless_set(tmp_path):
    env = _user_env(tmp_path)
    shown = subprocess.run(["make", "-s", "-C", str(REPO), "-f", "Makefile", "-f", "-", "show"], env=env,
                           input="show:\n\t@echo $$MLFLOW_DISABLE_TELEMETRY\n", capture_output=True, text=True)
    chosen = subprocess.run(["make", "-s", "-C", str(REPO), "-f", "Makefile", "-f", "-", "show"],
                            env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"},
                            input="show:\n\t@echo $$MLFLOW_DISABLE_TELEMETRY\n", capture_output=True, text=True)
    assert (shown.stdout.strip(), chosen.stdout.strip()) == ("true", "false"), shown.stderr + chosen.stderr
