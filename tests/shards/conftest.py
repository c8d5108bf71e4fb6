"""Fixtures of the shard tests: generated scenes as labels, and small shard sets written through the real writer."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import huggingface_hub

from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from shards.format import (  # noqa: E402
    DEFAULT_LABEL_CODEC,
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    SAMPLE_SIZE,
    ExtraLabel,
    SampleMeta,
    encode_sample,
    inverse_depth,
)
from shards.tools.scenes import render_scene  # noqa: E402
from shards.writer import ShardWriter  # noqa: E402


def scene_members(key: str, seed: int, codec: str = DEFAULT_LABEL_CODEC, size: tuple[int, int] = (128, 96)) -> dict:
    """A generated scene (with holes) as shard members: metric depth at ``size`` (width, height)."""
    scene = render_scene(seed, width=size[0], height=size[1], holes=True)
    meta = SampleMeta(source=f"scenes/{seed}", kind=METRIC_DEPTH, source_size=size, crop_box=(0, 0, *size))
    return encode_sample(key, scene.image, scene.depth, meta, valid=scene.valid, codec=codec)


def two_label_members(key: str, seed: int, codec: str = DEFAULT_LABEL_CODEC, teachers=("midas", "depth_anything"),
                      size: tuple[int, int] = (128, 96)) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:
    """A generated scene labelled twice: relative inverse depth from ``teachers[0]`` (with holes) and a differently
    scaled, hole-free map from ``teachers[1]``. Returns the members and the two float maps and masks."""
    scene = render_scene(seed, width=size[0], height=size[1], holes=True)
    first = inverse_depth(scene.depth, scene.valid).astype(np.float32)
    second = (3.0 * inverse_depth(scene.depth) + 0.25).astype(np.float32)
    every = np.ones_like(scene.valid)
    meta = SampleMeta(source=f"scenes/{seed}", kind=RELATIVE_INVERSE_DEPTH, teacher=teachers[0],
                      source_size=size, crop_box=(0, 0, *size))
    extra = ExtraLabel.from_depth(second, RELATIVE_INVERSE_DEPTH, teachers[1])
    members = encode_sample(key, scene.image, first, meta, valid=scene.valid, codec=codec, more_labels=[extra])
    return members, [first, second], [scene.valid, every]


def write_shard(
    directory: Path, index: int, members: Sequence[dict], prefix: str = "test", rejects: Sequence[tuple] = ()
) -> Path:
    """One finished shard (tar + stats json) through the real writer."""
    with ShardWriter(directory, prefix, 0, index) as writer:
        for sample in members:
            writer.write(sample)
        for key, reason in rejects:
            writer.reject(key, reason)
    return writer.path


def legacy_json(data: bytes) -> bytes:
    """A sample json as written before format version 2: no ``format_version``, no ``sha256``, no ``labels``."""
    record = json.loads(data)
    record.pop("format_version", None)
    record.pop("sha256", None)
    record.pop("labels", None)
    return json.dumps(record, sort_keys=True).encode()


def write_legacy_shard(directory: Path, index: int, samples: Sequence[dict], prefix: str = "test", **stats) -> Path:
    """A shard as the writer made it before format version 2: json without checksums, stats without members."""
    import webdataset as wds

    from shards.writer import shard_name, stats_path, write_json_atomic

    path = Path(directory) / shard_name(prefix, 0, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle, wds.TarWriter(handle) as tar:
        for sample in samples:
            tar.write({**sample, "json": legacy_json(sample["json"])})
    record = {"shard": path.name, "count": len(samples), "bytes": path.stat().st_size, "seconds": 0.0,
              "rejects": {}, **stats}
    write_json_atomic(stats_path(path), record)
    return path


def downgrade_shard(path: Path) -> None:
    """Rewrite a finished shard as the writer made it before format version 2 (same samples and stats fields)."""
    import io
    import tarfile

    from shards.writer import read_stats, stats_path, write_json_atomic

    buffer = io.BytesIO()
    with tarfile.open(path) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        for info in source.getmembers():
            data = source.extractfile(info).read()
            data = legacy_json(data) if info.name.endswith(".json") else data
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    stats = read_stats(path)
    del stats["format_version"], stats["members"]
    stats["bytes"] = path.stat().st_size
    write_json_atomic(stats_path(path), stats)


@pytest.fixture
def shard_set(tmp_path: Path) -> Callable[..., list[Path]]:
    """``shard_set(counts=(4, 4, 4))``: shards of generated scenes, keys ``s<shard>/<sample>``, in ``tmp/shards``."""

    def make(counts: Sequence[int] = (4, 4, 4), codec: str = DEFAULT_LABEL_CODEC) -> list[Path]:
        out = tmp_path / "shards"
        paths = []
        for shard, count in enumerate(counts):
            members = [scene_members(f"s{shard}/{i:03d}", 100 * shard + i, codec) for i in range(count)]
            paths.append(write_shard(out, shard, members))
        return paths

    return make


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 generated RGB-D scenes at 320x240 with sensor holes, depth in millimetres."""
    from shards.tools.scenes import write_scene_folder

    out = tmp_path_factory.mktemp("scenes")
    write_scene_folder(out, 6, seed=10, width=320, height=240, depth_scale=1000.0, holes=True)
    return out


