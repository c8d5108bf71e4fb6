"""Fixtures of the shard tests: generated scenes as labels, and small shard sets written through the real writer."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import huggingface_hub

from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from shards.codec import DEFAULT_LABEL_CODEC, encode_sample  # noqa: E402
from shards.format import METRIC_DEPTH, SAMPLE_SIZE, SampleMeta  # noqa: E402
from shards.scenes import render_scene  # noqa: E402
from shards.writer import ShardWriter  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NYU_SAMPLE = SHARED_DATA / "nyu-fastdepth-sample"


def scene_members(key: str, seed: int, codec: str = DEFAULT_LABEL_CODEC, size: tuple[int, int] = (128, 96)) -> dict:
    """A generated scene (with holes) as shard members: metric depth at ``size`` (width, height)."""
    scene = render_scene(seed, width=size[0], height=size[1], holes=True)
    meta = SampleMeta(source=f"scenes/{seed}", kind=METRIC_DEPTH, source_size=size, crop_box=(0, 0, *size))
    return encode_sample(key, scene.image, scene.depth, meta, valid=scene.valid, codec=codec)


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
    from shards.scenes import write_scene_folder

    out = tmp_path_factory.mktemp("scenes")
    write_scene_folder(out, 6, seed=10, width=320, height=240, depth_scale=1000.0, holes=True)
    return out


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture)


def full_size_label(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, metric depth and valid mask of a generated scene at the sample size (512x384)."""
    scene = render_scene(seed, width=SAMPLE_SIZE[0], height=SAMPLE_SIZE[1], holes=True)
    return scene.image, scene.depth, scene.valid
