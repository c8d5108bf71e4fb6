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
    owner, windows = _trace_objects(objects, layout.camera, intrinsics, rays, depth)  # depth updated in place
    points = origin[:, None, None] + rays * depth  # (3, H, W) world
    palette = np.concatenate([room_palette(layout.room), *(obj.colour[None] for obj in objects)])
    colour_index, shade, normal = room_surface(layout.room, face, points)
    specular = _object_surfaces(layout, objects, owner, windows, points, colour_index, shade, normal)

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


def _trace_objects(objects: list[Box | Sphere], camera: Camera, intrinsics: tuple[float, float, float, float],
                   rays: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, list[tuple[slice, slice] | None]]:
    """Cast ``rays`` at every object inside its own pixel window, keeping the nearest hit in ``depth`` (updated in
    place); returns which object each pixel sees (-1: the room) and each object's window (None: off screen)."""
    height, width = depth.shape
    owner = np.full((height, width), -1, dtype=np.int16)
    windows: list[tuple[slice, slice] | None] = []
    for index, obj in enumerate(objects):
        radius = float(np.linalg.norm(obj.half)) if isinstance(obj, Box) else obj.radius
        window = pixel_window(obj.center, radius, camera, intrinsics, width, height)
        windows.append(window)
        if window is None:
            continue
        sub_rays = rays[:, window[0], window[1]]
        t = hit_box(obj, camera.position, sub_rays) if isinstance(obj, Box) else hit_sphere(obj, camera.position,
                                                                                           sub_rays)
        closer = t < depth[window]
        np.copyto(depth[window], t, where=closer)
        owner[window][closer] = index
    return owner, windows


