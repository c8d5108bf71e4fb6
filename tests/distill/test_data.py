"""Training data: aligned augmentation, label resampling without invented values, mixing, determinism, validation
reads every sample once."""

from __future__ import annotations

import itertools
import multiprocessing
import pickle

import numpy as np
import pytest
import torch

from distill.training.config import DataConfig
from distill.training.data import (
    EvalTransform,
    TrainTransform,
    build_train_loader,
    build_val_loader,
    centre_box,
    resize_crop,
    worker_batches,
)
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, DepthSample, SampleMeta
from shards.reader import EvalSplitError, build_pipeline
from tests.distill.conftest import write_scene_shards

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0)


def _ramp_sample(kind: str = RELATIVE_INVERSE_DEPTH, width: int = 128, height: int = 96) -> DepthSample:
    """An image whose red channel equals the label (a smooth ramp), so any misalignment shows as a difference;
    a block of invalid pixels whose label is garbage."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    label = (x / width * 200 + y / height * 50 + 1).astype(np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.round(label).astype(np.uint8)
    image[..., 1] = 128
    valid = np.ones((height, width), bool)
    valid[10:30, 20:50] = False
    label[~valid] = 0.0
    meta = SampleMeta(source="ramp", kind=kind, size=(width, height))
    return DepthSample("ramp", image, label, valid, meta)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_train_transform_keeps_image_and_label_aligned(flip: float) -> None:
    config = DataConfig(size=[64, 64], flip=flip, **NO_JITTER)
    transform = TrainTransform(config, seed=3)
    for _ in range(5):
        out = transform(_ramp_sample())
        assert out["image"].shape == (3, 64, 64) and out["target"].shape == (1, 64, 64)
        assert out["valid"].dtype == torch.bool and out["is_metric"] is False
        red = out["image"][0] * 255.0
        valid = out["valid"][0]
        # bilinear image vs nearest label of the same ramp: within a few grey levels wherever the label is valid
        assert float((red - out["target"][0])[valid].abs().mean()) < 3.0
        assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0


def test_flip_mirrors_image_and_label_together() -> None:
    sample = _ramp_sample()
    kept = TrainTransform(DataConfig(size=[128, 96], crop_scale=[1, 1], crop_ratio=[1, 1], flip=0.0, **NO_JITTER), 0)
    flipped = TrainTransform(DataConfig(size=[128, 96], crop_scale=[1, 1], crop_ratio=[1, 1], flip=1.0, **NO_JITTER), 0)
    a, b = kept(sample), flipped(sample)
    torch.testing.assert_close(b["target"], a["target"].flip(-1))
    torch.testing.assert_close(b["image"], a["image"].flip(-1))


def test_label_resampling_is_nearest_exact_and_respects_holes() -> None:
    sample = _ramp_sample()
    transform = TrainTransform(DataConfig(size=[64, 64], **NO_JITTER), seed=1)
    source_values = set(np.unique(sample.depth[sample.valid]).tolist())
    for _ in range(5):
        out = transform(sample)
        valid = out["valid"][0].numpy()
        target = out["target"][0].numpy()
        assert set(np.unique(target[valid]).tolist()) <= source_values  # no value invented by averaging
        assert np.all(target[~valid] == 0.0)


def test_nearest_exact_centres() -> None:
    """3 -> 2 pixels per axis picks the source pixels under the output pixels' centres, as torch's nearest-exact
    (plain 'nearest' would sit half a source pixel off: docs/decisions.md, "The sample")."""
    depth = np.arange(9, dtype=np.float32).reshape(3, 3)
    sample = DepthSample("k", np.zeros((3, 3, 3), np.uint8), depth, np.ones((3, 3), bool),
                         SampleMeta(source="k", kind=METRIC_DEPTH, size=(3, 3)))
    out = resize_crop(sample, (0, 0, 3, 3), (2, 2))
    reference = torch.nn.functional.interpolate(torch.from_numpy(depth)[None, None], size=(2, 2), mode="nearest-exact")
    np.testing.assert_array_equal(out["depth"], reference[0, 0].numpy())


def test_eval_transform_resizes_the_whole_sample() -> None:
    sample = _ramp_sample(kind=METRIC_DEPTH)
    out = EvalTransform([64, 48])(sample)
    assert out["image"].shape == (3, 48, 64) and out["is_metric"] is True
    assert centre_box((512, 384), (256, 192)) == (0.0, 0.0, 512.0, 384.0)
    assert centre_box((512, 512), (256, 192)) == (0.0, 64.0, 512.0, 448.0)
    again = EvalTransform([64, 48])(sample)
    torch.testing.assert_close(out["image"], again["image"])  # no randomness


def test_colour_jitter_changes_the_image_not_the_label() -> None:
    sample = _ramp_sample()
    plain = TrainTransform(DataConfig(size=[64, 64], **NO_JITTER), seed=5)(sample)
    jittered = TrainTransform(DataConfig(size=[64, 64], brightness=0.4, contrast=0.4, saturation=0.4), seed=5)(sample)
    torch.testing.assert_close(jittered["target"], plain["target"])  # same crop, same label
    assert float((jittered["image"] - plain["image"]).abs().mean()) > 1e-3


def _config(train, **overrides) -> DataConfig:
    values = dict(train=train, size=[64, 64], batch_size=4, num_workers=0, shuffle_buffer=8, epoch_steps=4)
    values.update(overrides)
    return DataConfig(**values)


def _batches(config: DataConfig, seed: int = 0, epoch: int = 0, count: int = 4) -> list[dict]:
    return list(itertools.islice(build_train_loader(config, seed, epoch, count), count))


def test_train_batches_shapes_and_kinds(relative_shards, metric_shards) -> None:
    batches = _batches(_config([str(relative_shards), str(metric_shards)]))
    assert len(batches) == 4
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["target"].shape == (4, 1, 64, 64) and batch["valid"].dtype == torch.bool
    kinds = {
        key.split("/")[1].split("_")[0]: bool(flag) for b in batches for key, flag in zip(b["key"], b["is_metric"])
    }
    assert kinds == {"train": False, "metric": True}  # both sets mixed in, each with its own kind


def test_mixing_weights(relative_shards, metric_shards) -> None:
    only_first = _batches(_config([str(relative_shards), str(metric_shards)], train_weights=[1.0, 0.0]))
    assert all(not bool(b["is_metric"].any()) for b in only_first)
    with pytest.raises(ValueError, match="train_weights"):
        _batches(_config([str(relative_shards), str(metric_shards)], train_weights=[1.0]))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_is_deterministic_per_seed_and_epoch(relative_shards, workers: int) -> None:
    config = _config(str(relative_shards), num_workers=workers)
    first, again = _batches(config), _batches(config)
    assert [b["key"] for b in first] == [b["key"] for b in again]
    for a, b in zip(first, again):
        torch.testing.assert_close(a["image"], b["image"])
    other_epoch = _batches(config, epoch=1)
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, other_epoch))


def test_pipeline_pickles_for_workers(relative_shards) -> None:
    loader = build_train_loader(_config(str(relative_shards)), 0, 0, 2)
    pickle.loads(pickle.dumps(loader.dataset))  # no lambdas or closures anywhere in the pipeline
    pickle.loads(pickle.dumps(build_val_loader(_config("unused", val=str(relative_shards))).dataset))


def test_validation_reads_every_sample_once_across_ranks(val_shards) -> None:
    config = _config("unused", val=str(val_shards), val_batch_size=3)
    expected = sorted(s.key for s in build_pipeline(str(val_shards), training=False, split=False))
    seen = []
    for rank in range(2):
        for batch in build_val_loader(config, workers=0, rank=rank, world_size=2):
            assert batch["image"].shape[1:] == (3, 64, 64)
            seen.extend(batch["key"])
    assert sorted(seen) == expected and len(expected) == 12


@pytest.mark.parametrize(
    "meta", [{"eval_split": "nyu_test"}, {"extra": {"nyu_split": "test"}}], ids=["marked", "imported-before-the-mark"]
)
def test_training_and_validation_refuse_an_evaluation_split(tmp_path, meta: dict) -> None:
    """Issue 15 item 4: a benchmark's test samples stop both readers, naming the shard and the key that allows them;
    with ``data.allow_eval_split`` they are read."""
    write_scene_shards(tmp_path, METRIC_DEPTH, shards=1, prefix="nyutest", meta=meta)
    shard = "nyutest-000-000000.tar"
    refused = rf"{shard}: sample .* evaluation split 'nyu_test'.*--data.allow_eval_split true"
    with pytest.raises(EvalSplitError, match=refused):
        _batches(_config(str(tmp_path)), count=1)
    with pytest.raises(EvalSplitError, match=refused):
        list(build_val_loader(_config("unused", val=str(tmp_path)), workers=0))
    assert len(_batches(_config(str(tmp_path), allow_eval_split=True), count=1)) == 1
    allowed = _config("unused", val=str(tmp_path), allow_eval_split=True)
    assert sum(len(batch["key"]) for batch in build_val_loader(allowed, workers=0)) == 4


def test_a_worker_error_keeps_its_own_message_and_ends_the_workers(tmp_path) -> None:
    """Issue 24: torch raises a worker's exception with the worker's whole traceback as its message, and a loader left
    running keeps the process from exiting (its workers ignore SIGTERM). Read through ``worker_batches``, the error
    is the worker's own one line and no worker is left."""
    write_scene_shards(tmp_path, METRIC_DEPTH, shards=1, prefix="nyutest", meta={"eval_split": "nyu_test"})
    config = _config(str(tmp_path), val=str(tmp_path), num_workers=1)
    for reader in (worker_batches(build_val_loader(config)), iter(build_train_loader(config, 0, 0, 2))):
        with pytest.raises(EvalSplitError) as raised:
            next(reader)
        assert str(raised.value).startswith(f"{tmp_path}/nyutest-000-000000.tar: sample ")
        assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)
        assert multiprocessing.active_children() == []


def test_missing_shards_say_what_to_set() -> None:
    with pytest.raises(ValueError, match="--data.train"):
        DataConfig().train_sets()
    with pytest.raises(ValueError, match="multiples of 32"):
        DataConfig(size=[100, 64])
