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
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle that must not be used (unreadable, tampered, or inconsistent)."""


@dataclass(frozen=True)
class BundleHeader:
    kind: str  # "edge-update", "global-state", "feature-stats"
    round: int = 0
    edge: str | None = None
    num_examples: dict[str, int] = field(default_factory=dict)  # per group, e.g. {"box": 120}
    extra: dict[str, object] = field(default_factory=dict)

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
    """{"box/G": state_dict, ...} -> {"box/G/<param>": tensor, ...} (contiguous CPU copies)."""
    flat = {}
    for group, state in groups.items():
        for key, tensor in state.items():
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


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
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
    sha = tensors_sha256(tensors)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={HEADER_KEY: header.to_json(sha)})
    return sha


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle: safetensors only, checksum and finite values checked."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{path}: not a readable safetensors bundle ({err})") from None
    if HEADER_KEY not in metadata:
        raise BundleError(f"{path}: bundle has no '{HEADER_KEY}' header; it was not written by EntGAN")
    try:
        raw = json.loads(metadata[HEADER_KEY])
        sha = raw.pop("sha256")
        version = raw.pop("format")
        header = BundleHeader(**raw)
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{path}: bundle header is malformed ({err})") from None
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {version} is not supported (expected {FORMAT_VERSION})")
    if tensors_sha256(tensors) != sha:
        raise BundleError(f"{path}: checksum mismatch; the bundle was corrupted or altered in transit")
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise BundleError(f"{path}: tensor {key!r} holds NaN or infinite values")
    return Bundle(header=header, tensors=tensors)
