import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from entgan.bundle import BundleError, BundleHeader, load_bundle, pack, save_bundle, unpack


def _state():
    return {"box/G": {"main.0.weight": torch.randn(4, 3), "main.1.num_batches_tracked": torch.tensor(2)}}


def test_round_trip_keeps_tensors_and_header(tmp_path):
    header = BundleHeader(kind="edge-update", round=3, edge="edge-1", num_examples={"box": 12})
    sha = save_bundle(tmp_path / "b.safetensors", pack(_state()), header)
    bundle = load_bundle(tmp_path / "b.safetensors")
    assert bundle.header == header
    assert len(sha) == 64
    original = _state()["box/G"]
    loaded = bundle.groups()["box/G"]
    assert loaded.keys() == original.keys()
    assert loaded["main.0.weight"].shape == (4, 3)


def test_pack_unpack_inverse():
    groups = {"features": {"body.0.weight": torch.ones(2)}, "box/D": {"main.0.weight": torch.zeros(1)}}
    assert {g: list(s) for g, s in unpack(pack(groups)).items()} == {g: list(s) for g, s in groups.items()}


def test_tampered_bundle_is_refused(tmp_path):
    path = tmp_path / "b.safetensors"
    save_bundle(path, {"box/G/w": torch.zeros(8)}, BundleHeader(kind="edge-update"))
    raw = bytearray(path.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x3f"  # flip the last float to 1.0
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(path)


def test_non_finite_values_are_refused(tmp_path):
    path = tmp_path / "b.safetensors"
    save_bundle(path, {"box/D/w": torch.tensor([1.0, float("nan")])}, BundleHeader(kind="edge-update"))
    with pytest.raises(BundleError, match="NaN or infinite"):
        load_bundle(path)


def test_foreign_safetensors_without_header_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(BundleError, match="no 'entgan' header"):
        load_bundle(path)


def test_pickle_payload_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(BundleError, match="not a readable safetensors bundle"):
        load_bundle(path)
    torch_file = tmp_path / "torch.pt"
    torch.save({"w": torch.zeros(2)}, torch_file)
    with pytest.raises(BundleError):
        load_bundle(torch_file)


def test_malformed_header_is_refused(tmp_path):
    path = tmp_path / "b.safetensors"
    save_file({"w/x": torch.zeros(2)}, str(path), metadata={"entgan": json.dumps({"kind": "x"})})
    with pytest.raises(BundleError, match="header is malformed"):
        load_bundle(path)