def _object_surfaces(layout: Layout, objects: list[Box | Sphere], owner: np.ndarray,
                     windows: list[tuple[slice, slice] | None], points: np.ndarray, colour_index: np.ndarray,
                     shade: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Paint each object's colour, pattern and normal over the room's (arrays updated in place); returns the
    specular highlight (H, W) of the glossy ones."""
    specular = np.zeros(owner.shape, dtype=FLOAT)
    origin = layout.camera.position
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
    return specular


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


EPS = 1e-4
FLOAT = np.float32


# ---------------------------------------------------------------------------------------------------------------
# Scene description (drawn from the seed)


@dataclass
class Camera:
    position: np.ndarray  # (3,) world
    rotation: np.ndarray  # (3, 3) camera -> world (columns: right, down, forward)


@dataclass
class Box:
    center: np.ndarray  # (3,)
    half: np.ndarray  # (3,) half sizes along the box's own axes
    yaw: float
    colour: np.ndarray  # (3,) albedo in [0, 1]
    pattern: int  # 0 checker, 1 stripes, 2 plain with edges
    period: float  # metres
    glossy: bool


@dataclass
class Sphere:
    center: np.ndarray
    radius: float
    colour: np.ndarray
    pattern: int  # 0 latitude bands, 1 longitude segments, 2 plain
    period: float
    glossy: bool


@dataclass
class Room:
    low: np.ndarray  # (3,) x, y, z minimum corner (y = 0: floor)
    high: np.ndarray  # (3,) maximum corner
    floor_colour: np.ndarray
    floor_colour2: np.ndarray
    wall_colours: np.ndarray  # (4, 3): -x, +x, -z, +z
    ceiling_colour: np.ndarray
    tile: float  # floor tile size, metres
    stripe: float  # wallpaper stripe period, metres


@dataclass
class Layout:
    room: Room
    camera: Camera
    boxes: list[Box]
    spheres: list[Sphere]
    light: np.ndarray  # (3,) point light position
    light_power: float
    ambient: float
    fog_density: float  # 1 / metres
    fog_colour: np.ndarray


def _colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """A random albedo from HSV, value in 0.35..0.95 so that textures stay visible."""
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(*saturation)
    value = rng.uniform(0.35, 0.95)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return (value - value * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(FLOAT)


def _clear_of_camera(center: np.ndarray, radius: float, camera: np.ndarray, margin: float) -> bool:
    return float(np.linalg.norm(center - camera)) > radius + margin


def draw_layout(rng: np.random.Generator) -> Layout:
    """A room, a camera inside it, boxes, spheres and a light, drawn from ``rng`` in that order (the order is part
    of each seed's scene)."""
    room = _draw_room(rng)
    camera = _draw_camera(rng, room)
    boxes = _draw_boxes(rng, room, camera.position)
    spheres = _draw_spheres(rng, room, camera.position)
    low, high = room.low, room.high
    light = np.array(
        [rng.uniform(low[0] + 0.3, high[0] - 0.3), float(high[1] - low[1]) - 0.05,
         rng.uniform(low[2] + 0.3, high[2] - 0.3)],
        dtype=FLOAT,
    )
    return Layout(
        room=room, camera=camera, boxes=boxes, spheres=spheres, light=light,
        light_power=float(rng.uniform(6.0, 14.0)), ambient=float(rng.uniform(0.12, 0.25)),
        fog_density=float(rng.uniform(0.04, 0.12)), fog_colour=_colour(rng, (0.0, 0.2)) * 0.6 + 0.3,
    )


def _draw_room(rng: np.random.Generator) -> Room:
    """A room sized so that its far corner stays within MAX_DEPTH of any camera inside it."""
    size = np.array([rng.uniform(3.0, 6.5), rng.uniform(2.4, 3.2), rng.uniform(3.0, 6.5)], dtype=FLOAT)
    low = np.array([-size[0] / 2, 0.0, -size[2] / 2], dtype=FLOAT)
    return Room(
        low=low,
        high=low + size,
        floor_colour=_colour(rng),
        floor_colour2=_colour(rng),
        wall_colours=np.stack([_colour(rng, (0.05, 0.6)) for _ in range(4)]),
        ceiling_colour=_colour(rng, (0.0, 0.15)),
        tile=float(rng.uniform(0.25, 0.7)),
        stripe=float(rng.uniform(0.08, 0.4)),
    )


def _draw_camera(rng: np.random.Generator, room: Room) -> Camera:
    """A camera at eye height, looking roughly towards the room's far side so that most views hold objects."""
    low, margin = room.low, 0.7
    position = np.array(
        [
            rng.uniform(low[0] + margin, room.high[0] - margin),
            rng.uniform(1.1, min(1.8, float(room.high[1] - low[1]) - 0.6)),
            rng.uniform(low[2] + margin, room.high[2] - margin),
        ],
        dtype=FLOAT,
    )
    to_centre = -position[[0, 2]]
    if np.linalg.norm(to_centre) > 0.3:
        yaw = float(np.arctan2(to_centre[0], to_centre[1]) + rng.uniform(-0.7, 0.7))
    else:
        yaw = float(rng.uniform(-np.pi, np.pi))
    pitch = float(rng.uniform(-0.35, 0.05))  # radians, negative looks down
    roll = float(rng.uniform(-0.08, 0.08))
    return Camera(position=position, rotation=_camera_rotation(yaw, pitch, roll))


def _draw_boxes(rng: np.random.Generator, room: Room, camera_position: np.ndarray) -> list[Box]:
    """2-6 boxes standing on the floor, each kept clear of the camera (up to 10 tries, else left out)."""
    low, high = room.low, room.high
    boxes: list[Box] = []
    for _ in range(int(rng.integers(2, 7))):
        half = np.array([rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.9), rng.uniform(0.15, 0.7)], dtype=FLOAT)
        radius = float(np.linalg.norm(half))
        for _attempt in range(10):
            center = np.array(
                [rng.uniform(low[0] + half[0], high[0] - half[0]), half[1],
                 rng.uniform(low[2] + half[2], high[2] - half[2])],
                dtype=FLOAT,
            )
            if _clear_of_camera(center, radius, camera_position, 0.75):
                boxes.append(Box(center, half, float(rng.uniform(0, np.pi)), _colour(rng), int(rng.integers(0, 3)),
                                 float(rng.uniform(0.1, 0.4)), bool(rng.random() < 0.3)))
                break
    return boxes


def _draw_spheres(rng: np.random.Generator, room: Room, camera_position: np.ndarray) -> list[Sphere]:
    """1-4 spheres, most on the floor, some in the air, each kept clear of the camera."""
    low, high = room.low, room.high
    spheres: list[Sphere] = []
    for _ in range(int(rng.integers(1, 5))):
        radius = float(rng.uniform(0.12, 0.6))
        for _attempt in range(10):
            height = radius if rng.random() < 0.6 else rng.uniform(radius, float(high[1] - low[1]) - radius)
            center = np.array(
                [rng.uniform(low[0] + radius, high[0] - radius), height,
                 rng.uniform(low[2] + radius, high[2] - radius)],
                dtype=FLOAT,
            )
            if _clear_of_camera(center, radius, camera_position, 0.75):
                spheres.append(Sphere(center, radius, _colour(rng), int(rng.integers(0, 3)),
                                      float(rng.uniform(0.08, 0.3)), bool(rng.random() < 0.4)))
                break
    return spheres


def _camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera -> world rotation; columns are the camera's right, down and forward axes in world coordinates."""
    forward = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)  # right-handed: right x down = forward
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward], axis=1).astype(FLOAT)


# ---------------------------------------------------------------------------------------------------------------
# Ray casting. Rays are parametrised so that t is the z-depth: d = R @ ((u - cx) / fx, (v - cy) / fy, 1).


