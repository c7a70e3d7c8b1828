"""Edge data: ImageFolder-style folders (`<root>/<type>/*.png`), inspection, loading, the demo set.

Raw images are only ever read by the edge that holds them. What leaves an edge is counts and,
per type, the PIL modes of its files with one file name each (`inspect_edge`: the job's channel
count, and an error that names the files), weights and feature statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from entgan.job.spec import NAME_HINT, NAME_PATTERN
from entgan.job.storage import local_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DEMO_FILE = "obstacles32.npz"


class DataError(ValueError):
    """Edge data that cannot be used; the message names the file or folder and the fix."""


@dataclass(frozen=True)
class TypeCounts:
    train: int
    holdout: int


@dataclass(frozen=True)
class EdgeReport:
    """What `inspect_edge` tells the cloud: counts and image modes per type, never pixels."""

    edge: str
    types: dict[str, TypeCounts]
    uncertain: dict[str, int] = field(default_factory=dict)  # per type: images the evaluator can't place
    fingerprint: str = ""  # a digest of the images' names and bytes: equal for two copies of one data set
    modes: dict[str, dict[str, str]] = field(default_factory=dict)  # per type: PIL mode -> its first file

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EdgeReport:
        raw = json.loads(text)
        types = {t: TypeCounts(**c) for t, c in raw["types"].items()}
        return cls(edge=raw["edge"], types=types, uncertain=raw.get("uncertain", {}),
                   fingerprint=raw.get("fingerprint", ""), modes=raw.get("modes", {}))

    def channels(self) -> set[int]:
        """The image channel counts of this edge's files (`mode_channels` of each mode seen)."""
        return {mode_channels(m) for modes in self.modes.values() for m in modes}


