"""The Dockerfiles, checked offline (no Docker engine here): hadolint, pinning, non-root user,
a build context that holds what they COPY, and `make images` / `make upload` naming one tag."""

import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "images" / "Dockerfile", REPO / "images" / "mlflow.Dockerfile"]


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _in_context(path: str) -> bool:
    """Whether .dockerignore (an allow-list: '*' then '!' entries) lets `path` into the context."""
    allowed = False
    for rule in (REPO / ".dockerignore").read_text().split():
        negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        if fnmatch(path, pattern) or path.startswith(pattern + "/") or fnmatch(path, pattern.replace("**/", "")):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned_and_the_image_runs_as_non_root(dockerfile):
    # Prepare
    steps = _instructions(dockerfile)
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    # Assert: the base is a patch-level tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    assert all(a.split()[0] == "${PYTHON_IMAGE}" for i, a in steps if i == "FROM")
    # Assert: the final stage ends as a numeric non-root user
    final = steps[max(n for n, (i, _) in enumerate(steps) if i == "FROM") :]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 1000


def test_component_image_installs_locked_runtime_dependencies_for_both_variants():
    text = (REPO / "images" / "Dockerfile").read_text()
    assert '"$VARIANT" = cpu' in text and '"$VARIANT" = cuda' in text
    assert "download.pytorch.org/whl/cpu" in text
    assert text.count("-c requirements.lock") == 2 and '["project"]["dependencies"]' in text
    assert "pip install --no-deps ." in text and "-e " not in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_everything_copied_is_in_the_build_context(dockerfile):
    copies = [a.split()[:-1] for i, a in _instructions(dockerfile) if i == "COPY" and "--from" not in a]
    sources = [s for c in copies for s in c]
    assert sources and all(_in_context(s) and (REPO / s).exists() for s in sources), sources


def test_build_context_leaves_out_local_state_and_tests():
    for path in (".venv", ".entgan", "tests", "build", ".git", "manifests", "benchmarks"):
        assert not _in_context(path), path
    for path in ("entgan", "components", "pipelines", "pyproject.toml", "requirements.lock", "README.md"):
        assert _in_context(path), path


def test_make_images_and_upload_name_the_same_registry_and_tag():
    # Execute
    def make(target: str) -> str:
        return subprocess.run(
            ["make", "-n", target, "REGISTRY=reg.example/team", "TAG=9.9"], cwd=REPO, capture_output=True, text=True,
            check=True,
        ).stdout

    images, upload = make("images"), make("upload")
    # Assert
    for tag in ("reg.example/team/entgan:9.9", "reg.example/team/entgan:9.9-cuda", "reg.example/team/mlflow:3.17.2"):
        assert f"-t {tag} ." in images and f"push {tag}" in images
    assert "--build-arg VARIANT=cpu" in images and "--build-arg VARIANT=cuda" in images
    assert "entgan upload jobs/cluster.yaml --image reg.example/team/entgan:9.9-cuda" in upload
