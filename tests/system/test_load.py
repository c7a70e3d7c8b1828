"""Under load: 16 edges x 8 data types (tiny images and models) compile, run locally with
kfp.local and register correctly.

It is the slowest test (about 55 task subprocesses, two at a time: ~2 minutes on an idle
2-core machine). Time and peak memory:

    /usr/bin/time -v .venv/bin/python -m tests.test_load
"""

import sys
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from entgan.cli.verbs import run_local
from entgan.job.spec import parse_job
from entgan.library.registry import CHAMPION
from tests.conftest import TINY_DEPLOY

EDGES = [f"edge-{i:02d}" for i in range(1, 17)]
TYPES = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]
IMAGES = 12  # per edge and type


def holders(edge_index: int) -> list[str]:
    """Each edge holds 4 of the 8 types; each type lives on 8 edges."""
    return [TYPES[(edge_index + k) % len(TYPES)] for k in (0, 2, 4, 6)]


def write_edges(root: Path) -> None:
    """Tiny synthetic images: each type its own colour and stripe direction, with noise."""
    rng = np.random.default_rng(0)
    for i, edge in enumerate(EDGES):
        for t in holders(i):
            k = TYPES.index(t)
            folder = root / edge / t
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array([(k * 37) % 256, (k * 91) % 256, (k * 151) % 256])
            for j in range(IMAGES):
                img = np.broadcast_to(colour, (8, 8, 3)).astype(np.int16).copy()
                img[:: 2 if k % 2 else 1, :: 1 if k % 2 else 2] //= 2
                img += rng.integers(-20, 20, img.shape)
                # file names differ per edge: the held-out split is by file name
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{edge}-{t}-{j}.png")


def load_job(root: Path):
    return parse_job({
        "name": "load",
        "edges": [{"name": e, "data": str(root / "edges" / e)} for e in EDGES],
        "train": {"rounds": 1, "local_steps": 1, "batch_size": 8, "image_size": 8, "width": 4, "latent_dim": 4,
                  "min_edges": 12},
        "eval": {"feature_steps": 1, "feature_dim": 4, "num_generated": 16, "cas_steps": 1},
        "deploy": dict(TINY_DEPLOY),  # one training step cannot clear the quality floors; this tests scale
        "state_dir": str(root / "state"),
    })


def run(root: Path) -> tuple[dict, float]:
    write_edges(root / "edges")
    job = load_job(root)
    started = time.perf_counter()
    summary = run_local(job)
    return summary, time.perf_counter() - started


def check(root: Path, summary: dict) -> None:
    job = load_job(root)
    assert sorted(summary["types"]) == TYPES
    client = MlflowClient(job.tracking_uri)
    for t in TYPES:
        versions = client.search_model_versions(f"name='entgan-load-{t}'")
        assert [str(v.version) for v in versions] == ["1"]
        tags = versions[0].tags
        assert sorted(tags["entgan.edges"].split(",")) == sorted(e for i, e in enumerate(EDGES) if t in holders(i))
        assert int(tags["entgan.train_images"]) + int(tags["entgan.holdout_images"]) == 8 * IMAGES
        assert str(client.get_model_version_by_alias(f"entgan-load-{t}", CHAMPION).version) == "1"
    assert client.get_model_version_by_alias("entgan-load-evaluator", CHAMPION)


def test_sixteen_edges_by_eight_types_register_correctly(tmp_path):
    summary, _ = run(tmp_path)
    check(tmp_path, summary)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/entgan-load")
    summary, seconds = run(root)
    check(root, summary)
    print(f"16 edges x 8 types: pipeline ran and registered correctly in {seconds:.0f} s")
