"""Shared fixtures of the distill tests: a tiny student and tiny shard sets written from generated scenes.

Offline: the hub is switched off before anything imports huggingface_hub, so a missing weight fails at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from distill.students import StudentConfig, create_student, save_student  # noqa: E402
from shards.format import (  # noqa: E402
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    SampleMeta,
    encode_sample,  # noqa: E402
    inverse_depth,
)
from shards.tools.scenes import render_scene, write_scene_folder  # noqa: E402
from shards.writer import ShardWriter  # noqa: E402

#: Size (width, height) of the samples in the test shards: small, 4:3, and a multiple of 32 on both sides.
TINY_SAMPLE_SIZE = (128, 96)

#: A tiny student: timm's 82k-parameter ``test_efficientnet`` encoder (strides 2..32 like MobileNetV3) and a
#: narrow decoder; random init (no download).
TINY_STUDENT = dict(encoder="test_efficientnet", pretrained=False, decoder_widths=[32, 24, 16, 16, 8])


def tiny_student_config(**overrides) -> StudentConfig:
    return StudentConfig(**{**TINY_STUDENT, **overrides})


def write_scene_shards(
    folder: Path,
    kind: str,
    shards: int = 2,
    per_shard: int = 4,
    seed: int = 0,
    size: tuple[int, int] = TINY_SAMPLE_SIZE,
    holes: bool = False,
    prefix: str = "train",
    meta: dict | None = None,
) -> list[str]:
    """Write ``shards`` x ``per_shard`` generated scenes as shards of ``kind``; returns the sample keys.

    Relative shards hold 1 / depth (the shape of a relative teacher's output); metric shards hold metres. ``meta``:
    more :class:`SampleMeta` fields of every sample (``eval_split``, ``extra``).
    """
    keys = []
    width, height = size
    for shard in range(shards):
        with ShardWriter(folder, prefix, 0, shard) as writer:
            for item in range(per_shard):
                index = seed + shard * per_shard + item
                scene = render_scene(index, width, height, holes=holes)
                valid = scene.valid & (scene.depth > 0)
                inverse = inverse_depth(scene.depth, valid)
                label = inverse if kind == RELATIVE_INVERSE_DEPTH else scene.depth
                key = f"scenes/{prefix}_{index:06d}"
                record = SampleMeta(source=f"scene:{index}", kind=kind, source_size=size, size=size, **(meta or {}))
                writer.write(encode_sample(key, scene.image, label.astype(np.float32), record, valid=valid))
                keys.append(key)
    return keys


@pytest.fixture
def tiny_config() -> StudentConfig:
    return tiny_student_config()


@pytest.fixture
def tiny_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_student(tiny_student_config())


@pytest.fixture
def make_shards(tmp_path: Path) -> Callable[..., tuple[Path, list[str]]]:
    """A factory: ``make_shards(name, kind, shards=2, per_shard=4, seed=0, holes=False) -> (folder, keys)``."""

    def make(name: str, kind: str = RELATIVE_INVERSE_DEPTH, **kwargs) -> tuple[Path, list[str]]:
        folder = tmp_path / name
        keys = write_scene_shards(folder, kind, **kwargs)
        return folder, keys

    return make


@pytest.fixture(scope="session")
def relative_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 shards x 4 generated scenes, relative inverse depth labels (read-only: do not write into it)."""
    folder = tmp_path_factory.mktemp("relative_shards")
    write_scene_shards(folder, RELATIVE_INVERSE_DEPTH, seed=0)
    return folder


@pytest.fixture(scope="session")
def metric_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 shards x 4 generated scenes with sensor-like holes, metric depth labels in metres (read-only)."""
    folder = tmp_path_factory.mktemp("metric_shards")
    write_scene_shards(folder, METRIC_DEPTH, seed=100, holes=True, prefix="metric")
    return folder


@pytest.fixture(scope="session")
def val_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 shards (4 + 4 + 4) of held-out scenes, relative labels, for validation (read-only)."""
    folder = tmp_path_factory.mktemp("val_shards")
    write_scene_shards(folder, RELATIVE_INVERSE_DEPTH, shards=3, seed=1000, prefix="val")
    return folder


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``count`` inside the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_torch_thread():
    """One PyTorch thread: on a shared 2-core machine, OpenMP barriers across 2 threads stall whenever another
    job holds a core (measured 5-10x slower than 1 thread under load). Restored after each test."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def save_tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A factory: ``save_tiny_student(name, seed=0, **config_overrides) -> folder`` of a saved tiny student
    (random init seeded by ``seed``), for commands that take student folders."""
    root = tmp_path_factory.mktemp("tiny_students")

    def save(name: str, seed: int = 0, **overrides) -> Path:
        config = tiny_student_config(**overrides)
        torch.manual_seed(seed)
        return save_student(create_student(config), config, root / name)

    return save


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An rgb/ + depth/ folder of 4 generated 128x96 scenes (16-bit millimetres; the ``shards scenes`` layout),
    read-only."""
    folder = tmp_path_factory.mktemp("scene_folder")
    write_scene_folder(folder, count=4, seed=500, width=TINY_SAMPLE_SIZE[0], height=TINY_SAMPLE_SIZE[1])
    return folder


def train_tiny_student(output: Path, train: Path, steps: int = 6) -> Path:
    """A tiny student trained for ``steps`` steps through ``distill.cli.main`` on ``train`` shards: a model whose
    weights have moved off their initialisation (unlike a freshly built one). Returns ``output/student``."""
    import json

    from distill.cli import main

    argv = [
        "--student.encoder", TINY_STUDENT["encoder"], "--student.pretrained", "false",
        "--student.decoder_widths", json.dumps(TINY_STUDENT["decoder_widths"]),
        "--data.train", str(train), "--data.size", "[96, 64]", "--data.batch_size", "4", "--data.num_workers", "0",
        "--data.shuffle_buffer", "8", "--data.epoch_steps", "4", "--optim.lr", "0.003", "--optim.warmup_steps", "2",
        "--train.steps", str(steps), "--checkpoint.every", "1000", "--log.every", "1", "--log.images_every", "0",
        "--log.tensorboard", "false", "--output.dir", str(output),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if main(argv) != 0:
            raise RuntimeError(f"training the tiny student failed: {argv}")
    finally:
        torch.set_num_threads(threads)
    return output / "student"


@pytest.fixture(scope="session")
def trained_student(tmp_path_factory: pytest.TempPathFactory, relative_shards: Path) -> Path:
    """``RUN/student`` of a tiny student trained for a few steps on the relative shards (read-only)."""
    return train_tiny_student(tmp_path_factory.mktemp("trained") / "run", relative_shards)
