"""Procedural renderer for the EntGAN demo obstacle dataset.

The scene imitates what the forward camera of a small mobile robot sees
shortly before a possible collision: a camera 0.3-0.6 m above a floor,
looking roughly forward (slightly down, with small random yaw/pitch
jitter) at a single obstacle 0.8-2.5 m away.  The obstacle is one of five
types (the label is the index in ``TYPES``):

* ``box``     - one box or a small stack of 1-3 boxes in muted cardboard
                browns / greys,
* ``table``   - the pybullet_data table, scaled 0.5-0.9, random tint,
* ``robot``   - another robot (r2d2, husky or racecar from pybullet_data),
* ``clutter`` - 3-7 small items (lego bricks, ducks, jenga blocks, balls,
                cubes, teddies) scattered on the floor close together,
* ``pillar``  - one upright cylinder (cone orange, concrete grey, yellow...).

Randomised per image: floor tint, light direction / intensity, object
colours (where sensible), object yaw, position jitter, camera height,
viewing direction and distance.  The distance is chosen so that the
obstacle fills a reasonable part of the frame.  Nothing is simulated: the
objects are only placed so that they rest on the floor, and the CPU
``ER_TINY_RENDERER`` renders them in a ``DIRECT`` (headless) connection.

Images are rendered at ``RENDER_SIZE`` and downsampled with a Lanczos
filter to ``--size`` for anti-aliasing.  Every type uses its own
``np.random.default_rng(seed + type_index)``, so a run is reproducible and
the images of one type do not depend on the count of another.

Usage (from the repository root, needs ``pybullet``, ``numpy``, ``pillow``)::

    python -m entgan.demo_data.render --out entgan/demo_data/obstacles32.npz \
        --per-type 400 --size 32 --seed 0 --sheet /tmp/demo_sheet.png

``pybullet`` is imported lazily, so importing this module (e.g. to reuse
``TYPES`` or ``contact_sheet``) works without it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pybullet_utils.bullet_client import BulletClient

TYPES: tuple[str, ...] = ("box", "table", "robot", "clutter", "pillar")

RENDER_SIZE = 96  # render resolution before downsampling
FOV_DEG = 55.0  # vertical field of view of the robot camera
NEAR, FAR = 0.05, 20.0
CAM_HEIGHT = (0.3, 0.6)  # camera height above the floor [m]
CAM_DISTANCE = (0.8, 2.5)  # horizontal camera-to-obstacle-centre distance [m]
FRAME_FILL = (0.3, 0.7)  # target bounding-box area as a fraction of the image
MAX_WIDTH = 0.95  # largest bounding-box width as a fraction of the frame side
MAX_HEIGHT = 0.8  # largest bounding-box height as a fraction of the frame side
YAW_JITTER_DEG = 8.0
PITCH_JITTER_DEG = 4.0
MAX_PITCH_DEG = 5.0  # the camera looks at most slightly up
WALL_PROBABILITY = 0.6  # chance of a distant wall behind the obstacle (else open sky)
WALL_BEHIND = (2.0, 5.0)  # wall distance behind the obstacle [m]
WALL_HEIGHT = 3.0

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
WALL_COLORS = (
    (0.80, 0.76, 0.66),  # beige
    (0.62, 0.64, 0.66),  # grey
    (0.55, 0.62, 0.70),  # blue-grey
    (0.68, 0.72, 0.60),  # pale green
    (0.75, 0.68, 0.62),  # warm grey
)
FLOOR_COLORS = (
    (1.0, 1.0, 1.0),
    (0.75, 0.75, 0.80),
    (0.85, 0.80, 0.70),
    (0.60, 0.65, 0.60),
    (0.70, 0.60, 0.55),
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


def _jitter_color(
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


def _yaw_quat(pb: BulletClient, yaw: float) -> Sequence[float]:
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
            urdf, [xy[0], xy[1], 0.0], _yaw_quat(pb, yaw), useFixedBase=True, globalScaling=scale
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
            p.GEOM_BOX, halfExtents=half, rgbaColor=_jitter_color(rng, BOX_COLORS)
        )
        offset = rng.uniform(-0.04, 0.04, 2) if i else np.zeros(2)
        yaw = base_yaw + (rng.uniform(-0.4, 0.4) if i else 0.0)
        pb.createMultiBody(
            baseMass=0.0,
            baseVisualShapeIndex=visual,
            basePosition=[offset[0], offset[1], z + sz / 2.0],
            baseOrientation=_yaw_quat(pb, yaw),
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
        _yaw_quat(pb, rng.uniform(0.0, math.pi)),
        useFixedBase=True,
        globalScaling=scale,
    )
    _recolor(pb, body, _jitter_color(rng, TABLE_COLORS, amount=0.05))
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
        rgbaColor=_jitter_color(rng, PILLAR_COLORS, amount=0.05),
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


# --------------------------------------------------------------------------
# scene, camera and rendering
# --------------------------------------------------------------------------


def connect() -> BulletClient:
    """Open a headless (DIRECT) pybullet client with pybullet_data on the path."""
    import pybullet as p
    import pybullet_data
    from pybullet_utils.bullet_client import BulletClient

    pb = BulletClient(connection_mode=p.DIRECT)
    pb.setAdditionalSearchPath(pybullet_data.getDataPath())
    return pb


def reset_scene(pb: BulletClient, rng: np.random.Generator) -> None:
    """Empty the world and add a (randomly tinted) floor."""
    pb.resetSimulation()
    plane = pb.loadURDF("plane.urdf", [0.0, 0.0, 0.0], useFixedBase=True)
    pb.changeVisualShape(plane, -1, rgbaColor=_jitter_color(rng, FLOOR_COLORS, amount=0.05))


def camera_pose(rng: np.random.Generator, place: Placement) -> tuple[np.ndarray, np.ndarray]:
    """Random robot-camera pose looking at the obstacle; returns (eye, unit forward)."""
    # Pick the distance so that the obstacle's projected bounding box covers a
    # random fraction FRAME_FILL of the image area, but is at most MAX_WIDTH
    # wide and MAX_HEIGHT tall (as fractions of the frame) so it is not cut off.
    frame = 2.0 * math.tan(math.radians(FOV_DEG) / 2.0)  # frame side at 1 m
    width = 1.6 * place.radius  # typical horizontal extent over random yaws
    near_offset = 0.7 * place.radius  # centre -> visible near side
    cam_h = rng.uniform(*CAM_HEIGHT)
    # The camera pitches up at most MAX_PITCH_DEG: keep the top of tall obstacles in view.
    top_angle = math.radians(MAX_PITCH_DEG) + 0.8 * math.radians(FOV_DEG) / 2.0
    distance = max(
        math.sqrt(width * place.height / rng.uniform(*FRAME_FILL)) / frame,
        width / (frame * MAX_WIDTH) + near_offset,
        place.height / (frame * MAX_HEIGHT) + near_offset,
        (place.height - cam_h) / math.tan(top_angle) + near_offset,
    )
    distance = float(np.clip(distance, *CAM_DISTANCE))
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    cx, cy = place.center
    eye = np.array([cx + distance * math.cos(azimuth), cy + distance * math.sin(azimuth), cam_h])
    d = np.array([cx, cy, 0.5 * place.height]) - eye
    yaw = math.atan2(d[1], d[0]) + math.radians(rng.uniform(-YAW_JITTER_DEG, YAW_JITTER_DEG))
    pitch = math.atan2(d[2], math.hypot(d[0], d[1]))
    pitch += math.radians(rng.uniform(-PITCH_JITTER_DEG, PITCH_JITTER_DEG))
    pitch = min(pitch, math.radians(MAX_PITCH_DEG))  # ~level or down: floor stays visible
    forward = np.array(
        [math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)]
    )
    return eye, forward


def add_backdrop(
    pb: BulletClient, rng: np.random.Generator, eye: np.ndarray, place: Placement
) -> None:
    """Maybe add a distant wall behind the obstacle (indoor scene); else open sky."""
    import pybullet as p

    if rng.uniform() >= WALL_PROBABILITY:
        return
    cx, cy = place.center
    heading = math.atan2(cy - eye[1], cx - eye[0])
    behind = place.radius + rng.uniform(*WALL_BEHIND)
    wall_yaw = heading + rng.uniform(-0.5, 0.5)
    half = [0.05, 15.0, WALL_HEIGHT / 2.0]  # thin in x, wide in y before rotation
    visual = pb.createVisualShape(
        p.GEOM_BOX, halfExtents=half, rgbaColor=_jitter_color(rng, WALL_COLORS, amount=0.05)
    )
    pb.createMultiBody(
        baseMass=0.0,
        baseVisualShapeIndex=visual,
        basePosition=[
            cx + behind * math.cos(heading),
            cy + behind * math.sin(heading),
            WALL_HEIGHT / 2.0,
        ],
        baseOrientation=_yaw_quat(pb, wall_yaw),
    )


def render_image(
    pb: BulletClient, rng: np.random.Generator, obstacle: str, size: int
) -> np.ndarray:
    """Build one random scene with ``obstacle`` and return an RGB uint8 (size, size, 3) image."""
    import pybullet as p
    from PIL import Image

    reset_scene(pb, rng)
    place = BUILDERS[obstacle](pb, rng)
    eye, forward = camera_pose(rng, place)
    add_backdrop(pb, rng, eye, place)
    view = pb.computeViewMatrix(eye.tolist(), (eye + forward).tolist(), [0.0, 0.0, 1.0])
    proj = pb.computeProjectionMatrixFOV(FOV_DEG, 1.0, NEAR, FAR)
    light_az = rng.uniform(0.0, 2.0 * math.pi)
    light_el = rng.uniform(math.radians(30.0), math.radians(80.0))
    light_dir = [
        math.cos(light_el) * math.cos(light_az),
        math.cos(light_el) * math.sin(light_az),
        math.sin(light_el),
    ]
    _, _, rgba, _, _ = pb.getCameraImage(
        RENDER_SIZE,
        RENDER_SIZE,
        viewMatrix=view,
        projectionMatrix=proj,
        renderer=p.ER_TINY_RENDERER,
        lightDirection=light_dir,
        lightColor=[1.0, 1.0, 1.0],
        lightDistance=10.0,
        lightAmbientCoeff=float(rng.uniform(0.45, 0.65)),
        lightDiffuseCoeff=float(rng.uniform(0.45, 0.65)),
        lightSpecularCoeff=float(rng.uniform(0.0, 0.1)),
        shadow=1,
    )
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(RENDER_SIZE, RENDER_SIZE, 4)[:, :, :3]
    if size != RENDER_SIZE:
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.LANCZOS))
    return rgb


def render_dataset(
    per_type: int, size: int, seed: int, verbose: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``per_type`` images of every type; returns (images, labels)."""
    pb = connect()
    images: list[np.ndarray] = []
    labels: list[int] = []
    try:
        for label, name in enumerate(TYPES):
            rng = np.random.default_rng(seed + label)
            t0 = time.perf_counter()
            for _ in range(per_type):
                images.append(render_image(pb, rng, name, size))
                labels.append(label)
            if verbose:
                dt = time.perf_counter() - t0
                print(
                    f"[{label + 1}/{len(TYPES)}] {name:8s} {per_type} images in {dt:6.1f} s",
                    flush=True,
                )
    finally:
        pb.disconnect()
    return np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def contact_sheet(
    images: np.ndarray, labels: np.ndarray, path: str, per_row: int = 10, upscale: int = 4
) -> None:
    """Save a PNG grid with the first ``per_row`` images of every label in one row each."""
    from PIL import Image

    rows = []
    for label in np.unique(labels):
        row = images[labels == label][:per_row]
        if len(row) < per_row:
            pad = np.zeros((per_row - len(row),) + row.shape[1:], dtype=np.uint8)
            row = np.concatenate([row, pad])
        rows.append(np.concatenate(list(row), axis=1))
    sheet = np.concatenate(rows, axis=0)
    sheet = np.repeat(np.repeat(sheet, upscale, axis=0), upscale, axis=1)
    Image.fromarray(sheet).save(path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="entgan/demo_data/obstacles32.npz", help="output .npz path"
    )
    parser.add_argument("--per-type", type=int, default=400, help="images per obstacle type")
    parser.add_argument("--size", type=int, default=32, help="output image side length")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument("--sheet", default=None, help="also write a contact-sheet PNG here")
    parser.add_argument(
        "--sheet-only",
        action="store_true",
        help="only write the contact sheet from an existing --out",
    )
    args = parser.parse_args(argv)

    if args.sheet_only:
        data = np.load(args.out)
        images, labels = data["images"], data["labels"]
    else:
        t0 = time.perf_counter()
        images, labels = render_dataset(args.per_type, args.size, args.seed)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        np.savez_compressed(
            args.out,
            images=images,
            labels=labels,
            types=np.asarray(TYPES),
            seed=np.int64(args.seed),
            per_type=np.int64(args.per_type),
        )
        print(
            f"wrote {args.out}: images {images.shape} in {time.perf_counter() - t0:.1f} s, "
            f"{os.path.getsize(args.out) / 1e6:.2f} MB"
        )
    if args.sheet:
        contact_sheet(images, labels, args.sheet)
        print(f"wrote contact sheet {args.sheet}")


if __name__ == "__main__":
    main()
