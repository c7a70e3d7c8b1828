"""Weight bundles: what crosses a node boundary.

A bundle is one safetensors file: tensors only, plus a JSON header in the safetensors metadata
(kind, round, edge, types, sample counts, sha256 of the tensors). Nothing is ever unpickled.

Tensor keys are `<group>/<param>`: `box/G/main.0.weight` is parameter `main.0.weight` of
the generator of type `box`; `features/body.0.weight` belongs to the domain feature network.
`pack` and `unpack` convert between that flat form and `{group: state_dict}`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]
HEADER_KEY = "entgan"
FORMAT_VERSION = 2  # 2: the sha256 covers the header too (1 covered the tensors only)
# Registered models written before format 2 stay readable from the task library (their tensors'
# checksum is still verified); bundles in transit between nodes must be format 2.
STORED_FORMATS = (1, 2)
# What a bundle may hold: weights, statistics and counters; nothing else is read.
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64, torch.uint8}


class BundleError(ValueError):
    """A bundle that must not be used (unreadable, tampered, or inconsistent)."""


@dataclass(frozen=True)
class BundleHeader:
    kind: str  # "edge-update", "global-state", "feature-stats"
    round: int = 0
    edge: str | None = None
    num_examples: dict[str, int] = field(default_factory=dict)  # per group, e.g. {"box": 120}
    extra: dict[str, object] = field(default_factory=dict)

    def canonical(self) -> str:
        """The header as the checksum sees it (everything but the checksum itself)."""
        return json.dumps({"format": FORMAT_VERSION, **self.__dict__}, sort_keys=True)

    def to_json(self, sha256: str) -> str:
        body = {"format": FORMAT_VERSION, "sha256": sha256, **self.__dict__}
        return json.dumps(body, sort_keys=True)


@dataclass(frozen=True)
class Bundle:
    header: BundleHeader
    tensors: dict[str, torch.Tensor]

    def groups(self) -> dict[str, StateDict]:
        return unpack(self.tensors)


def pack(groups: dict[str, StateDict]) -> dict[str, torch.Tensor]:
    """{"box/G": state_dict, ...} -> {"box/G/<param>": tensor, ...} (contiguous CPU copies).

    Half-precision tensors (from a GPU that trained in bf16/fp16) become float32: weights travel
    as float32 whatever the device; float64 statistics and integer counters keep their dtype."""
    flat = {}
    for group, state in groups.items():
        for key, tensor in state.items():
            if tensor.dtype in (torch.float16, torch.bfloat16):
                tensor = tensor.float()
            flat[f"{group}/{key}"] = tensor.detach().to("cpu").contiguous().clone()
    return flat


def unpack(tensors: dict[str, torch.Tensor]) -> dict[str, StateDict]:
    """Inverse of `pack`."""
    groups: dict[str, StateDict] = {}
    for key, tensor in tensors.items():
        group, _, param = key.rpartition("/")
        if not group:
            raise BundleError(f"tensor key {key!r} has no '<group>/' prefix")
        groups.setdefault(group, {})[param] = tensor
    return groups


def tensors_sha256(tensors: dict[str, torch.Tensor], header: str = "") -> str:
    """sha256 over the tensors (names, dtypes, shapes, bytes) and the canonical header text, so
    that neither the weights nor what the header claims (sender, round, sample counts) can be
    changed in transit unnoticed."""
    digest = hashlib.sha256(header.encode())
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        digest.update(key.encode())
        digest.update(str(t.dtype).encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_bundle(path: str | Path, tensors: dict[str, torch.Tensor], header: BundleHeader) -> str:
    """Write a bundle; returns the sha256 recorded in its header."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    sha = tensors_sha256(tensors, header.canonical())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={HEADER_KEY: header.to_json(sha)})
    return sha


def _parse_header(text: str) -> tuple[BundleHeader, str, object]:
    """The JSON header -> (header, sha256, format); TypeError/ValueError/KeyError when malformed."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise TypeError("the header is not a JSON object")
    sha, version = raw.pop("sha256"), raw.pop("format")
    header = BundleHeader(**raw)
    if not isinstance(sha, str):
        raise TypeError("sha256 is not a string")
    if not isinstance(header.kind, str) or not header.kind:
        raise TypeError("kind is not a non-empty string")
    if not isinstance(header.round, int) or isinstance(header.round, bool) or header.round < 0:
        raise TypeError(f"round {header.round!r} is not a whole number >= 0")
    if header.edge is not None and not isinstance(header.edge, str):
        raise TypeError("edge is not a string")
    counts = header.num_examples
    if not isinstance(counts, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in counts.items()
    ):
        raise TypeError("num_examples is not a mapping of names to counts >= 0")
    if not isinstance(header.extra, dict):
        raise TypeError("extra is not a JSON object")
    return header, sha, version


def read_header(path: str | Path) -> BundleHeader | None:
    """The header of a bundle without verifying anything, or None: only to name the sender of
    a bundle that `load_bundle` refused. Never trust what it returns."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return _parse_header((f.metadata() or {})[HEADER_KEY])[0]
    except Exception:  # noqa: BLE001 - unreadable: the caller names the file instead
        return None


def load_bundle(path: str | Path, kind: str | None = None, formats: tuple[int, ...] = (FORMAT_VERSION,)) -> Bundle:
    """Read and verify a bundle: safetensors only (never a pickle), then the header, the allowed
    dtypes, the sha256 of the tensors (and, from format 2, of the header) and finite values;
    `kind`, if given, must match; the format must be one of `formats`.

    Anything wrong raises BundleError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise BundleError(f"{path}: not a readable safetensors bundle ({err}); the sender must write it "
                          "with entgan.gan.bundle.save_bundle") from None
    if HEADER_KEY not in metadata:
        raise BundleError(f"{path}: bundle has no '{HEADER_KEY}' header; it was not written by EntGAN")
    try:
        header, sha, version = _parse_header(metadata[HEADER_KEY])
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{path}: bundle header is malformed ({err})") from None
    if version not in formats:
        expected = " or ".join(str(f) for f in formats)
        raise BundleError(f"{path}: bundle format {version!r} is not supported here (expected {expected}); "
                          "write it again with this version of EntGAN (retrain, or `make clean` a local demo)")
    if kind is not None and header.kind != kind:
        raise BundleError(f"{path}: expected a bundle of kind {kind!r}, got {header.kind!r}")
    for key, t in tensors.items():
        if t.dtype not in DTYPES:
            raise BundleError(f"{path}: tensor {key!r} has dtype {t.dtype}, which bundles never hold")
    if tensors_sha256(tensors, header.canonical() if version >= 2 else "") != sha:
        raise BundleError(f"{path}: checksum mismatch; the bundle was corrupted or altered in transit")
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BundleError(f"{path}: tensor {key!r} holds NaN or infinite values")
    return Bundle(header=header, tensors=tensors)
