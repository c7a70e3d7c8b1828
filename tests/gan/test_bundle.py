import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from entgan.gan.bundle import BundleError, BundleHeader, load_bundle, pack, save_bundle, unpack


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


def _format_1_bundle(path, tensors, header: BundleHeader, tamper: bool = False):
    """A bundle as EntGAN wrote it before format 2: the sha256 covers the tensors only."""
    from entgan.gan.bundle import HEADER_KEY, tensors_sha256

    sha = tensors_sha256(tensors)
    if tamper:
        tensors = {k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={HEADER_KEY: json.dumps({"format": 1, "sha256": sha, **header.__dict__})})


def test_format_1_models_stay_readable_from_the_library_but_not_in_transit(tmp_path):
    from entgan.gan.bundle import STORED_FORMATS

    header = BundleHeader(kind="model", num_examples={"box": 300}, extra={"types": ["box"]})
    tensors = pack(_state())
    _format_1_bundle(tmp_path / "old.safetensors", tensors, header)
    bundle = load_bundle(tmp_path / "old.safetensors", formats=STORED_FORMATS)  # as TaskLibrary.load reads
    assert bundle.header == header
    assert torch.equal(bundle.groups()["box/G"]["main.0.weight"], tensors["box/G/main.0.weight"])
    with pytest.raises(BundleError, match=r"format 1 is not supported here \(expected 2\).*retrain"):
        load_bundle(tmp_path / "old.safetensors")  # an edge update must be format 2
    _format_1_bundle(tmp_path / "altered.safetensors", tensors, header, tamper=True)
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(tmp_path / "altered.safetensors", formats=STORED_FORMATS)
