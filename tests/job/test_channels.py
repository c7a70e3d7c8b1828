"""Channels follow the data: `train.channels` in the job, the channel count detected from the
edges' PIL modes at inspection, 16-bit grayscale read with its range, mixed counts refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from entgan.job.data import (
    DataError,
    inspect_edge,
    load_edge,
    load_images,
    mode_bits,
    mode_channels,
    resolve_channels,
)
from entgan.job.spec import JobError, TrainSpec, parse_job
from tests.conftest import tiny_job_dict
from tests.depth_data import write_depth_edges, write_gray_edges


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_train_channels_is_auto_by_default_and_takes_1_or_3(tmp_path):
    assert TrainSpec().channels == "auto" and TrainSpec().image_channels == 3  # unresolved: RGB
    assert TrainSpec(channels=1).image_channels == 1
    data = tiny_job_dict(tmp_path, ["edge-1"])
    data["train"]["channels"] = 2
    with pytest.raises(JobError, match="channels"):
        parse_job(data)
    job = parse_job(tiny_job_dict(tmp_path, ["edge-1"]))
    assert job.with_channels(1).train.channels == 1 and job.train.channels == "auto"


@pytest.mark.parametrize(("mode", "channels", "bits"), [
    ("L", 1, 8), ("LA", 1, 8), ("I;16", 1, 16), ("I", 1, 16), ("F", 1, 16),
    ("RGB", 3, 8), ("RGBA", 3, 8), ("P", 3, 8),
])
def test_pil_modes_map_to_channels_and_bits(mode, channels, bits):
    assert (mode_channels(mode), mode_bits(mode)) == (channels, bits)


def test_inspection_reports_each_types_modes(tmp_path):
    write_depth_edges(tmp_path / "depth", {"e1": {"box": 2, "pillar": 2}}, size=16)
    write_gray_edges(tmp_path / "gray", {"e1": {"box": 1.0}}, per_type=3)
    depth = inspect_edge("e1", tmp_path / "depth" / "e1", 0.2, 16)
    gray = inspect_edge("e1", tmp_path / "gray" / "e1", 0.2, 16)
    assert depth.modes == {"box": {"I;16": "box-0000.png"}, "pillar": {"I;16": "pillar-0000.png"}}
    assert set(gray.modes["box"]) == {"L"} and gray.channels() == {1}
    colour = inspect_edge("e1", _save(tmp_path / "rgb" / "box" / "a.png", np.zeros((8, 8, 3), np.uint8)).parents[1],
                          0.2, 16)
    assert colour.modes == {"box": {"RGB": "a.png"}} and colour.channels() == {3}


def test_auto_detects_1_and_3_channels_and_16_bit_types(tmp_path):
    write_depth_edges(tmp_path / "depth", {"e1": {"box": 2}, "e2": {"pillar": 2}}, size=16)
    reports = [inspect_edge(e, tmp_path / "depth" / e, 0.2, 16) for e in ("e1", "e2")]
    assert resolve_channels("auto", reports, ["box", "pillar"]) == (1, {"box": 16, "pillar": 16})
    write_gray_edges(tmp_path / "gray", {"e1": {"box": 1.0}}, per_type=2)
    gray = [inspect_edge("e1", tmp_path / "gray" / "e1", 0.2, 16)]
    assert resolve_channels("auto", gray, ["box"]) == (1, {"box": 8})
    _save(tmp_path / "rgb" / "box" / "a.png", np.zeros((8, 8, 3), np.uint8))
    rgb = [inspect_edge("e1", tmp_path / "rgb", 0.2, 16)]
    assert resolve_channels("auto", rgb, ["box"]) == (3, {"box": 8})
    assert resolve_channels(3, reports, ["box", "pillar"]) == (3, {"box": 8, "pillar": 8})  # as set: converted


def test_mixed_channel_counts_are_an_error_naming_a_file_of_each_and_the_fix(tmp_path):
    write_depth_edges(tmp_path / "e1", {"edge": {"box": 2}}, size=16)
    _save(tmp_path / "e2" / "table" / "t.png", np.zeros((8, 8, 3), np.uint8))
    reports = [inspect_edge("e1", tmp_path / "e1" / "edge", 0.2, 16), inspect_edge("e2", tmp_path / "e2", 0.2, 16)]
    with pytest.raises(DataError) as err:
        resolve_channels("auto", reports, ["box", "table"])
    message = str(err.value)
    assert "e1: box/box-0000.png (I;16)" in message and "e2: table/t.png (RGB)" in message
    assert "train.channels: 1 or 3" in message
    assert resolve_channels(1, reports, ["box", "table"]) == (1, {"box": 16, "table": 8})  # converted on load
    assert resolve_channels("auto", reports, ["box"])[0] == 1  # a type the job leaves out does not count


def test_16_bit_grayscale_keeps_its_range(tmp_path):
    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)  # 8 x 8
    path = _save(tmp_path / "d.png", values)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    x = load_images([path], 8, channels=1)
    assert x.shape == (1, 1, 8, 8) and x.dtype == torch.float32
    expected = torch.from_numpy(values.astype(np.float64) / 65535 * 2 - 1).float()
    assert torch.allclose(x[0, 0], expected, atol=1e-6)
    assert len(torch.unique(x)) == 4  # 0 and 1000 stay apart (8 bits would make them 0 and 3)
    rgb = load_images([path], 8, channels=3)  # read as colour: 8 bits, repeated, as EntGAN always did
    assert rgb.shape == (1, 3, 8, 8) and torch.equal(rgb[0, 0], rgb[0, 2])


def test_colour_read_as_1_channel_is_its_luma_and_grey_as_3_is_repeated(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    colour = _save(tmp_path / "c.png", rgb)
    gray = _save(tmp_path / "g.png", np.full((8, 8), 77, np.uint8))
    x = load_images([colour, gray], 8, channels=1)
    assert x.shape == (2, 1, 8, 8)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))[0, 0]
    assert torch.allclose(x[0], torch.tensor(luma / 127.5 - 1, dtype=torch.float32))
    assert torch.allclose(x[1], torch.tensor(77 / 127.5 - 1, dtype=torch.float32))
    y = load_images([gray], 8)  # the default stays RGB
    assert y.shape == (1, 3, 8, 8) and torch.equal(y[0, 0], y[0, 1])


def test_load_edge_reads_1_channel_images(tmp_path):
    write_depth_edges(tmp_path, {"e1": {"box": 6}}, size=16)
    train = load_edge(tmp_path / "e1", ["box"], 0.2, 8, holdout=False, channels=1)["box"]
    assert train.shape[1:] == (1, 8, 8) and -1 <= float(train.min()) < float(train.max()) <= 1