def is_holdout(file_name: str, fraction: float) -> bool:
    """Deterministic train/held-out split by file name: stable as new images arrive."""
    digest = hashlib.sha1(file_name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def list_images(root: str | Path) -> dict[str, list[Path]]:
    """{type: sorted image files} for an edge folder; hidden folders and other files ignored."""
    root = local_folder(root)  # an s3:// prefix is mirrored into a local cache first (entgan.job.storage)
    _check_folder(root)
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if files:
            if not re.match(NAME_PATTERN, sub.name):  # a type's name becomes a registry model name
                raise DataError(f"{sub}: type folder name {sub.name!r} is not a safe name; rename the folder: {NAME_HINT}")
            found[sub.name] = files
    return found


def _check_folder(root: Path) -> None:
    """A DataError saying what the edge's data path is instead of a folder of images."""
    fix = "fix the job's edge data path"
    try:
        root.resolve(strict=False)
    except (RuntimeError, OSError):  # Python 3.11: RuntimeError("Symlink loop ...")
        raise DataError(f"edge data folder {root} is a symlink that points to itself (a loop); {fix}") from None
    if root.is_file():
        raise DataError(f"edge data folder {root} is a file, not a folder; {fix}")
    if root.is_symlink() and not root.exists():
        raise DataError(f"edge data folder {root} is a symlink to {os.readlink(root)}, which does not exist; {fix}")
    if not root.is_dir():
        raise DataError(f"edge data folder {root} does not exist; create it or {fix}")


def other_files(root: str | Path) -> dict[str, int]:
    """{suffix: count} of the files in an edge's type folders that are not read as images."""
    counts: dict[str, int] = {}
    for f in Path(root).glob("*/*"):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in IMAGE_SUFFIXES:
            counts[f.suffix.lower() or "(none)"] = counts.get(f.suffix.lower() or "(none)", 0) + 1
    return counts


def split(files: list[Path], fraction: float, holdout: bool) -> list[Path]:
    return [f for f in files if is_holdout(f.name, fraction) == holdout]


# PIL modes by what they hold. Grayscale-like modes (one value per pixel; LA's alpha is dropped)
# are 1-channel; colour and palette modes are 3. 16-bit and wider modes keep their range: read as
# float in [0, 1] (I;16 and I divided by 65535, F taken as [0, 1]), never clipped to 8 bits.
ONE_CHANNEL_MODES = ("L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")
THREE_CHANNEL_MODES = ("RGB", "RGBA", "P")
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # more than 8 bits per pixel


def mode_channels(mode: str) -> int:
    """Channels of a PIL image mode: 1 for L, LA, I;16, I, F; 3 for RGB, RGBA, P."""
    return 1 if mode in ONE_CHANNEL_MODES else 3


def mode_bits(mode: str) -> int:
    """Bits per pixel value of a PIL image mode as EntGAN keeps it: 16 for I;16, I, F, else 8."""
    return 16 if mode in WIDE_MODES else 8


def _decode(path: Path, image_size: int, channels: int | None) -> tuple[np.ndarray, str]:
    """(pixels (S, S, C), the file's PIL mode). C = `channels`, or the mode's own count when None.

    8-bit images come back as uint8. A 16-bit (I;16, I) or float (F) image read as 1 channel comes
    back as float32 in [0, 1] (divided by 65535), so a depth map keeps its range; read as 3
    channels it is scaled to 8 bits (divided by 257) and repeated, as EntGAN always did."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ONE_CHANNEL_MODES + THREE_CHANNEL_MODES:
                raise DataError(f"{path}: unsupported image mode {mode}; save it as an 8-bit RGB or grayscale PNG "
                                "(or 16-bit grayscale for depth)")
            channels = channels or mode_channels(mode)
            if mode in WIDE_MODES:
                raw = np.asarray(img, dtype=np.float64)
                if channels == 3:  # as EntGAN always read them: 8 bits, repeated to RGB
                    img = Image.fromarray(np.clip(raw * (255 if mode == "F" else 1 / 257), 0, 255).astype(np.uint8))
                else:
                    values = np.clip(raw / (1.0 if mode == "F" else 65535.0), 0, 1).astype(np.float32)
                    wide = Image.fromarray(values, mode="F")
                    if wide.size != (image_size, image_size):
                        wide = wide.resize((image_size, image_size), Image.Resampling.BOX)
                    return np.asarray(wide, dtype=np.float32)[:, :, None], mode
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.BOX)
            return np.asarray(img, dtype=np.uint8).reshape(image_size, image_size, channels), mode
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image ({err}); remove or replace the file") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: image is too large to decode safely ({err}); downscale it") from None


def load_images(files: list[Path], image_size: int, channels: int = 3) -> torch.Tensor:
    """Decode images into a float tensor (N, C, S, S) in [-1, 1], C = `channels` (1 or 3; an RGB
    file read as 1 channel becomes its luma, a grayscale one read as 3 is repeated). 16-bit
    grayscale keeps its range (see `_decode`). A bad file raises DataError."""
    if not files:
        return torch.empty(0, channels, image_size, image_size)
    arrays = [_decode(f, image_size, channels)[0] for f in files]
    if all(a.dtype == np.uint8 for a in arrays):
        return to_tensor(np.stack(arrays))
    unit = np.stack([a.astype(np.float32) / 255 if a.dtype == np.uint8 else a for a in arrays])  # [0, 1]
    return torch.from_numpy(unit).permute(0, 3, 1, 2).mul(2).sub(1.0)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, C) -> float (N, C, S, S) in [-1, 1]."""
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, C, S, S) in [-1, 1] -> uint8 (N, S, S, C)."""
    scaled = images.detach().clamp(-1, 1).add(1).mul(127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_uint16(images: torch.Tensor) -> np.ndarray:
    """float (N, C, S, S) in [-1, 1] -> uint16 (N, S, S, C) over 0..65535 (16-bit depth's range)."""
    scaled = images.detach().double().clamp(-1, 1).add(1).mul(65535 / 2).round()
    return scaled.permute(0, 2, 3, 1).numpy().astype(np.uint16)


def inspect_edge(edge: str, root: str | Path, holdout_fraction: float, image_size: int) -> EdgeReport:
    """Count each type's training and held-out images, decoding every file once so that a
    corrupt image is reported now, by name, before any training starts."""
    types = {}
    found = list_images(root)
    if not found:
        others = other_files(local_folder(root))
        seen = f" (found only {', '.join(f'{n} {s}' for s, n in sorted(others.items()))})" if others else ""
        raise DataError(f"edge {edge!r}: {root} holds no images{seen}; images are read from <folder>/<type>/ with "
                        f"the extensions {' '.join(IMAGE_SUFFIXES)}: add them as <folder>/<type>/*.png "
                        "(convert others) or remove the edge from the job")
    digest = hashlib.sha256()
    modes: dict[str, dict[str, str]] = {}
    for data_type, files in found.items():
        for f in files:
            _, mode = _decode(f, image_size, None)
            modes.setdefault(data_type, {}).setdefault(mode, f.name)
            digest.update(f"{data_type}/{f.name}\0".encode() + hashlib.sha256(f.read_bytes()).digest())
        held = len(split(files, holdout_fraction, holdout=True))
        types[data_type] = TypeCounts(train=len(files) - held, holdout=held)
    return EdgeReport(edge=edge, types=types, fingerprint=digest.hexdigest(), modes=modes)


def resolve_channels(setting: int | str, reports: list[EdgeReport],
                     data_types: list[str]) -> tuple[int, dict[str, int]]:
    """The job's image channels and each type's bits per value (16 for 16-bit grayscale data, which
    generation then writes as 16-bit PNGs; else 8), from the edges' inspection reports.

    `setting` is train.channels: 1 or 3 is taken as given (files of the other kind are converted
    on load); `auto` is the data's count, and one job has one: its feature network and CAS
    classifiers score every type, so images of 1 and 3 channels among `data_types` are an
    error that names a file of each kind and the fix."""
    seen: dict[int, str] = {}  # channels -> an example "edge: type/file (mode)"
    wide: dict[str, bool] = {}
    for report in reports:
        for data_type in data_types:
            for mode, name in sorted(report.modes.get(data_type, {}).items()):
                seen.setdefault(mode_channels(mode), f"{report.edge}: {data_type}/{name} ({mode})")
                wide[data_type] = wide.get(data_type, False) or mode_bits(mode) == 16
    if setting == "auto" and len(seen) > 1:
        raise DataError(f"the job's images mix channel counts: {seen[1]} is 1-channel (grayscale) but {seen[3]} is "
                        "3-channel (colour); one job trains one channel count (its evaluator scores every type): "
                        "convert the images to one kind (e.g. PIL's Image.convert('L') or 'RGB'), give the other "
                        "kind its own job, or set train.channels: 1 or 3 to convert them as they are read")
    channels = int(setting) if setting != "auto" else (next(iter(seen)) if seen else 3)
    return channels, {t: 16 if channels == 1 and wide.get(t) else 8 for t in data_types}


def load_edge(
    root: str | Path, data_types: list[str], holdout_fraction: float, image_size: int, *, holdout: bool,
    channels: int = 3,
) -> dict[str, torch.Tensor]:
    """Load an edge's training (or held-out) images of the given types as `channels`-channel tensors."""
    available = list_images(root)
    out = {}
    for data_type in data_types:
        if data_type not in available:
            raise DataError(f"{root}: no images of type {data_type!r}; add {Path(root) / data_type}/*.png")
        out[data_type] = load_images(split(available[data_type], holdout_fraction, holdout), image_size,
                                     channels)
    return out


# ---------------------------------------------------------------- the bundled demo dataset


def demo_dataset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The bundled robot-camera obstacle views: (images uint8 NxSxSx3, labels, type names)."""
    with resources.as_file(resources.files("entgan.job.demo_data") / DEMO_FILE) as path:
        with np.load(path, allow_pickle=False) as npz:
            return npz["images"], npz["labels"], [str(t) for t in npz["types"]]


# Which demo types each demo edge holds and what share of each type's images it gets.
# Non-IID on purpose: every edge holds a different mix, every type lives on two edges.
DEMO_SPLIT: dict[str, dict[str, float]] = {
    "edge-1": {"box": 0.6, "table": 0.4},
    "edge-2": {"table": 0.6, "robot": 0.4},
    "edge-3": {"robot": 0.6, "clutter": 0.4},
    "edge-4": {"clutter": 0.6, "box": 0.4},
}


# The lifelong demo: wave 1 is DEMO_SPLIT with 300 images per type; in wave 2 the remaining
# images of two types arrive at two edges, and a new type, `pillar`, appears at two others.
DEMO_WAVES: dict[int, list[tuple[dict[str, dict[str, float]], int | None, int]]] = {
    1: [(DEMO_SPLIT, 300, 0)],
    2: [
        ({"edge-1": {"box": 1.0}, "edge-3": {"robot": 1.0}}, None, 300),
        ({"edge-2": {"pillar": 0.5}, "edge-4": {"pillar": 0.5}}, None, 0),
    ],
}


def materialize_wave(root: str | Path, wave: int) -> dict[str, dict[str, int]]:
    """Write one wave of the lifelong demo (see DEMO_WAVES) into the edge folders under `root`."""
    if wave not in DEMO_WAVES:
        raise DataError(f"demo wave {wave} does not exist; use one of {sorted(DEMO_WAVES)}")
    counts: dict[str, dict[str, int]] = {}
    for split_plan, per_type, offset in DEMO_WAVES[wave]:
        for edge, types in materialize_demo(root, split_plan, per_type=per_type, offset=offset).items():
            counts.setdefault(edge, {}).update(types)
    return counts


def materialize_demo(
    root: str | Path,
    split_plan: dict[str, dict[str, float]] | None = None,
    *,
    per_type: int | None = None,
    offset: int = 0,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Write the demo set as edge folders `<root>/<edge>/<type>/<n>.png`; returns the counts.

    Each type's images are shuffled (the same order every time) and cut among the edges that
    hold it, by their shares. `per_type` images from position `offset` of that order are used
    (tiny test jobs, waves of arrivals). Existing files are overwritten, so the result is the
    same every time.
    """
    if per_type is not None and (isinstance(per_type, bool) or per_type < 1):
        raise DataError(f"per_type is {per_type}; give a whole number of images per type of at least 1 "
                        "(or leave it out for all of them)")
    split_plan = split_plan or DEMO_SPLIT
    images, labels, names = demo_dataset()
    counts: dict[str, dict[str, int]] = {edge: {} for edge in split_plan}
    for data_type in sorted({t for shares in split_plan.values() for t in shares}):
        if data_type not in names:
            raise DataError(f"demo dataset has no type {data_type!r}; it has {names}")
        order = np.random.default_rng(seed + names.index(data_type)).permutation(np.flatnonzero(labels == names.index(data_type)))
        idx = order[offset : offset + per_type if per_type is not None else None]
        holders = [(e, s[data_type]) for e, s in split_plan.items() if data_type in s]
        total = sum(share for _, share in holders)
        start = 0
        for i, (edge, share) in enumerate(holders):
            stop = len(idx) if i == len(holders) - 1 else start + round(len(idx) * share / total)
            folder = Path(root) / edge / data_type
            folder.mkdir(parents=True, exist_ok=True)
            for j in idx[start:stop]:
                Image.fromarray(images[j]).save(folder / f"{data_type}-{j:05d}.png")
            counts[edge][data_type] = int(stop - start)
            start = stop
    return counts
