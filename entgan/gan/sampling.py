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
from entgan.job.data import to_uint8, to_uint16
from entgan.job.spec import TrainSpec

# the TrainSpec fields that shape a Generator
ARCHITECTURE = ("latent_dim", "width", "image_size", "channels", "architecture")
# zlib level of the PNGs. A file system stores a small file in whole blocks (4 KiB on ext4, xfs,
# tmpfs), so when an image's raw bytes fit in one block, compressing saves no disk space: it is
# stored as is (level 0: ~9x less CPU than level 1; a 32x32 RGB PNG is 3.2 KB instead of ~1.8 KB,
# one block either way). Larger images use level 1 (the fastest that compresses). Benchmark 5.
BLOCK_BYTES = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_level(height: int, width: int, values_per_row: int = 3) -> int:
    """The zlib level for an image of this size (`values_per_row`: bytes per pixel, 3 for 8-bit
    RGB): 0 if it fits one file-system block, else 1."""
    framing = 100  # PNG signature and chunks, zlib header and checksum: ~70 bytes
    return 0 if height * (width * values_per_row + 1) + framing <= BLOCK_BYTES else 1


def png_format(channels: int, bits: int = 8) -> str:
    """What the PNGs of a generator with `channels` (and data of `bits` per value) are, in words."""
    if channels == 3:
        return "8-bit RGB"
    return f"{bits}-bit grayscale"


def bundle_bits(bundle: Bundle) -> int:
    """Bits per value of a registered model's PNGs: 16 for a type trained on 16-bit grayscale
    (depth), else 8 (every RGB model, and bundles saved before 16-bit data was kept)."""
    return 16 if bundle.header.extra.get("bits") == 16 else 8


def sample_batches(generator: Generator, n: int, *, seed: int | None = None, batch_size: int = 256, bits: int = 8):
    """`n` samples of `generator` as pixel batches (N, H, W, C), `batch_size` at a time: uint8,
    or uint16 over 0..65535 with `bits=16` (a 1-channel generator of 16-bit depth data).

    The one sampling path of EntGAN's deploy side: `generate_images` (files) and the registered
    MLflow Model's `predict` (`entgan.library.pyfunc`) both draw through it, so the same generator,
    seed and batch size give the same pixels either way."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    convert = to_uint16 if bits == 16 else to_uint8
    for start in range(0, n, batch_size):
        yield convert(generator.sample(min(batch_size, n - start), generator=rng))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pngs(pixels: np.ndarray):
    """PNG files of a batch of images (N, H, W, C), no row filter: C = 3 uint8 gives 8-bit RGB
    (colour type 2), C = 1 gives grayscale (colour type 0), 8-bit from uint8, 16-bit from uint16
    (PIL reads them back as modes RGB, L and I;16)."""
    count, height, width, channels = pixels.shape
    allowed = (np.uint8,) if channels == 3 else (np.uint8, np.uint16) if channels == 1 else ()
    if pixels.dtype not in allowed:
        raise ValueError(f"pngs: need uint8 (N, H, W, 3) or uint8/uint16 (N, H, W, 1), got {pixels.dtype} "
                         f"{pixels.shape}")
    depth = 8 * pixels.dtype.itemsize
    data = pixels.astype(">u2").view(np.uint8) if depth == 16 else pixels  # PNG stores 16-bit values big-endian
    row_bytes = width * channels * pixels.dtype.itemsize
    rows = np.zeros((count, height, row_bytes + 1), dtype=np.uint8)  # each row: filter type 0, then the values
    rows[:, :, 1:] = data.reshape(count, height, row_bytes)
    colour_type = 2 if channels == 3 else 0  # truecolour or grayscale
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)  # no interlace
    level = png_level(height, width, channels * pixels.dtype.itemsize)
    head, tail = PNG_SIGNATURE + _chunk(b"IHDR", header), _chunk(b"IEND", b"")
    for image in rows:
        yield head + _chunk(b"IDAT", zlib.compress(image.tobytes(), level)) + tail


def png_bytes(tile: np.ndarray) -> bytes:
    """One image (H, W, C) as a PNG file (see `pngs`; zlib level from `png_level`).

    For 32x32 tiles this takes a small part of the CPU time of PIL's `Image.save` (whose
    per-file plugin machinery costs more than the generator's forward pass; benchmark 5).
    Any PNG reader opens it (the tests read it back with PIL)."""
    return next(pngs(tile[None]))


def generator_from_bundle(bundle: Bundle, data_type: str, train: TrainSpec, where: str = "bundle") -> Generator:
    """Rebuild a type's generator from a registered model bundle (groups `<type>/G`, `<type>/D`).

    The architecture (latent_dim, width, image_size, channels) comes from the TrainSpec saved in
    the bundle's header (`extra["train"]`), so a champion trained with another width, image size
    or channel count still loads; a saved TrainSpec without `channels` is from before channels
    existed: RGB. `train` is the fallback for bundles written without one.
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
        # bundles saved before `channels` and `architecture` existed hold RGB DCGANs
        shape = {"channels": 3, "architecture": "dcgan", **{k: saved[k] for k in ARCHITECTURE if k in saved}}
        train = TrainSpec.model_validate({**train.model_dump(), **shape})
    generator = new_generator(train)
    try:
        generator.load_state_dict(groups[group])
    except RuntimeError as err:
        raise ValueError(
            f"{where}: the {group} weights do not fit the generator its train spec describes ({err})"
        ) from None
    return generator.eval()
