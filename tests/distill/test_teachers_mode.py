"""Training on samples several teachers labelled (``data.teachers``): ``first`` reads the first label, ``mean`` the
labels aligned to the first and averaged (relative), ``random`` one teacher's label per sample per step; all three
train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.training.config import DataConfig
from distill.training.data import TrainTransform, build_val_loader, mean_of_teachers, teacher_label
from shards.format import (
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    DecodedLabel,
    ExtraLabel,
    SampleMeta,
    encode_sample,
    inverse_depth,
)
from shards.reader import build_pipeline
from shards.tools.scenes import render_scene
from shards.writer import ShardWriter
from tests.distill.conftest import TINY_SAMPLE_SIZE, TINY_STUDENT

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0)
WHOLE = dict(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip=0.0, **NO_JITTER)


def write_two_teacher_shards(folder: Path, shards: int = 2, per_shard: int = 4) -> list[np.ndarray]:
    """Generated scenes labelled by two 'teachers': the first relative (3 / depth + 1), the second metric (the
    scene's metres). Returns each sample's true inverse depth, in order."""
    truths = []
    width, height = TINY_SAMPLE_SIZE
    for shard in range(shards):
        with ShardWriter(folder, "two", 0, shard) as writer:
            for item in range(per_shard):
                index = shard * per_shard + item
                scene = render_scene(index, width, height)
                inverse = inverse_depth(scene.depth)
                truths.append(inverse)
                second = ExtraLabel.from_depth(scene.depth.astype(np.float32), METRIC_DEPTH, teacher="metric")
                meta = SampleMeta(source=f"scene:{index}", kind=RELATIVE_INVERSE_DEPTH, teacher="relative",
                                  source_size=(width, height), size=(width, height))
                writer.write(encode_sample(f"s/{index:04d}", scene.image, (3 * inverse + 1).astype(np.float32), meta,
                                           more_labels=[second]))
    return truths


@pytest.fixture(scope="module")
def two_teacher_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("two_teachers")
    return folder, write_two_teacher_shards(folder)


def _label(depth: np.ndarray, kind: str, valid: np.ndarray | None = None) -> DecodedLabel:
    valid = np.ones(depth.shape, bool) if valid is None else valid
    return DecodedLabel("t", kind, np.where(valid, depth, 0).astype(np.float32), valid, "depth16.dzst")


def test_mean_aligns_every_label_to_the_first_and_averages_where_all_are_valid() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.1, 1.0, (24, 32))  # inverse depth
    holes = np.ones(truth.shape, bool)
    holes[:4, :6] = False
    labels = [_label(truth, RELATIVE_INVERSE_DEPTH), _label(5 * truth - 0.3, RELATIVE_INVERSE_DEPTH, holes),
              _label(1 / truth, METRIC_DEPTH)]
    depth, valid = mean_of_teachers(labels)
    assert np.array_equal(valid, holes) and (depth[~valid] == 0).all()
    np.testing.assert_allclose(depth[valid], truth[valid], rtol=1e-5)  # each one aligned onto the first exactly


def test_mean_of_noisy_teachers_is_closer_to_the_truth_than_either() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.1, 1.0, (48, 64))
    first = truth + rng.normal(0, 0.05, truth.shape)
    second = 2.0 * (truth + rng.normal(0, 0.05, truth.shape)) + 0.5
    depth, _ = mean_of_teachers([_label(first, RELATIVE_INVERSE_DEPTH), _label(second, RELATIVE_INVERSE_DEPTH)])
    assert np.abs(depth - truth).mean() < 0.8 * np.abs(first - truth).mean()


def test_each_mode_picks_its_label(two_teacher_shards: tuple[Path, list[np.ndarray]]) -> None:
    folder, truths = two_teacher_shards
    samples = list(build_pipeline(str(folder), training=False, split=False))
    assert [len(sample.labels) for sample in samples] == [2] * 8
    size = list(TINY_SAMPLE_SIZE)
    first = TrainTransform(DataConfig(size=size, teachers="first", **WHOLE), seed=0)
    mean = TrainTransform(DataConfig(size=size, teachers="mean", **WHOLE), seed=0)
    for sample, truth in zip(samples, truths):
        out = first(sample)
        assert out["is_metric"] is False
        np.testing.assert_allclose(out["target"][0].numpy(), sample.labels[0].depth)
        out = mean(sample)
        assert out["is_metric"] is False  # a mix of relative and metric is relative
        target = out["target"][0].numpy()
        scale, shift = np.polyfit(truth.ravel(), target.ravel(), 1)
        assert np.abs(scale * truth + shift - target).max() < 1e-3 * np.ptp(target)  # affine in true inverse depth
    random = TrainTransform(DataConfig(size=size, teachers="random", **WHOLE), seed=0)
    drawn = [random(sample)["is_metric"] for sample in samples for _ in range(4)]
    assert 8 <= sum(drawn) <= 24  # both teachers, each about half the time


def test_a_sample_with_one_label_keeps_it_in_every_mode() -> None:
    from tests.distill.test_data import _ramp_sample

    sample = _ramp_sample(METRIC_DEPTH)
    for mode in ("first", "mean", "random"):
        chosen, kind = teacher_label(sample, mode, np.random.default_rng(0))
        assert chosen is sample and kind == METRIC_DEPTH


def test_validation_reads_the_first_label(two_teacher_shards: tuple[Path, list[np.ndarray]]) -> None:
    folder, _ = two_teacher_shards
    config = DataConfig(val=str(folder), size=list(TINY_SAMPLE_SIZE), val_batch_size=8, num_workers=0,
                        teachers="random")
    (batch,) = list(build_val_loader(config, rank=0, world_size=1))
    assert not batch["is_metric"].any()


@pytest.mark.parametrize("mode", ["first", "mean", "random"])
def test_every_mode_trains(two_teacher_shards: tuple[Path, list[np.ndarray]], tmp_path: Path, mode: str) -> None:
    folder, _ = two_teacher_shards
    output = tmp_path / "run"
    argv = [
        "--student.encoder", TINY_STUDENT["encoder"], "--student.pretrained", "false",
        "--student.decoder_widths", json.dumps(TINY_STUDENT["decoder_widths"]),
        "--data.train", str(folder), "--data.size", "[64, 64]", "--data.batch_size", "4", "--data.num_workers", "0",
        "--data.shuffle_buffer", "8", "--data.epoch_steps", "4", "--data.teachers", mode,
        "--optim.lr", "0.003", "--optim.warmup_steps", "1", "--train.steps", "3", "--checkpoint.every", "100",
        "--log.every", "1", "--log.images_every", "0", "--log.tensorboard", "false", "--output.dir", str(output),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    assert f"teachers: {mode}" in (output / "config.yaml").read_text()
    assert (output / "student" / "model.safetensors").is_file()


def test_an_unknown_mode_is_refused_by_name(capsys: pytest.CaptureFixture) -> None:
    assert main(["--data.train", "x", "--data.teachers", "median"]) == 2
    assert "data.teachers" in capsys.readouterr().err
