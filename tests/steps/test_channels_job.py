"""A grayscale and a 16-bit depth job end to end through the in-process step runner
(tests/steps_driver.py): `train.channels: auto` detects 1 channel at inspection, every step
trains and scores 1-channel models, the registry records the channel count, and `entgan
generate` and the served MLflow Model write grayscale PNGs (16-bit for depth data). A job whose
edges mix grayscale and colour fails at planning, naming a file of each kind."""

from __future__ import annotations

from io import BytesIO

import mlflow
import numpy as np
import pytest
from PIL import Image

from entgan.cli.verbs import generate
from entgan.gan.bundle import load_bundle
from entgan.job.data import materialize_demo
from entgan.job.spec import parse_job
from entgan.library.registry import library_for
from entgan.steps.plan import Plan
from tests.conftest import tiny_job_dict
from tests.depth_data import write_depth_edges, write_gray_edges
from tests.steps_driver import drive

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

DEPTH_SPLIT = {"edge-1": {"box": 20, "pillar": 12}, "edge-2": {"box": 12, "pillar": 20}}


def _job(root, **train):
    data = tiny_job_dict(root, ["edge-1", "edge-2"])
    data["train"].update(rounds=1, **train)
    return parse_job(data)


def _modes(folder) -> set[str]:
    modes = set()
    for path in folder.iterdir():
        with Image.open(path) as img:
            modes.add(img.mode)
    return modes


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    """One run of a tiny job over 16-bit depth maps (channels: auto)."""
    root = tmp_path_factory.mktemp("depth")
    write_depth_edges(root / "edges", DEPTH_SPLIT, size=16)
    job = _job(root)
    out = drive(job, root / "work")
    assert out.error is None, out.error
    return job, root, out


def test_auto_trains_1_channel_models_on_depth_data(depth_run):
    job, root, out = depth_run
    plan = Plan.load(root / "work" / "plan")
    assert plan.channels == 1 and plan.bits == {"box": 16, "pillar": 16}
    assert sorted(out.summary["types"]) == ["box", "pillar"]
    for t in ("box", "pillar"):
        header = load_bundle(root / "work" / "samples" / t / "model.safetensors").header
        assert header.extra["train"]["channels"] == 1 and header.extra["bits"] == 16
        weights = load_bundle(root / "work" / "samples" / t / "model.safetensors").groups()[f"{t}/G"]
        assert [w for w in weights.values() if w.dim() == 4][-1].shape[1] == 1  # the image layer: one map
    library = library_for(job)
    version = library.champion("box")
    assert version.tags["entgan.channels"] == "1" and version.tags["entgan.png"] == "16-bit grayscale"
    description = library.client.get_model_version(version.name, version.version).description
    assert description.endswith("It draws 16-bit grayscale PNGs.")


def test_generate_writes_16_bit_grayscale_pngs_of_depth_models(depth_run, tmp_path):
    job, _, _ = depth_run
    written = generate(job, None, 3, tmp_path / "out", seed=4)
    assert {t: len(f) for t, f in written.items()} == {"box": 3, "pillar": 3}
    assert _modes(tmp_path / "out" / "box") == {"I;16"}
    with Image.open(written["box"][0]) as img:
        values = np.asarray(img)
        assert img.size == (16, 16) and values.dtype.itemsize == 2 and values.max() > 255  # the 16-bit range


def test_the_served_model_returns_16_bit_grayscale_and_says_so(depth_run):
    job, _, _ = depth_run
    mlflow.set_tracking_uri(job.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/entgan-{job.name}-pillar@champion")
        out = model.predict({"n": [2], "seed": [1]})
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.metadata["entgan"] == {"data_type": "pillar", "channels": 1, "png": "16-bit grayscale"}
    assert model.model_config["channels"] == 1 and model.model_config["train"]["channels"] == 1
    for data in out["png"]:
        with Image.open(BytesIO(data)) as img:
            assert img.mode == "I;16" and img.size == (16, 16)


def test_a_grayscale_job_serves_8_bit_grayscale(tmp_path):
    write_gray_edges(tmp_path / "edges", {"edge-1": {"box": 0.6, "table": 0.4}, "edge-2": {"box": 0.4, "table": 0.6}},
                     per_type=24)
    job = _job(tmp_path)
    out = drive(job, tmp_path / "work")
    assert out.error is None, out.error
    written = generate(job, ["table"], 2, tmp_path / "out", seed=0)
    assert _modes(tmp_path / "out" / "table") == {"L"} and len(written["table"]) == 2
    assert library_for(job).champion("table").tags["entgan.png"] == "8-bit grayscale"


def test_mixed_channels_fail_at_planning_naming_the_files_and_the_fix(tmp_path):
    write_depth_edges(tmp_path / "edges", {"edge-1": {"box": 14}}, size=16)
    materialize_demo(tmp_path / "edges", {"edge-2": {"table": 1.0}}, per_type=14)
    out = drive(_job(tmp_path), tmp_path / "work")
    message = str(out.error)
    assert "edge-1: box/box-0000.png (I;16) is 1-channel" in message
    assert "edge-2: table/" in message and "(RGB) is 3-channel" in message and "train.channels: 1 or 3" in message
    converted = drive(_job(tmp_path, channels=3), tmp_path / "work-3")  # the fix: convert on load
    assert converted.error is None, converted.error
    assert converted.summary["types"].keys() == {"box", "table"}


def test_the_rgb_demo_stays_3_channel_8_bit(demo_edges, tmp_path):
    from entgan.job.data import inspect_edge
    from entgan.steps.plan import make_plan

    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2", "edge-3", "edge-4"])
    job = parse_job(data)
    reports = [inspect_edge(e.name, e.data, 0.2, 16) for e in job.edges]
    plan = make_plan(job, reports)
    assert plan.channels == 3 and set(plan.bits.values()) == {8}
    assert plan.resolve(job).train.channels == 3 and all(r.channels() == {3} for r in reports)
