"""The deploy side: synthetic obstacle images from the task library's champions.

`generate_images` writes one generator's samples as PNGs in ImageFolder layout
(`<out_dir>/<type>/<type>-<index:06d>.png`), the layout `entgan.data` reads, so generated images
can feed a robot's perception training directly. `generate_from_library` looks up each type's
*current* champion on every call: a version promoted a moment ago is used at once, with no
restart and no cache.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from entgan.bundle import Bundle
from entgan.config import TrainSpec
from entgan.data import to_uint8
from entgan.models import Generator
from entgan.registry import TaskLibrary, Version

ARCHITECTURE = ("latent_dim", "width", "image_size")  # the TrainSpec fields that shape a Generator
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


class NoChampionError(LookupError):
    """A data type has no deployed (champion) version in the task library yet."""


def _check_folder_name(data_type: str) -> None:
    if not data_type or data_type.startswith(".") or "/" in data_type or "\\" in data_type:
        raise ValueError(f"data type {data_type!r} cannot be a folder name; use a job data type such as 'box'")


def image_path(out_dir: Path, data_type: str, index: int) -> Path:
    """Where image number `index` of a type goes: `<out_dir>/<type>/<type>-<index:06d>.png`."""
    return Path(out_dir) / data_type / f"{data_type}-{index:06d}.png"


def generate_images(
    generator: Generator,
    n: int,
    out_dir: Path,
    data_type: str,
    *,
    seed: int | None = None,
    batch_size: int = 256,
    start_index: int = 0,
) -> list[Path]:
    """Write `n` generated images of `data_type` as PNGs numbered from `start_index`.

    Sampling runs batch by batch in eval mode without gradients. With a `seed` the same
    generator, seed and batch size give the same files; an existing file of the same name is
    overwritten. Returns the paths in index order.
    """
    _check_folder_name(data_type)
    if n < 0 or batch_size < 1 or start_index < 0:
        raise ValueError(
            f"generate_images: need n >= 0, batch_size >= 1, start_index >= 0; got {n}, {batch_size}, {start_index}"
        )
    folder = Path(out_dir) / data_type
    folder.mkdir(parents=True, exist_ok=True)
    paths = [image_path(out_dir, data_type, start_index + i) for i in range(n)]
    # A writer thread saves one batch's PNGs while the next batch is sampled (torch releases the
    # GIL while it computes): the files cost little more than the forward passes (benchmark 5).
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending, start = None, 0
        for pixels in sample_batches(generator, n, seed=seed, batch_size=batch_size):
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_pngs, pixels, paths[start : start + len(pixels)])
            start += len(pixels)
        if pending is not None:
            pending.result()
    return paths


def sample_batches(generator: Generator, n: int, *, seed: int | None = None, batch_size: int = 256):
    """`n` samples of `generator` as uint8 RGB batches (N, H, W, 3), `batch_size` at a time.

    The one sampling path of EntGAN's deploy side: `generate_images` (files) and the registered
    MLflow Model's `predict` (entgan.mlflow_model) both draw through it, so the same generator,
    seed and batch size give the same pixels either way."""
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    for start in range(0, n, batch_size):
        yield to_uint8(generator.sample(min(batch_size, n - start), generator=rng))


def _write_pngs(pixels: np.ndarray, paths: list[Path]) -> None:
    for data, path in zip(pngs(pixels), paths):
        path.write_bytes(data)


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


def champion_generator(library: TaskLibrary, data_type: str, train: TrainSpec) -> tuple[Generator, Version]:
    """The generator of a type's current champion, read from the registry now (never cached)."""
    version = library.champion(data_type)
    if version is None:
        raise NoChampionError(
            f"type {data_type!r} has no champion in {library.model_name(data_type)} yet; run the job first"
        )
    where = f"{version.name} v{version.version}"
    return generator_from_bundle(library.load(version), data_type, train, where=where), version


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
    generator = Generator(train.latent_dim, train.width, train.image_size)
    try:
        generator.load_state_dict(groups[group])
    except RuntimeError as err:
        raise ValueError(
            f"{where}: the {group} weights do not fit the generator its train spec describes ({err})"
        ) from None
    return generator.eval()


def types_with_champion(library: TaskLibrary) -> list[str]:
    """Every data type of the library's job that has a champion (the evaluator excluded)."""
    return [t for t in library.known_types() if library.champion(t) is not None]


def generate_from_library(
    library: TaskLibrary,
    train: TrainSpec,
    types: list[str] | None,
    n: int,
    out_dir: Path,
    seed: int | None = None,
    *,
    location: str | None = None,
) -> dict[str, list[Path]]:
    """`n` images per type from each type's current champion; `types=None`: every type with one.

    Every champion is looked up before any file is written, so a missing one fails the call
    (NoChampionError) without leaving half the output. The same `seed` is used for every type;
    without one a random seed is drawn, so that every dataset can be drawn again. What was
    written is recorded in MLflow as a synthetic dataset (`entgan.lineage`) at `location`: where
    the files end up (e.g. the s3:// URI of a KFP artifact); default: `out_dir` itself.
    """
    from entgan.lineage import record_synthetic_dataset

    if types is None:
        types = types_with_champion(library)
        if not types:
            raise NoChampionError(f"job {library.job!r} has no champion of any type yet; run the job first")
    champions = {t: champion_generator(library, t, train) for t in types}
    seed = secrets.randbelow(2**31) if seed is None else seed
    written = {t: generate_images(g, n, out_dir, t, seed=seed) for t, (g, _) in champions.items()}
    versions = {t: v for t, (_, v) in champions.items()}
    record_synthetic_dataset(library, versions, written, seed, location or Path(out_dir).resolve().as_uri())
    return written
