"""Drawing images from a generator, and PNG files of them: the one sampling path below both the
task library (`entgan.library.generate` writes files) and a registered MLflow Model's `predict`
(`entgan.library.pyfunc`), so the same generator, seed and batch size give the same pixels.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from entgan.gan.bundle import Bundle
from entgan.gan.models import Generator
from entgan.gan.strategies import new_generator
from entgan.job.data import to_uint8
from entgan.job.spec import TrainSpec

ARCHITECTURE = ("latent_dim", "width", "image_size", "architecture")  # the TrainSpec fields that shape a G
# zlib level of the PNGs. A file system stores a small file in whole blocks (4 KiB on ext4, xfs,
# tmpfs), so when an image's raw bytes fit in one block, compressing saves no disk space: it is
# stored as is (level 0: ~9x less CPU than level 1; a 32x32 RGB PNG is 3.2 KB instead of ~1.8 KB,
# one block either way). Larger images use level 1 (the fastest that compresses). Benchmark 5.
BLOCK_BYTES = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_level(height: int, width: int) -> int:
    """The zlib level for an RGB image of this size: 0 if it fits one file-system block, else 1."""
    framing = 100  # PNG signature and chunks, zlib header and checksum: ~70 bytes
    return 0 if height * (width * 3 + 1) + framing <= BLOCK_BYTES else 1


def sample_batches(generator: Generator, n: int, *, seed: int | None = None, batch_size: int = 256):
    """`n` samples of `generator` as uint8 RGB batches (N, H, W, 3), `batch_size` at a time.

    The one sampling path of EntGAN's deploy side: `generate_images` (files) and the registered
    MLflow Model's `predict` (`entgan.library.pyfunc`) both draw through it, so the same generator,
    seed and batch size give the same pixels either way."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    for start in range(0, n, batch_size):
        yield to_uint8(generator.sample(min(batch_size, n - start), generator=rng))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pngs(pixels: np.ndarray):
    """PNG files of a batch of uint8 RGB images (N, H, W, 3): 8-bit RGB, no row filter."""
    count, height, width, _ = pixels.shape
    rows = np.zeros((count, height, width * 3 + 1), dtype=np.uint8)  # each row: filter type 0, then RGB
    rows[:, :, 1:] = pixels.reshape(count, height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    head, tail, level = PNG_SIGNATURE + _chunk(b"IHDR", header), _chunk(b"IEND", b""), png_level(height, width)
    for image in rows:
        yield head + _chunk(b"IDAT", zlib.compress(image.tobytes(), level)) + tail


def png_bytes(tile: np.ndarray) -> bytes:
    """One uint8 RGB image (H, W, 3) as a PNG file (zlib level from `png_level`).

    For 32x32 tiles this takes a small part of the CPU time of PIL's `Image.save` (whose
    per-file plugin machinery costs more than the generator's forward pass; benchmark 5).
    Any PNG reader opens it (the tests read it back with PIL)."""
    return next(pngs(tile[None]))


def generator_from_bundle(bundle: Bundle, data_type: str, train: TrainSpec, where: str = "bundle") -> Generator:
    """Rebuild a type's generator from a registered model bundle (groups `<type>/G`, `<type>/D`).

    The architecture (latent_dim, width, image_size) comes from the TrainSpec saved in the
    bundle's header (`extra["train"]`), so a champion trained with another width or image size
    still loads; `train` is the fallback for bundles written without one.
    """
    groups = bundle.groups()
    group = f"{data_type}/G"
    if group not in groups:
        raise ValueError(
            f"{where}: the bundle has no {group!r} weights (it has {sorted(groups)}); "
            f"it is not a model of type {data_type!r}"
        )
    saved = bundle.header.extra.get("train")
    if isinstance(saved, dict):  # only the shape fields: other TrainSpec fields may have changed since
        train = TrainSpec.model_validate({**train.model_dump(), **{k: saved[k] for k in ARCHITECTURE if k in saved}})
    generator = new_generator(train)
    try:
        generator.load_state_dict(groups[group])
    except RuntimeError as err:
        raise ValueError(
            f"{where}: the {group} weights do not fit the generator its train spec describes ({err})"
        ) from None
    return generator.eval()
