"""A 16-bit depth job through the compiled pipeline and kfp.local (`entgan run`'s path): the
plan resolves `train.channels: auto` to 1, its artifact says so, and the champions serve 16-bit
grayscale PNGs through `entgan generate`. The step-by-step checks are in
tests/steps/test_channels_job.py; this one shows the components carry the count."""

import pytest
from PIL import Image

from entgan.cli.verbs import generate, run_local
from entgan.job.spec import parse_job
from tests.conftest import tiny_job_dict
from tests.depth_data import write_depth_edges

pytestmark = pytest.mark.e2e


def test_a_depth_job_runs_through_kfp_local_and_serves_16_bit_grayscale(tmp_path, capsys):
    write_depth_edges(tmp_path / "edges", {"edge-1": {"box": 20, "pillar": 12}, "edge-2": {"box": 12, "pillar": 20}})
    data = tiny_job_dict(tmp_path, ["edge-1", "edge-2"])
    data["train"]["rounds"] = 1
    data["eval"].update(cas_steps=20, cas_seeds=1)  # a smoke run: the CAS classifiers' steps are not the point
    job = parse_job(data)
    summary = run_local(job)
    assert {t: info["champion"] for t, info in summary["types"].items()} == {"box": "1", "pillar": "1"}
    assert "images: 1 channel(s) (train.channels: auto); box is 16-bit; pillar is 16-bit" in capsys.readouterr().out
    written = generate(job, None, 2, tmp_path / "out", seed=0)
    for files in written.values():
        with Image.open(files[0]) as img:
            assert (img.mode, img.size) == ("I;16", (16, 16))
