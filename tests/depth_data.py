"""Single-channel test sets written here, in numpy: 16-bit depth maps of a robot camera, and the
demo's colour images converted to 8-bit grayscale.

`depth_image` ray-casts a pinhole camera 0.3-0.6 m above a floor, pitched slightly down, at one
obstacle 0.8-2.5 m ahead: a `box` (a flat front face) or a `pillar` (a cylinder, depth curving
around it). Depth along each ray in metres, stored as a 16-bit PNG (mode I;16): 0..FAR metres
over 0..65535, as depth cameras store millimetres. Deterministic per (type, index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from entgan.job.data import materialize_demo

FAR = 5.0  # metres at 65535
DEPTH_TYPES = ("box", "pillar")


def depth_image(data_type: str, index: int, size: int = 16) -> np.ndarray:
    """One depth map (size x size) in metres, float64."""
    rng = np.random.default_rng([DEPTH_TYPES.index(data_type), index])
    height = rng.uniform(0.3, 0.6)
    pitch = rng.uniform(0.05, 0.2)  # radians below the horizon
    focal = size / (2 * np.tan(np.radians(55) / 2))
    v, u = np.mgrid[0:size, 0:size] + 0.5
    down = pitch + np.arctan((v - size / 2) / focal)  # each row's ray angle below the horizon
    side = np.arctan((u - size / 2) / focal)
    depth = np.where(down > 1e-3, height / np.maximum(np.sin(down), 1e-3), FAR)  # the floor
    distance = rng.uniform(0.8, 2.5)
    offset = rng.uniform(-0.3, 0.3)  # the obstacle's centre, sideways
    x = distance * np.tan(side) - offset  # where each column's ray passes the obstacle's plane
    if data_type == "box":
        half, top = rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.5)
        front = np.full_like(depth, distance)
        inside = np.abs(x) < half
    else:
        half, top = rng.uniform(0.06, 0.12), rng.uniform(0.8, 1.2)
        front = distance - np.sqrt(np.clip(half**2 - x**2, 0, None))
        inside = np.abs(x) < half
    rise = height - top  # obstacle top relative to the camera (negative: above it)
    below_top = down >= np.arctan(rise / front)
    above_floor = front * np.tan(down) <= height
    hit = inside & below_top & above_floor
    depth = np.where(hit, front / np.cos(side), depth)
    return np.clip(depth, 0, FAR)


def write_depth_edges(root: Path, split: dict[str, dict[str, int]], size: int = 16) -> Path:
    """Edge folders `<root>/<edge>/<type>/<type>-<i>.png` of 16-bit depth PNGs: `split` is
    {edge: {type: count}}; the images of one type are numbered across its edges."""
    start: dict[str, int] = {}
    for edge, types in split.items():
        for data_type, count in types.items():
            folder = root / edge / data_type
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start.get(data_type, 0), start.get(data_type, 0) + count):
                values = np.round(depth_image(data_type, i, size) / FAR * 65535).astype(np.uint16)
                Image.fromarray(values).save(folder / f"{data_type}-{i:04d}.png")  # 16-bit grayscale PNG
            start[data_type] = start.get(data_type, 0) + count
    return root


def write_gray_edges(root: Path, split: dict[str, dict[str, float]], per_type: int) -> Path:
    """The demo's colour edges (`materialize_demo`), every image converted to 8-bit grayscale (L)."""
    materialize_demo(root, split, per_type=per_type)
    for path in root.glob("*/*/*.png"):
        with Image.open(path) as img:
            gray = img.convert("L")
        gray.save(path)
    return root
