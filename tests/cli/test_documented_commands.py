"""Every command line the README and docs/*.md show in a fenced `sh`/`bash` block (and their
```python blocks) is run the way a new user would paste it, through the real `entgan` entry
point, in a fresh folder laid out like a clone (issue 26: the README's `entgan generate` without
`--type` wrote nothing and exited 0, and its `python`/`mlflow` lines assumed an activated venv).

Each document's runnable lines form one bash script (in document order, `set -e`), run in that
folder with the venv NOT on PATH (the documents must say how to get it there). Substitutions,
all here: `jobs/demo.yaml` is a tiny demo job (1 edge, 1 round, a few steps, a few evaluation steps); `make run` is its
Makefile recipe, with `--per-type 24` demo images; `-n 1000` is `-n 3`; port 5001 is a free port;
`mlflow models serve` runs in the background until the script ends, and the test waits for it
and asks it for 4 images. Lines that need a cluster, a KFP host, docker or minutes of benchmarks
are listed in SKIPPED with the reason; a line that is neither run nor skipped fails
`test_every_documented_command_is_run_or_skipped_with_a_reason`.

Real parts: bash, the venv's `entgan`, `python`, `mlflow` and `curl`, kfp.local, an embedded MLflow store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_DEPLOY, TINY_EVAL, TINY_TRAIN, hang_guard

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = ("sh", "bash", "shell", "console")

# (pattern at the start of a command line, why the test does not run it)
SKIPPED = [
    (r"make test\b", "runs the test suite, this test included"),
    (r"make (bench|bench-quick)\b", "benchmarks take minutes (tests/benchmarks/test_bench_quick.py runs the harness)"),
    (r"(\.venv/bin/)?python -m benchmarks\b", "benchmarks take minutes (profile_step: a minute of one core)"),
    (r"make images\b", "needs docker and an image registry"),
    (r"kubectl\b", "needs a Kubernetes cluster"),
    (r"sh manifests/new-credentials\.sh", "writes the cluster's credentials, used only by kubectl apply"),
    (r"export KFP_HOST=", "a Kubeflow Pipelines API host, for the upload that needs one"),
    (r"make (upload|schedule)\b", "needs a Kubeflow Pipelines API host"),
]
# Documents whose ```python blocks a user pastes (the others show fragments of EntGAN's own code
# to explain it: docs/evaluation.md, docs/kubeflow-backend-notes.md; they are not run).
PASTED_PYTHON = {"docs/use-a-generator.md"}
RUN = [r"make run\b", r"\. \.venv/bin/activate\b", r"entgan ", r"export MLFLOW_TRACKING_URI=", r"python -c ",
       r"mlflow models serve ", r"curl ", r"<python block>"]
N_SMALL = 3  # images per type instead of the documents' 1000


def _blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced block."""
    blocks, language, lines = [], None, []
    for line in path.read_text().splitlines():
        fence = re.match(r"^```\s*(\w*)\s*$", line)
        if fence and language is None:
            language, lines = fence.group(1).lower(), []
        elif line.startswith("```") and language is not None:
            blocks.append((language, lines))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def documented_commands(path: Path) -> list[str]:
    """A document's command lines in order (continuation lines joined, comment-only lines
    dropped); a pasted ```python block (PASTED_PYTHON) is one command, `<python block>` and its code."""
    commands = []
    for language, lines in _blocks(path):
        if language == "python" and str(path.relative_to(REPO)) in PASTED_PYTHON:
            commands.append("<python block>\n" + "\n".join(lines))
        elif language in SHELLS:
            for line in re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    commands.append(line.strip())
    return commands


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED if re.match(pattern, command)), None)


def runs(command: str) -> bool:
    return any(re.match(pattern, command) for pattern in RUN)


def test_every_documented_command_is_run_or_skipped_with_a_reason():
    unknown = [f"{path.name}: {c}" for path in DOCUMENTS for c in documented_commands(path)
               if not runs(c) and skip_reason(c) is None]
    assert unknown == [], "documented commands no test runs: run them here (RUN) or say why not (SKIPPED)"
    assert any("entgan generate --job jobs/demo.yaml" in c and "--type" not in c
               for c in documented_commands(REPO / "README.md"))  # the case of issue 26 stays covered


# ---------------------------------------------------------------- running them


def _make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, with $(BIN) and $(JOB) as `make` would expand them."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    return [line.strip().replace("$(BIN)", ".venv/bin").replace("$(JOB)", "jobs/demo.yaml")
            for line in recipe.splitlines()]


