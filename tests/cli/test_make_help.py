"""`make help` lists every target of the Makefile (each .PHONY target, with what it does)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _phony_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^\.PHONY:(.*)$", text, re.M) for t in line.split()}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_phony_target_with_a_description():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = dict(re.findall(r"^make (\S+) +(\S.*)$", out, re.M))
    targets = _phony_targets()
    assert {"run", "test", "install", "lifelong", "bench-quick", "images", "upload", "schedule", "clean"} <= targets
    missing = sorted(targets - set(listed))
    assert not missing, f"make help does not list {missing}: add `## what it does` to their rule lines"
    assert all(len(text) > 10 for text in listed.values()), listed