def camera_rays(camera: Camera, width: int, height: int, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    fx, fy, cx, cy = intrinsics
    u = (np.arange(width, dtype=FLOAT) + 0.5 - cx) / fx
    v = (np.arange(height, dtype=FLOAT) + 0.5 - cy) / fy
    r = camera.rotation
    # (3, H, W) world directions, built per component to stay in float32 and avoid a (H, W, 3) matmul.
    return np.stack([r[i, 0] * u[None, :] + r[i, 1] * v[:, None] + r[i, 2] for i in range(3)]).astype(FLOAT)


def pixel_window(
    center: np.ndarray, radius: float, camera: Camera, intrinsics: tuple[float, float, float, float],
    width: int, height: int,
) -> tuple[slice, slice] | None:
    """The image rectangle that a bounding sphere can cover (conservative), or None when it is off screen."""
    local = camera.rotation.T @ (center - camera.position)
    fx, fy, cx, cy = intrinsics
    if local[2] - radius <= 0.05:
        return slice(0, height), slice(0, width)
    zs = (local[2] - radius, local[2] + radius)
    xs = [(local[0] + s * radius) / z for s in (-1, 1) for z in zs]
    ys = [(local[1] + s * radius) / z for s in (-1, 1) for z in zs]
    u0, u1 = int(np.floor(fx * min(xs) + cx)) - 1, int(np.ceil(fx * max(xs) + cx)) + 2
    v0, v1 = int(np.floor(fy * min(ys) + cy)) - 1, int(np.ceil(fy * max(ys) + cy)) + 2
    u0, u1, v0, v1 = max(u0, 0), min(u1, width), max(v0, 0), min(v1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return slice(v0, v1), slice(u0, u1)


def hit_room(room: Room, origin: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the room's inside and which face (0..5: -x, +x, floor, ceiling, -z, +z) each ray hits."""
    t = np.full(rays.shape[1:], np.inf, dtype=FLOAT)
    face = np.zeros(rays.shape[1:], dtype=np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            d = rays[axis]
            positive = d > 0
            bound = np.where(positive, room.high[axis], room.low[axis])
            t_axis = (bound - origin[axis]) / d
            t_axis[~np.isfinite(t_axis) | (t_axis <= 0)] = np.inf
            closer = t_axis < t
            t[closer] = t_axis[closer]
            face[closer] = np.where(positive, 2 * axis + 1, 2 * axis)[closer]
    return t, face


def _yaw_axes(yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """The box's local x and z axes in world coordinates (y stays up)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([c, 0.0, -s], dtype=FLOAT), np.array([s, 0.0, c], dtype=FLOAT)


def hit_box(box: Box, origin: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Slab test in the box's frame; inf where missed."""
    ax, az = _yaw_axes(box.yaw)
    rel = origin - box.center
    o = (float(rel @ ax), float(rel[1]), float(rel @ az))
    d = (ax[0] * rays[0] + ax[2] * rays[2], rays[1], az[0] * rays[0] + az[2] * rays[2])
    t_near = np.full(rays.shape[1:], -np.inf, dtype=FLOAT)
    t_far = np.full(rays.shape[1:], np.inf, dtype=FLOAT)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inverse = 1.0 / d[axis]
            t1 = (-box.half[axis] - o[axis]) * inverse
            t2 = (box.half[axis] - o[axis]) * inverse
            np.maximum(t_near, np.minimum(t1, t2), out=t_near)
            np.minimum(t_far, np.maximum(t1, t2), out=t_far)
    hit = (t_far >= t_near) & (t_near > EPS)
    return np.where(hit, t_near, np.inf).astype(FLOAT)


def hit_sphere(sphere: Sphere, origin: np.ndarray, rays: np.ndarray) -> np.ndarray:
    oc = origin - sphere.center
    a = rays[0] * rays[0] + rays[1] * rays[1] + rays[2] * rays[2]
    b = oc[0] * rays[0] + oc[1] * rays[1] + oc[2] * rays[2]
    c = float(oc @ oc) - sphere.radius**2
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > EPS), t, np.inf).astype(FLOAT)


# ---------------------------------------------------------------------------------------------------------------
# Surface appearance. Each pixel gets a palette index (a base colour) and a shade factor from a world-space pattern,
# so that the colour is gathered once per channel at the end; normals are planar (3, h, w).

_GROUT_GREY = 0.15
ROOM_PALETTE_SIZE = 12  # 6 faces, the floor's second colour, grout, 4 skirting boards


def room_palette(room: Room) -> np.ndarray:
    """(12, 3) colours: faces -x, +x, floor, ceiling, -z, +z; floor's 2nd colour; grout; skirting of the 4 walls."""
    walls = room.wall_colours
    return np.concatenate(
        [walls[:2], room.floor_colour[None], room.ceiling_colour[None], walls[2:], room.floor_colour2[None],
         np.full((1, 3), _GROUT_GREY, FLOAT), 0.9 - 0.5 * walls]
    ).astype(FLOAT)


def room_surface(room: Room, face: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Palette index (h, w), shade (h, w) and inward normal (3, h, w) of the room: floor tiles with grout and a
    stain, striped wallpaper above a skirting board, ceiling panels with darker frames."""
    x, y, z = points
    floor = face == 2
    fx, fz = x / room.tile, z / room.tile
    second_colour = ((np.floor(fx) + np.floor(fz)).astype(np.int32) & 1) == 0
    grout = np.minimum(np.abs(fx - np.rint(fx)), np.abs(fz - np.rint(fz))) < 0.04
    stain = 0.85 + 0.15 * np.sin(1.3 * x + 0.7) * np.cos(0.9 * z)
    wall = (face != 2) & (face != 3)
    skirting = wall & (y < 0.12)
    index = face.astype(np.int16)
    index[floor & second_colour] = 6
    index[floor & grout] = 7
    index[skirting] = np.where(face < 2, 8 + face, 6 + face)[skirting]
    along = np.where(face < 2, z, x)
    stripes = np.where(np.sin((2 * np.pi / room.stripe) * along) > 0, FLOAT(1.0), FLOAT(0.75))
    frame = (np.abs(np.sin(x * (np.pi / 0.6))) < 0.05) | (np.abs(np.sin(z * (np.pi / 0.6))) < 0.05)
    shade = np.where(floor, stain, np.where(face == 3, np.where(frame, FLOAT(0.6), FLOAT(1.0)), stripes))
    shade[skirting | (floor & grout)] = 1.0
    normal = np.stack([(face == 2 * axis).astype(FLOAT) - (face == 2 * axis + 1) for axis in range(3)])
    return index, shade.astype(FLOAT), normal


def box_surface(box: Box, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shade (h, w) and normal (3, h, w) of a box: checker, diagonal stripes or plain faces, dark edges."""
    ax, az = _yaw_axes(box.yaw)
    rel = points - box.center[:, None, None]
    metric = np.stack([ax[0] * rel[0] + ax[2] * rel[2], rel[1], az[0] * rel[0] + az[2] * rel[2]])  # box frame
    local = np.abs(metric / box.half[:, None, None])  # 1 on the face a point lies on
    axis = np.argmax(local, axis=0)
    sign = np.sign(np.take_along_axis(metric, axis[None], 0)[0])
    frame = np.stack([ax, np.array([0.0, 1.0, 0.0], dtype=FLOAT), az])  # local axis -> world direction
    normal = frame.T[:, axis] * sign
    u = np.where(axis == 0, metric[2], metric[0])
    v = np.where(axis == 1, metric[2], metric[1])
    if box.pattern == 0:
        parity = (np.floor(u / box.period) + np.floor(v / box.period)).astype(np.int32) & 1
        shade = np.where(parity == 1, FLOAT(1.0), FLOAT(0.6))
    elif box.pattern == 1:
        shade = 0.7 + 0.3 * np.sin((2 * np.pi / box.period) * (u + 0.5 * v))
    else:
        shade = np.ones_like(u)
    second_largest = local.sum(axis=0) - local.max(axis=0) - local.min(axis=0)
    shade = np.where(second_largest > 0.93, shade * 0.4, shade)  # dark edges where two faces meet
    return shade.astype(FLOAT), normal.astype(FLOAT)


def sphere_surface(sphere: Sphere, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shade (h, w) and normal (3, h, w) of a sphere: latitude bands, longitude segments or plain."""
    normal = (points - sphere.center[:, None, None]) / sphere.radius
    if sphere.pattern == 0:
        shade = np.where(np.sin((2 * np.pi / sphere.period) * points[1]) > 0, FLOAT(1.0), FLOAT(0.65))
    elif sphere.pattern == 1:
        segments = max(3, round(sphere.radius * 2 * np.pi / sphere.period))
        shade = np.where(np.sin(segments * np.arctan2(normal[0], normal[2])) > 0, FLOAT(1.0), FLOAT(0.65))
    else:
        shade = np.ones(points.shape[1:], dtype=FLOAT)
    return shade.astype(FLOAT), normal.astype(FLOAT)


def specular_highlight(normal: np.ndarray, points: np.ndarray, light: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Blinn-Phong highlight (h, w) in [0, 1] for glossy objects."""
    to_light = light[:, None, None] - points
    to_light /= np.sqrt((to_light * to_light).sum(axis=0))
    view = origin[:, None, None] - points
    view /= np.sqrt((view * view).sum(axis=0))
    half = to_light + view
    half /= np.sqrt((half * half).sum(axis=0)) + EPS
    return np.clip((normal * half).sum(axis=0), 0.0, 1.0) ** 60
