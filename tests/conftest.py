"""Shared fixtures: tiny jobs over a small slice of the bundled demo data, and hang guards."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from entgan.job.data import materialize_demo
from entgan.job.spec import parse_job

TINY_TRAIN = {"rounds": 2, "local_steps": 3, "batch_size": 8, "image_size": 16, "width": 8, "latent_dim": 8,
              "ema_decay": None}  # 3 steps: an EMA at 0.99 would still be the untrained G
TINY_EVAL = {"feature_steps": 3, "num_generated": 32, "feature_dim": 8, "c2st_steps": 3}
# A tiny job trains for seconds: its generators are noise, which the absolute floors refuse
# (tests/evaluation/test_gate_floors.py checks that); the lifelong tests need them deployed.
TINY_DEPLOY = {"min_cas_ratio": None, "max_kid_random": None}
REPO = Path(__file__).resolve().parents[1]


def hang_guard(seconds: float) -> float:
    """A wall-clock limit that only a hang reaches, never a slow or loaded machine.

    `seconds` is chosen several times above what a loaded 2-core machine needs; per-core speed
    differs about 5x between machines, so `ENTGAN_TEST_SLOWDOWN` (default 1) multiplies it on
    a machine slower than that. No test asserts on time: a guard that fires means a hang."""
    return seconds * float(os.environ.get("ENTGAN_TEST_SLOWDOWN", "1"))


def tiny_job_dict(root: Path, edges: list[str], **overrides) -> dict:
    job = {
        "name": "tiny",
        "edges": [{"name": e, "data": str(root / "edges" / e)} for e in edges],
        "train": dict(TINY_TRAIN),
        "eval": dict(TINY_EVAL),
        "deploy": dict(TINY_DEPLOY),
        "state_dir": str(root / "state"),
    }
    job.update(overrides)
    return job


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run far faster on one thread than on two cores other jobs also use:
    `pytestmark = pytest.mark.usefixtures("one_thread")` sets it for a module, then restores it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_edges(tmp_path_factory) -> Path:
    """The four demo edges with 24 images per type (shared, read-only)."""
    root = tmp_path_factory.mktemp("demo")
    materialize_demo(root / "edges", per_type=24)
    return root


@pytest.fixture
def tiny_job(demo_edges, tmp_path):
    """A valid tiny job over the shared demo edges, with its own state folder."""
    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2", "edge-3", "edge-4"])
    data["state_dir"] = str(tmp_path / "state")
    return parse_job(data)


def write_job(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def local_runner(tmp_path, monkeypatch):
    """kfp.local's subprocess runner (no venv), its pipeline root under `tmp_path`, run from there."""
    import kfp.local

    monkeypatch.chdir(tmp_path)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
                   raise_on_error=True)
    return tmp_path
