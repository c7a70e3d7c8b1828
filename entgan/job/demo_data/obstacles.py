"""The five obstacle types of the demo data set as pybullet scenes (see `entgan.job.demo_data.render`).

Each builder places one obstacle of its type around the origin, resting on the floor, with
randomised size, yaw and colour, and returns its `Placement` so the camera can frame it.
``pybullet`` is imported lazily, so importing this module works without it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pybullet_utils.bullet_client import BulletClient

ROBOT_URDFS: tuple[tuple[str, tuple[float, float]], ...] = (
    # (path in pybullet_data, globalScaling range)
    ("r2d2.urdf", (0.7, 1.0)),
    ("husky/husky.urdf", (0.8, 1.1)),
    ("racecar/racecar.urdf", (1.8, 2.6)),
)
CLUTTER_URDFS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("lego/lego.urdf", (5.0, 8.0)),
    ("duck_vhacd.urdf", (2.5, 4.0)),
    ("jenga/jenga.urdf", (2.0, 3.0)),
    ("sphere_small.urdf", (3.0, 5.0)),
    ("cube_small.urdf", (2.0, 3.5)),
    ("teddy_vhacd.urdf", (2.5, 4.0)),
)

# Base colours (RGB in 0..1); a small random jitter is added per object.
BOX_COLORS = (
    (0.62, 0.46, 0.30),  # cardboard
    (0.55, 0.40, 0.25),  # darker cardboard
    (0.72, 0.58, 0.40),  # light kraft
    (0.50, 0.50, 0.50),  # grey
    (0.35, 0.36, 0.38),  # dark grey
    (0.60, 0.58, 0.52),  # greyish beige
)
PILLAR_COLORS = (
    (0.95, 0.45, 0.08),  # traffic-cone orange
    (0.62, 0.62, 0.60),  # concrete grey
    (0.95, 0.80, 0.10),  # safety yellow
    (0.80, 0.15, 0.12),  # red
    (0.25, 0.45, 0.80),  # blue
)
TABLE_COLORS = (
    (1.0, 1.0, 1.0),  # keep the wood texture
    (0.85, 0.65, 0.45),
    (0.55, 0.40, 0.30),
    (0.80, 0.80, 0.80),
    (0.45, 0.45, 0.50),
)


@dataclass
class Placement:
    """Bounding information of the placed obstacle (world frame, metres)."""

    center: tuple[float, float]  # xy centre of the obstacle footprint
    radius: float  # horizontal half-extent
    height: float  # top of the obstacle above the floor


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def jitter_color(
    rng: np.random.Generator, palette: Sequence[Sequence[float]], amount: float = 0.06
) -> list[float]:
    """Pick a palette colour, add a little noise and return it as RGBA."""
    base = np.asarray(palette[rng.integers(len(palette))], dtype=float)
    rgb = np.clip(base + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return [float(c) for c in rgb] + [1.0]


def _random_color(rng: np.random.Generator) -> list[float]:
    """A saturated random colour (for toys and robots), RGBA."""
    import colorsys

    h = rng.uniform(0.0, 1.0)
    s = rng.uniform(0.5, 1.0)
    v = rng.uniform(0.55, 1.0)
    return [float(c) for c in colorsys.hsv_to_rgb(h, s, v)] + [1.0]


def yaw_quat(pb: BulletClient, yaw: float) -> Sequence[float]:
    return pb.getQuaternionFromEuler([0.0, 0.0, yaw])


def _body_aabb(pb: BulletClient, body: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of the (collision) AABBs of all links of a body."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for link in range(-1, pb.getNumJoints(body)):
        a, b = pb.getAABB(body, link)
        lo = np.minimum(lo, a)
        hi = np.maximum(hi, b)
    return lo, hi


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence C-level stdout (the URDF importer prints warnings for e.g. husky)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _load_on_floor(
    pb: BulletClient, urdf: str, xy: Sequence[float], yaw: float, scale: float
) -> tuple[int, np.ndarray, np.ndarray]:
    """Load a URDF at ``xy`` and lift it so that its lowest point touches z=0."""
    with _quiet_stdout():
        body = pb.loadURDF(
            urdf, [xy[0], xy[1], 0.0], yaw_quat(pb, yaw), useFixedBase=True, globalScaling=scale
        )
    lo, hi = _body_aabb(pb, body)
    pos, orn = pb.getBasePositionAndOrientation(body)
    dz = -lo[2]
    pb.resetBasePositionAndOrientation(body, [pos[0], pos[1], pos[2] + dz], orn)
    lo[2] += dz
    hi[2] += dz
    return body, lo, hi


def _recolor(pb: BulletClient, body: int, rgba: Sequence[float]) -> None:
    """Tint every visual shape of a body."""
    for link in range(-1, pb.getNumJoints(body)):
        pb.changeVisualShape(body, link, rgbaColor=list(rgba))


def _placement_from_aabb(lo: np.ndarray, hi: np.ndarray) -> Placement:
    center = ((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0)
    radius = 0.5 * float(max(hi[0] - lo[0], hi[1] - lo[1]))
    return Placement(center=center, radius=radius, height=float(hi[2]))


# --------------------------------------------------------------------------
# obstacle builders: each places one obstacle around the origin
# --------------------------------------------------------------------------


def build_box(pb: BulletClient, rng: np.random.Generator) -> Placement:
    """A single box or a stack of up to three boxes (each smaller on top)."""
    import pybullet as p

    n_boxes = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    z = 0.0
    radius = 0.0
    base_yaw = rng.uniform(0.0, math.pi)
    max_xy = 0.5
    for i in range(n_boxes):
        sx, sy = rng.uniform(0.15, max_xy, 2)
        sz = rng.uniform(0.15, 0.5 if n_boxes == 1 else 0.4)
        half = [sx / 2.0, sy / 2.0, sz / 2.0]
        visual = pb.createVisualShape(
            p.GEOM_BOX, halfExtents=half, rgbaColor=jitter_color(rng, BOX_COLORS)
        )
        offset = rng.uniform(-0.04, 0.04, 2) if i else np.zeros(2)
        yaw = base_yaw + (rng.uniform(-0.4, 0.4) if i else 0.0)
        pb.createMultiBody(
            baseMass=0.0,
            baseVisualShapeIndex=visual,
            basePosition=[offset[0], offset[1], z + sz / 2.0],
            baseOrientation=yaw_quat(pb, yaw),
        )
        radius = max(radius, 0.5 * math.hypot(sx, sy))
        z += sz
        max_xy = max(0.15, min(sx, sy))  # the next box is not wider than this one
    return Placement(center=(0.0, 0.0), radius=radius, height=z)


def build_table(pb: BulletClient, rng: np.random.Generator) -> Placement:
    """The pybullet_data table, scaled and optionally tinted."""
    scale = rng.uniform(0.5, 0.9)
    # The table's origin is at floor level (legs start at z=0), so no lift.
    body = pb.loadURDF(
        "table/table.urdf",
        [0.0, 0.0, 0.0],
        yaw_quat(pb, rng.uniform(0.0, math.pi)),
        useFixedBase=True,
        globalScaling=scale,
    )
    _recolor(pb, body, jitter_color(rng, TABLE_COLORS, amount=0.05))
    lo, hi = _body_aabb(pb, body)
    return _placement_from_aabb(lo, hi)


def build_robot(pb: BulletClient, rng: np.random.Generator) -> Placement:
    """Another robot (r2d2 / husky / racecar), sometimes re-coloured."""
    urdf, (s_lo, s_hi) = ROBOT_URDFS[rng.integers(len(ROBOT_URDFS))]
    body, lo, hi = _load_on_floor(
        pb, urdf, (0.0, 0.0), rng.uniform(0.0, 2.0 * math.pi), rng.uniform(s_lo, s_hi)
    )
    if rng.uniform() < 0.35:
        _recolor(pb, body, _random_color(rng))
    return _placement_from_aabb(lo, hi)


def build_clutter(pb: BulletClient, rng: np.random.Generator) -> Placement:
    """3-7 small random items scattered close together on the floor."""
    n_items = int(rng.integers(3, 8))
    spread = rng.uniform(0.15, 0.3)
    lo_all = np.full(3, np.inf)
    hi_all = np.full(3, -np.inf)
    for _ in range(n_items):
        urdf, (s_lo, s_hi) = CLUTTER_URDFS[rng.integers(len(CLUTTER_URDFS))]
        xy = rng.uniform(-spread, spread, 2)
        body, lo, hi = _load_on_floor(
            pb, urdf, xy, rng.uniform(0.0, 2.0 * math.pi), rng.uniform(s_lo, s_hi)
        )
        _recolor(pb, body, _random_color(rng))
        lo_all = np.minimum(lo_all, lo)
        hi_all = np.maximum(hi_all, hi)
    return _placement_from_aabb(lo_all, hi_all)


def build_pillar(pb: BulletClient, rng: np.random.Generator) -> Placement:
    """One upright cylinder."""
    import pybullet as p

    radius = rng.uniform(0.08, 0.25)
    height = rng.uniform(0.6, 1.5)
    visual = pb.createVisualShape(
        p.GEOM_CYLINDER,
        radius=radius,
        length=height,
        rgbaColor=jitter_color(rng, PILLAR_COLORS, amount=0.05),
    )
    pb.createMultiBody(
        baseMass=0.0, baseVisualShapeIndex=visual, basePosition=[0.0, 0.0, height / 2.0]
    )
    return Placement(center=(0.0, 0.0), radius=radius, height=height)


BUILDERS: dict[str, Callable[[Any, np.random.Generator], Placement]] = {
    "box": build_box,
    "table": build_table,
    "robot": build_robot,
    "clutter": build_clutter,
    "pillar": build_pillar,
}
