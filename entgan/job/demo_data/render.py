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

    python -m entgan.job.demo_data.render --out entgan/job/demo_data/obstacles32.npz \
        --per-type 400 --size 32 --seed 0 --sheet /tmp/demo_sheet.png

``pybullet`` is imported lazily, so importing this module (e.g. to reuse
``TYPES`` or ``contact_sheet``) works without it.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from entgan.job.demo_data.obstacles import BUILDERS, Placement, jitter_color, yaw_quat

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

# Scene colours (RGB in 0..1); a small random jitter is added per image.
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
    pb.changeVisualShape(plane, -1, rgbaColor=jitter_color(rng, FLOOR_COLORS, amount=0.05))


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
        p.GEOM_BOX, halfExtents=half, rgbaColor=jitter_color(rng, WALL_COLORS, amount=0.05)
    )
    pb.createMultiBody(
        baseMass=0.0,
        baseVisualShapeIndex=visual,
        basePosition=[
            cx + behind * math.cos(heading),
            cy + behind * math.sin(heading),
            WALL_HEIGHT / 2.0,
        ],
        baseOrientation=yaw_quat(pb, wall_yaw),
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
        "--out", default="entgan/job/demo_data/obstacles32.npz", help="output .npz path"
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
