"""The deploy side: synthetic obstacle images from the task library's champions.

`generate_images` writes one generator's samples as PNGs in ImageFolder layout
(`<out_dir>/<type>/<type>-<index:06d>.png`), the layout `entgan.job.data` reads, so generated images
can feed a robot's perception training directly. A 3-channel generator writes 8-bit RGB PNGs,
a 1-channel one grayscale PNGs: 16-bit when its type was trained on 16-bit data (depth), else
8-bit (`entgan.gan.sampling.pngs`). `generate_from_library` looks up each type's
*current* champion on every call: a version promoted a moment ago is used at once, with no
restart and no cache.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from entgan.gan.models import Generator
from entgan.gan.sampling import bundle_bits, generator_from_bundle, pngs, sample_batches
from entgan.job.spec import TrainSpec
from entgan.library.registry import TaskLibrary, Version


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
    bits: int = 8,
) -> list[Path]:
    """Write `n` generated images of `data_type` as PNGs numbered from `start_index`.

    Sampling runs batch by batch in eval mode without gradients. With a `seed` the same
    generator, seed and batch size give the same files; an existing file of the same name is
    overwritten. `bits=16`: a 1-channel generator's PNGs are 16-bit grayscale. Returns the paths
    in index order.
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
        for pixels in sample_batches(generator, n, seed=seed, batch_size=batch_size, bits=bits):
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_pngs, pixels, paths[start : start + len(pixels)])
            start += len(pixels)
        if pending is not None:
            pending.result()
    return paths


def _write_pngs(pixels: np.ndarray, paths: list[Path]) -> None:
    for data, path in zip(pngs(pixels), paths):
        path.write_bytes(data)


def champion_generator(library: TaskLibrary, data_type: str, train: TrainSpec) -> tuple[Generator, Version]:
    """The generator of a type's current champion, read from the registry now (never cached)."""
    generator, version, _ = champion_model(library, data_type, train)
    return generator, version


def champion_model(library: TaskLibrary, data_type: str, train: TrainSpec) -> tuple[Generator, Version, int]:
    """(generator, version, bits of its PNGs) of a type's current champion (see `champion_generator`)."""
    version = library.champion(data_type)
    if version is None:
        raise NoChampionError(no_champion_message(library, data_type))
    where = f"{version.name} v{version.version}"
    bundle = library.load(version)
    return generator_from_bundle(bundle, data_type, train, where=where), version, bundle_bits(bundle)


def no_champion_message(library: TaskLibrary, data_type: str) -> str:
    """Why a type has no champion: never registered (run the job), or registered and kept out by
    the deploy gate (its reasons, and what to do)."""
    name = library.model_name(data_type)
    latest = library.latest_version(data_type)
    if latest is None:
        return f"type {data_type!r} has no champion in {name} yet; run the job first (entgan run)"
    reason = latest.tags.get("entgan.gate_reason") or "no reason recorded"
    return (f"type {data_type!r} has no champion: the job ran and {name} v{latest.version} was registered but "
            f"kept out by the deploy gate ({reason}); train longer or on more images and run the job again, or "
            "relax the job's deploy: settings")


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
    """`n` images per type from each type's current champion; `types` None or empty: every type
    with one.

    Every champion is looked up before any file is written, so a missing one fails the call
    (NoChampionError) without leaving half the output. The same `seed` is used for every type;
    without one a random seed is drawn, so that every dataset can be drawn again. What was
    written is recorded in MLflow as a synthetic dataset (`entgan.library.lineage`) at `location`: where
    the files end up (e.g. the s3:// URI of a KFP artifact); default: `out_dir` itself.
    """
    from entgan.library.lineage import record_synthetic_dataset

    if not types:
        types = types_with_champion(library)
        if not types:
            known = library.known_types()
            why = "; ".join(no_champion_message(library, t) for t in known) if known else "run the job first"
            raise NoChampionError(f"job {library.job!r} has no champion of any type yet: {why}")
    champions = {t: champion_model(library, t, train) for t in types}
    seed = secrets.randbelow(2**31) if seed is None else seed
    written = {t: generate_images(g, n, out_dir, t, seed=seed, bits=bits) for t, (g, _, bits) in champions.items()}
    if not any(written.values()):  # never a lineage record of a dataset that holds nothing
        raise ValueError(f"generate: no image was written to {out_dir} (n={n}, types={types}); nothing recorded")
    versions = {t: v for t, (_, v, _) in champions.items()}
    record_synthetic_dataset(library, versions, written, seed, location or Path(out_dir).resolve().as_uri())
    return written