def locate(picture: np.ndarray, block: np.ndarray, step: int = 4) -> tuple[int, int, float]:
    """Where ``block`` (h, w, 3) best matches inside ``picture``: (top, left, mean absolute difference), from a grid
    of the block's pixels every ``step``; it finds a panel in a drawn grid whatever the margins around it."""
    picture, block = picture.astype(np.float32), block.astype(np.float32)
    rows, cols = picture.shape[0] - block.shape[0] + 1, picture.shape[1] - block.shape[1] + 1
    error = np.zeros((rows, cols), dtype=np.float32)
    points = [(y, x) for y in range(0, block.shape[0], step) for x in range(0, block.shape[1], step)]
    for y, x in points:
        error += np.abs(picture[y : y + rows, x : x + cols] - block[y, x]).sum(axis=2)
    top, left = np.unravel_index(int(error.argmin()), error.shape)
    return int(top), int(left), float(error[top, left] / (3 * len(points)))


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture)


def full_size_label(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, metric depth and valid mask of a generated scene at the sample size (512x384)."""
    scene = render_scene(seed, width=SAMPLE_SIZE[0], height=SAMPLE_SIZE[1], holes=True)
    return scene.image, scene.depth, scene.valid


# ------------------------------------------------------------------------------ released layouts, generated content

#: DIODE's frame size (width, height) as released.
DIODE_SIZE = (1024, 768)
#: Generated rooms are 0.5-10 m deep; scaled so the presets' bounds cut: indoors 0.75-15 m (10 m bound), outdoors
#: 5-100 m (80 m bound).
DIODE_DEPTH_FACTOR = {"indoors": 1.5, "outdoor": 10.0}
#: Each generated DIODE frame holds a block at exactly its scene type's preset bound (inclusive there) and one at
#: 1.2 times the bound (left out), both valid.
DIODE_BOUND = {"indoors": 10.0, "outdoor": 80.0}


def diode_arrays(seed: int, scene: str, size: tuple[int, int] = DIODE_SIZE) -> tuple[np.ndarray, ...]:
    """A generated frame as DIODE stores it: image, depth (metres; under mask 0 a plausible but wrong value, so only
    the mask can tell) and mask (float 0/1), plus the true depth with 0 where invalid."""
    scene_data = render_scene(seed, width=size[0], height=size[1], holes=True)
    factor = DIODE_DEPTH_FACTOR[scene]
    valid = scene_data.valid.copy()
    depth = (scene_data.depth * factor).astype(np.float32)
    valid[:6, :20] = True
    depth[:6, :10] = DIODE_BOUND[scene]
    depth[:6, 10:20] = 1.2 * DIODE_BOUND[scene]
    stored = np.where(valid, depth, np.float32(3.0 * factor)).astype(np.float32)
    return scene_data.image, stored, valid.astype(np.float32), np.where(valid, depth, 0).astype(np.float32)


def write_diode_tree(
    root: Path, frames: Sequence[tuple[str, int]], split: str = "val", size: tuple[int, int] = DIODE_SIZE
) -> dict[str, np.ndarray]:
    """Generated frames ``(scene type, seed)`` in DIODE's released layout under ``root``; returns the true depth
    (0 = invalid) by sample key ``diode/<split>/<scene>/scene_X/scan_Y/<name>``."""
    from shards.format import key_from_relative_path
    from shards.tools.rgbd import write_diode_scan

    truth = {}
    for scene, seed in frames:
        image, stored, mask, depth = diode_arrays(seed, scene, size)
        path = write_diode_scan(root, split, scene, (seed, 100 + seed, 0, seed), image, stored, mask)
        truth[key_from_relative_path("diode/" + path.relative_to(root).as_posix())] = depth
    return truth


#: Frame sizes (width, height) of KITTI's raw images: they vary by drive.
KITTI_SIZES = ((1242, 375), (1224, 370))


def kitti_depth(seed: int, size: tuple[int, int]) -> np.ndarray:
    """Sparse lidar-like depth in metres (0 = invalid), 4.5-90 m, as 16-bit PNG codes / 256 store it; a block at
    exactly 80 m (outside the preset's strict bound) inside the Garg crop."""
    scene = render_scene(seed, width=size[0], height=size[1], holes=True)
    keep = scene.valid & (np.random.default_rng(seed).random(scene.depth.shape) < 0.3)
    depth = np.where(keep, scene.depth * 9.0, 0.0)
    depth[size[1] // 2 : size[1] // 2 + 4, size[0] // 2 : size[0] // 2 + 8] = 80.0
    return np.rint(depth * 256).astype(np.uint16) / np.float32(256)


def write_kitti_pairs(root: Path, seeds: Sequence[int] = (0, 1, 2)) -> tuple[Path, dict[str, np.ndarray]]:
    """Generated frames in KITTI's trees (raw images; annotated depth as 16-bit PNG, metres * 256, 0 = invalid)
    with a pair list ``root/eigen_test_pairs.txt`` of relative paths; sizes alternate over ``KITTI_SIZES``.
    Returns the list and the true depth by image path (as listed)."""
    lines, truth = ["# image depth (KITTI Eigen test, generated)"], {}
    for number, seed in enumerate(seeds):
        size = KITTI_SIZES[number % len(KITTI_SIZES)]
        drive = f"2011_09_26_drive_{number + 1:04d}_sync"
        image = Path("raw") / "2011_09_26" / drive / "image_02" / "data" / f"{seed:010d}.png"
        depth = Path("annotated") / "val" / drive / "proj_depth" / "groundtruth" / "image_02" / f"{seed:010d}.png"
        for path in (image, depth):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_scene(seed, width=size[0], height=size[1]).image).save(root / image, compress_level=1)
        metres = kitti_depth(seed, size)
        Image.fromarray(np.rint(metres * 256).astype(np.uint16)).save(root / depth, compress_level=1)
        lines.append(f"{image.as_posix()} {depth.as_posix()}")
        truth[image.as_posix()] = metres
    (root / "eigen_test_pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "eigen_test_pairs.txt", truth
