"""Deterministic procedural RGB-D scenes: a textured room with boxes and spheres seen by a pinhole camera.

No real dataset can be downloaded on our machines, so generated scenes are the default image source of the demo
and the metric ground truth of the tests and the learning benchmark. Every pixel's depth is exact (ray casting, no
rasterisation error), and the image carries the cues a monocular network learns from: textures fixed in world
coordinates (their frequency shrinks with distance), Lambertian shading under a point light whose fall-off depends
on distance, distance fog, occlusion edges that coincide with depth edges, and varied colours.

Conventions: world y is up, the floor is y = 0. The camera frame is OpenCV's (x right, y down, z forward) and
depth is z-depth in metres (the distance along the optical axis, as a depth sensor reports), 0.5 to 10 m.
The intrinsics are NYU Depth v2's at 640x480, scaled for other sizes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shards.scene_geometry import (
    FLOAT,
    ROOM_PALETTE_SIZE,
    Box,
    Sphere,
    box_surface,
    camera_rays,
    draw_layout,
    hit_box,
    hit_room,
    hit_sphere,
    pixel_window,
    room_palette,
    room_surface,
    specular_highlight,
    sphere_surface,
)

logger = logging.getLogger(__name__)

#: NYU Depth v2 colour-camera intrinsics at 640x480 (fx, fy, cx, cy), scaled to other sizes.
NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)
NYU_SIZE = (640, 480)

#: The depth every generated pixel lies within, metres.
MIN_DEPTH = 0.5
MAX_DEPTH = 10.0

@dataclass
class Scene:
    """One generated RGB-D frame. ``image`` uint8 (H, W, 3) RGB; ``depth`` float32 (H, W) z-depth in metres, 0 where
    invalid; ``valid`` bool (H, W) (all True unless rendered with sensor-like holes); ``intrinsics`` (fx, fy, cx, cy)
    in pixels."""

    image: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    intrinsics: tuple[float, float, float, float] = NYU_INTRINSICS


def scaled_intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """NYU's intrinsics scaled to ``width`` x ``height`` (the field of view stays NYU's)."""
    sx, sy = width / NYU_SIZE[0], height / NYU_SIZE[1]
    fx, fy, cx, cy = NYU_INTRINSICS
    return fx * sx, fy * sy, cx * sx, cy * sy



def render_scene(seed: int, width: int = 640, height: int = 480, holes: bool = False) -> Scene:
    """Render scene number ``seed``: the same seed gives the same scene at any call (numpy ``default_rng``).

    ``holes=True`` adds sensor-like invalid pixels (depth 0, ``valid`` False): beyond a far limit, on dark
    surfaces, on specular highlights, along occlusion edges (the depth camera's shadow) and in random blobs.
    """
    if width < 8 or height < 8:
        raise ValueError(f"scene size {width}x{height} is too small; use at least 8x8")
    rng = np.random.default_rng(seed)
    layout = draw_layout(rng)
    intrinsics = scaled_intrinsics(width, height)
    origin = layout.camera.position
    rays = camera_rays(layout.camera, width, height, intrinsics)  # (3, H, W)

    depth, face = hit_room(layout.room, origin, rays)  # (H, W) z-depth in metres, room face id
    objects: list[Box | Sphere] = [*layout.boxes, *layout.spheres]
    owner = np.full((height, width), -1, dtype=np.int16)  # index of the object seen at each pixel, -1: room
    windows: list[tuple[slice, slice] | None] = []
    for index, obj in enumerate(objects):
        radius = float(np.linalg.norm(obj.half)) if isinstance(obj, Box) else obj.radius
        window = pixel_window(obj.center, radius, layout.camera, intrinsics, width, height)
        windows.append(window)
        if window is None:
            continue
        sub_rays = rays[:, window[0], window[1]]
        t = hit_box(obj, origin, sub_rays) if isinstance(obj, Box) else hit_sphere(obj, origin, sub_rays)
        closer = t < depth[window]
        np.copyto(depth[window], t, where=closer)
        owner[window][closer] = index

    points = origin[:, None, None] + rays * depth  # (3, H, W) world
    palette = np.concatenate([room_palette(layout.room), *(obj.colour[None] for obj in objects)])
    colour_index, shade, normal = room_surface(layout.room, face, points)
    specular = np.zeros((height, width), dtype=FLOAT)
    for index, (obj, window) in enumerate(zip(objects, windows)):
        if window is None:
            continue
        mine = owner[window] == index
        if not mine.any():
            continue
        sub_points = points[:, window[0], window[1]]
        surface = box_surface if isinstance(obj, Box) else sphere_surface
        sub_shade, sub_normal = surface(obj, sub_points)
        colour_index[window][mine] = ROOM_PALETTE_SIZE + index
        np.copyto(shade[window], sub_shade, where=mine)
        np.copyto(normal[:, window[0], window[1]], sub_normal, where=mine)
        if obj.glossy:
            np.copyto(specular[window], specular_highlight(sub_normal, sub_points, layout.light, origin), where=mine)

    # Lambertian shading under a point light with inverse-square fall-off, then distance fog, then sensor noise.
    to_light = layout.light[:, None, None] - points
    light_distance2 = (to_light * to_light).sum(axis=0)
    lambert = np.maximum((normal * to_light).sum(axis=0), 0.0) / np.sqrt(light_distance2)
    irradiance = layout.ambient + layout.light_power * lambert / (1.0 + light_distance2)
    fog = np.exp(-layout.fog_density * depth)
    lit = shade * irradiance * fog * 255.0
    noise = np.frombuffer(rng.bytes(height * width), dtype=np.uint8).reshape(height, width)
    offset = specular * fog * 255.0 + (noise.astype(FLOAT) * FLOAT(6.0 / 255.0) - FLOAT(2.5))
    image = np.empty((height, width, 3), dtype=np.uint8)
    for channel in range(3):
        value = palette[:, channel][colour_index] * lit + offset + layout.fog_colour[channel] * 255.0 * (1.0 - fog)
        image[..., channel] = np.clip(value, 0.0, 255.0)

    depth = np.clip(depth, MIN_DEPTH, MAX_DEPTH).astype(np.float32)
    valid = np.ones((height, width), dtype=bool)
    if holes:
        valid = _sensor_holes(rng, depth, image, specular)
        depth = np.where(valid, depth, np.float32(0.0))
    return Scene(image=image, depth=depth, valid=valid, intrinsics=intrinsics)


def _sensor_holes(rng: np.random.Generator, depth: np.ndarray, image: np.ndarray, specular: np.ndarray) -> np.ndarray:
    """Where a structured-light sensor returns nothing: far, dark, specular, occlusion edges, random blobs."""
    height, width = depth.shape
    invalid = depth > rng.uniform(6.0, 9.0)
    invalid |= image.mean(axis=2) < rng.uniform(10.0, 30.0)
    invalid |= specular > 0.3
    # Occlusion shadow: a relative depth jump to the right neighbour (the projector sits beside the camera).
    jump = np.abs(np.diff(depth, axis=1)) / depth[:, 1:] > 0.08
    invalid[:, 1:] |= jump
    invalid[:, :-1] |= jump
    rows, cols = np.ogrid[:height, :width]
    for _ in range(int(rng.integers(0, 5))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.01, 0.06) * height, rng.uniform(0.01, 0.06) * width
        invalid |= ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1.0
    return ~invalid


def write_scene_folder(
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    depth_scale: float = 1000.0,
    holes: bool = False,
) -> list[str]:
    """Write ``count`` scenes (seeds ``seed .. seed + count - 1``) as an RGB-D folder; returns the RGB paths.

    ``out_dir/rgb/scene_000000.png``: 8-bit RGB. ``out_dir/depth/scene_000000.png``: 16-bit, value / depth_scale =
    metres, 0 = invalid (the layout ``import-rgbd`` reads). The number in the name is the scene's seed.
    """
    if depth_scale * MAX_DEPTH > 65535:
        raise ValueError(
            f"depth_scale {depth_scale} cannot store {MAX_DEPTH} m in 16 bits; use at most {65535 / MAX_DEPTH:g}"
        )
    out = Path(out_dir)
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    paths = []
    for scene_seed in range(seed, seed + count):
        scene = render_scene(scene_seed, width, height, holes)
        name = f"scene_{scene_seed:06d}.png"
        codes = np.where(scene.valid, np.rint(scene.depth * depth_scale), 0).astype(np.uint16)
        Image.fromarray(scene.image).save(out / "rgb" / name, compress_level=1)
        Image.fromarray(codes).save(out / "depth" / name, compress_level=1)
        paths.append(str(out / "rgb" / name))
    logger.info("wrote %d scenes to %s", count, out)
    return paths
