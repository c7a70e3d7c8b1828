import numpy as np
import pytest
from PIL import Image

from entgan.job.data import (
    DEMO_SPLIT,
    DataError,
    demo_dataset,
    inspect_edge,
    is_holdout,
    list_images,
    load_edge,
    load_images,
    materialize_demo,
)


def _png(path, mode="RGB", size=(16, 16), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value, 0, 255 - value)).save(path)
    return path


def test_demo_dataset_has_the_obstacle_types():
    images, labels, types = demo_dataset()
    assert types[:4] == ["box", "table", "robot", "clutter"] and len(types) >= 4
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    for i in range(len(types)):
        assert (labels == i).sum() >= 200  # a few hundred per type
    assert images.std() > 20  # not blank


def test_materialize_demo_is_non_iid(tmp_path):
    counts = materialize_demo(tmp_path, per_type=20)
    held = {edge: set(types) for edge, types in counts.items()}
    assert held == {edge: set(shares) for edge, shares in DEMO_SPLIT.items()}
    assert len({frozenset(t) for t in held.values()}) == len(held)  # every edge holds a different mix
    for t in ["box", "table", "robot", "clutter"]:
        assert sum(c.get(t, 0) for c in counts.values()) == 20
    assert list_images(tmp_path / "edge-1").keys() == {"box", "table"}


def test_holdout_split_is_deterministic_and_near_fraction():
    names = [f"img-{i}.png" for i in range(2000)]
    held = [n for n in names if is_holdout(n, 0.2)]
    assert held == [n for n in names if is_holdout(n, 0.2)]
    assert 0.17 < len(held) / len(names) < 0.23


def test_inspect_counts_train_and_holdout(tmp_path):
    for i in range(30):
        _png(tmp_path / "box" / f"{i}.png")
    _png(tmp_path / "table" / "0.png")
    (tmp_path / "notes.txt").write_text("ignored")
    report = inspect_edge("e1", tmp_path, 0.2, 16)
    assert report.types["box"].train + report.types["box"].holdout == 30
    assert report.types["table"].train + report.types["table"].holdout == 1
    assert type(report).from_json(report.to_json()) == report


def test_corrupt_image_names_the_file(tmp_path):
    _png(tmp_path / "box" / "good.png")
    bad = tmp_path / "box" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"bad\.png: cannot read image .*remove or replace"):
        inspect_edge("e1", tmp_path, 0.2, 16)


def test_truncated_image_names_the_file(tmp_path):
    path = _png(tmp_path / "box" / "t.png", size=(64, 64))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="t.png"):
        load_images([path], 16)


def test_modes_and_sizes_are_normalised(tmp_path):
    files = [
        _png(tmp_path / "a.png", "L"),
        _png(tmp_path / "b.png", "RGBA", value=(10, 20, 30, 40)),
        _png(tmp_path / "c.png", "RGB", size=(40, 24)),
        _png(tmp_path / "d.png", "I;16", value=65535),
    ]
    images = load_images(files, 16)
    assert images.shape == (4, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    assert images[3].min() > 0.99  # 16-bit white stays white


def test_missing_folder_and_type_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist; create it or fix the job's edge data path"):
        list_images(tmp_path / "nope")
    _png(tmp_path / "box" / "0.png")
    with pytest.raises(DataError, match="no images of type 'robot'"):
        load_edge(tmp_path, ["robot"], 0.2, 16, holdout=False)