def _script(commands: list[str]) -> tuple[str, int]:
    """The bash script of a document's runnable commands, substituted; and how many servers it asks."""
    lines = ["set -eo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    served = 0
    for command in commands:
        if skip_reason(command):
            continue
        if command.startswith("<python block>"):
            lines += ["python - <<'PYTHON_BLOCK'", command.split("\n", 1)[1], "PYTHON_BLOCK"]
            continue
        if command.startswith("make run"):
            lines += [c + (" --per-type 24" if " data demo " in c else "") for c in _make_recipe("run")]
            continue
        command = command.replace("-n 1000", f"-n {N_SMALL}").replace("5001", "$PORT")
        if command.startswith("mlflow models serve"):
            served += 1
            serve = command.split("#")[0].strip().rstrip("&").strip()
            lines += ["PORT=$(python -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); "
                      "print(s.getsockname()[1])')",
                      f"{serve} > serve-{served}.log 2>&1 &",
                      "for i in $(seq 600); do curl -sf http://127.0.0.1:$PORT/ping > /dev/null && break; sleep 0.5; done"]
            if not any(c.startswith("curl ") for c in commands):  # the README says what to POST: ask it
                lines.append("curl -s http://127.0.0.1:$PORT/invocations -H 'Content-Type: application/json' "
                             "-d '{\"dataframe_records\": [{\"n\": 4, \"seed\": 7}]}'; echo")
            continue
        lines.append(command + ("; echo" if command.startswith("curl ") else ""))  # its reply on a line of its own
    return "\n".join(lines) + "\n", served


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder laid out like a fresh clone after `make install`: the venv as `.venv`, the tiny
    demo job as `jobs/demo.yaml` (its state in `.entgan/demo`, as the real one's)."""
    root = tmp_path_factory.mktemp("clone")
    (root / ".venv").symlink_to(sys.prefix)
    demo = yaml.safe_load((REPO / "jobs" / "demo.yaml").read_text())
    demo.update(edges=demo["edges"][:1], train={**TINY_TRAIN, "rounds": 1},  # edge-1: box and table
                eval={**TINY_EVAL, "cas_steps": 2, "cas_seeds": 1}, deploy=dict(TINY_DEPLOY))
    (root / "jobs").mkdir()
    (root / "jobs" / "demo.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    (root / "tmp").mkdir()
    return root


def _user_env(clone: Path) -> dict[str, str]:
    """A user's shell: the venv not on PATH; this checkout's code (the venv may hold another);
    temporary files in the clone's tmp/ (to find what a run leaves); no telemetry from the test."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    return {**env, "PATH": path, "PYTHONPATH": str(REPO), "TMPDIR": str(clone / "tmp"),
            "MLFLOW_DISABLE_TELEMETRY": "true"}


def _left_in_temp(clone: Path) -> list[str]:
    """What kfp.local and the task fork server leave in the temp folder (issue 26, item 8)."""
    temp = clone / "tmp"
    return sorted([str(p.relative_to(temp)) for p in temp.glob("*/ephemeral_component.py")] +
                  [p.name for p in temp.glob("entgan-*")])


@pytest.mark.parametrize("document", ["README.md", "docs/use-a-generator.md"])
def test_the_documented_commands_run_and_do_what_they_say(document, clone):
    """README first: its `make run` trains the tiny demo job that the later lines (and
    docs/use-a-generator.md) use. Every other document has no runnable command (checked)."""
    # Prepare
    commands = documented_commands(REPO / document)
    script, served = _script(commands)
    shutil.rmtree(clone / "synth", ignore_errors=True)

    # Execute
    done = subprocess.run(["bash", "-c", script], cwd=clone, env=_user_env(clone), capture_output=True, text=True,
                          timeout=hang_guard(900))

    # Assert: exit 0; the images and replies each line promises; nothing left in the temp folder
    said = f"--- script\n{script}--- stdout\n{done.stdout[-4000:]}--- stderr\n{done.stderr[-6000:]}"
    assert done.returncode == 0, said
    synth = clone / "synth"
    types = sorted(p.name for p in synth.iterdir()) if synth.is_dir() else []
    assert types and "box" in types, said  # every type with a champion, without --type
    assert all(len(list((synth / t).glob("*.png"))) == N_SMALL for t in types), said
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"predictions"')]
    assert len(replies) == served == 1, said
    assert [p["index"] for p in replies[0]["predictions"]] == [0, 1, 2, 3]
    if document == "README.md":
        assert "png" in done.stdout and (clone / ".entgan" / "demo" / "mlflow.db").is_file(), said
    assert _left_in_temp(clone) == [], said


def test_no_other_document_has_a_runnable_command():
    """The parametrized test above runs the documents that have runnable commands; a new one must be added."""
    with_commands = {str(p.relative_to(REPO)) for p in DOCUMENTS
                     if any(runs(c) and not skip_reason(c) for c in documented_commands(p))}
    assert with_commands == {"README.md", "docs/use-a-generator.md"}
