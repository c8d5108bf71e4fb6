"""The training augmentation's device path (``distill.training.device_augment``) on CPU tensors against today's
``TrainTransform``: for the parameters today's code draws, the same image within one grey level; the colour jitter
the same formula; and the draws themselves pinned, so that moving them into the workers cannot change them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.training.config import DataConfig
from distill.training.data import TrainBatches, TrainTransform, resize_crop
from distill.training.device_augment import (
    augment_on_device,
    batch_on_device,
    collate_device_samples,
    decode_without_image,
    jitter_colours,
    takes_device_path,
)
from shards.cli.errors import UserError
from shards.format import (
    RELATIVE_INVERSE_DEPTH,
    DepthSample,
    SampleMeta,
    as_bytes,
    decode_jpeg,
    decode_sample,
    encode_jpeg,
    encode_sample,
    inverse_depth,
)
from shards.tools.scenes import render_scene

#: Today's draws (crop box, flip, jitter factors) for seed 7 and 512x384 samples, reader (rank 0, worker 0),
#: recorded from ``TrainTransform`` before the device path existed.
TODAYS_DRAWS_SEED_7 = [
    ((16.30485857581917, 1.5845494944046186, 447.9332101238553, 353.8397267096086), True,
     (0.9168363213539124, 1.0633329153060913, 0.8295686841011047)),
    ((24.906313951676534, 14.207708622355614, 463.49513083123776, 355.75297249515944), True,
     (0.8181753158569336, 1.1042100191116333, 1.1142233610153198)),
    ((14.53157866567154, 0.3855429008710742, 465.5466049207939, 369.9041618767045), False,
     (0.9507696032524109, 1.0744837522506714, 0.9532068967819214)),
]


def todays_draws(transform: TrainTransform, sizes: list[tuple[int, int]]) -> list[tuple]:
    """What ``TrainTransform.__call__`` draws for samples of ``sizes`` (W, H), from a twin of its generator (the
    reader at rank 0, worker 0, outside a DataLoader), through ``TrainTransform.draw``, which both paths use."""
    rng = np.random.default_rng([transform.seed, 0, 0, 1])
    return [(draw.crop_box, draw.flip, draw.jitter) for draw in (transform.draw(rng, size) for size in sizes)]


def test_todays_draws_are_pinned() -> None:
    """The numbers the code before the device path drew (the box, the flip, then the jitter factors, inline)."""
    draws = todays_draws(TrainTransform(DataConfig(train="x"), seed=7), [(512, 384)] * 3)
    assert draws == TODAYS_DRAWS_SEED_7


def sample(seed: int, size: tuple[int, int]) -> tuple[DepthSample, bytes]:
    """A sample as the reader gives it (the image decoded from its stored JPEG) and that JPEG."""
    scene = render_scene(seed, *size)
    jpg = encode_jpeg(scene.image, 95)
    meta = SampleMeta(source=f"scene:{seed}", kind=RELATIVE_INVERSE_DEPTH)
    return DepthSample(f"k{seed}", decode_jpeg(jpg).copy(), scene.depth.astype(np.float32), scene.valid, meta), jpg


@pytest.mark.parametrize("sizes", [[(512, 384)] * 4, [(512, 384), (640, 480), (512, 384)]])
def test_device_images_are_todays_within_one_grey_level(sizes) -> None:
    config = DataConfig(train="x")
    samples, jpegs = zip(*(sample(seed, size) for seed, size in enumerate(sizes)))
    transform = TrainTransform(config, seed=7)
    today = torch.stack([transform(item)["image"] for item in samples])  # (B, 3, 192, 256) in [0, 1]
    draws = todays_draws(TrainTransform(config, seed=7), list(sizes))
    boxes, flips, jitter = (torch.tensor([draw[index] for draw in draws]) for index in range(3))
    ours = augment_on_device(list(jpegs), boxes, flips, jitter, (256, 192), "cpu")
    difference = (ours - today).abs() * 255  # grey levels
    assert ours.shape == today.shape and ours.dtype == torch.float32
    assert difference.max() <= 1.5 and difference.mean() < 0.01  # measured: 1.02 and 0.001
    assert bool(flips.any()) and not bool(flips.all())  # both branches compared


def test_jitter_is_todays_formula() -> None:
    pictures = torch.rand(2, 3, 20, 30, generator=torch.Generator().manual_seed(0)) * 255
    factors = [(1.1, 0.85, 1.17), (0.9, 1.2, 0.8)]
    today = [torch.from_numpy(TrainTransform.colour_jitter(picture.numpy().copy(), f))
             for f, picture in zip(factors, pictures)]
    ours = jitter_colours(pictures.clone(), torch.tensor(factors))
    assert (ours - torch.stack(today)).abs().max() < 1e-6


def raw_members(seed: int, size: tuple[int, int]) -> dict:
    """A sample's raw members as the reader hands them to its decoder."""
    scene = render_scene(seed, *size)
    meta = SampleMeta(source=f"scene:{seed}", kind=RELATIVE_INVERSE_DEPTH, source_size=size)
    members = encode_sample(f"k{seed}", scene.image, inverse_depth(scene.depth, scene.valid).astype(np.float32),
                            meta, valid=scene.valid)
    return {name: as_bytes(value) for name, value in members.items()}


def test_the_label_only_decoder_gives_todays_labels_and_keeps_the_jpeg() -> None:
    raw = {**raw_members(3, (512, 384)), "__key__": "k3"}
    today = decode_sample(raw)
    undecoded = decode_without_image(raw)
    assert undecoded.size == (512, 384) and undecoded.jpeg.tobytes() == raw["jpg"]
    assert np.array_equal(undecoded.depth, today.depth) and np.array_equal(undecoded.valid, today.valid)
    assert undecoded.meta == today.meta and takes_device_path(undecoded)
    first_only = decode_without_image(raw, all_labels=False)
    assert np.array_equal(first_only.depth, today.depth) and first_only.labels == []
    other = {**raw, "jpg": raw_members(4, (256, 192))["jpg"]}
    with pytest.raises(ValueError, match="differ"):
        decode_without_image(other)


def test_a_worker_batch_becomes_todays_images_on_the_device() -> None:
    """Two samples the device decodes and one its worker decoded and cropped (a progressive JPEG), as
    ``collate_device_samples`` hands them over: the images are today's within one grey level."""
    config = DataConfig(train="x")
    samples, jpegs = zip(*(sample(seed, (512, 384)) for seed in range(3)))
    transform = TrainTransform(config, seed=7)
    expected = torch.stack([transform(item)["image"] for item in samples])
    draws = todays_draws(TrainTransform(config, seed=7), [(512, 384)] * 3)
    worker_samples = []
    for index, ((box, flip, jitter), item, jpg) in enumerate(zip(draws, samples, jpegs)):
        crop = None
        if index == 1:  # decoded and cropped by its worker, as today, then only jittered on the device
            pixels = resize_crop(item, box, (256, 192))["image"]
            crop = torch.from_numpy(np.ascontiguousarray(pixels[:, ::-1] if flip else pixels)).permute(2, 0, 1)
        worker_samples.append({
            "key": item.key, "jpeg": None if crop is not None else np.frombuffer(jpg, dtype=np.uint8), "crop": crop,
            "crop_box": box, "flip": flip, "jitter": jitter, "target": torch.zeros(1, 192, 256),
            "valid": torch.ones(1, 192, 256, dtype=torch.bool), "is_metric": False,
        })
    batch = batch_on_device(collate_device_samples(worker_samples), torch.device("cpu"))
    assert set(batch) == {"key", "image", "target", "valid", "is_metric"}
    assert (batch["image"][1] - expected[1]).abs().max() < 1e-6  # the worker's crop: today's, jittered in torch
    assert (batch["image"] - expected).abs().max() * 255 <= 1.5


@pytest.mark.parametrize("workers", [0, 2])
def test_the_device_paths_batches_are_todays(relative_shards, metric_shards, workers) -> None:
    """``data.decode_device`` model (on the CPU here) against cpu: the same samples, labels and masks in the same
    order, the images within one grey level, each step; DataLoader workers pickle the device path's samples."""
    def config(decode_device: str) -> DataConfig:
        return DataConfig(train=[str(relative_shards), str(metric_shards)], size=[64, 32], batch_size=4,
                          num_workers=workers, shuffle_buffer=8, epoch_steps=3, decode_device=decode_device)

    readers = [TrainBatches(config(name), 0, 1, torch.device("cpu"), "inverse_depth") for name in ("cpu", "model")]
    try:
        for step in range(4):  # across a data epoch's end
            today, ours = (reader.next(step) for reader in readers)
            assert today["key"] == ours["key"]
            for name in ("target", "valid", "is_metric"):
                assert torch.equal(today[name], ours[name]), name
            assert ours["image"].shape == today["image"].shape
            assert (ours["image"] - today["image"]).abs().max() * 255 <= 1.5
    finally:
        for reader in readers:
            reader.close()


def test_a_device_batch_that_does_not_fit_names_the_batch_size_key(relative_shards, monkeypatch) -> None:
    import distill.training.data

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(distill.training.data, "batch_on_device", out_of_memory)
    config = DataConfig(train=str(relative_shards), size=[64, 32], batch_size=4, num_workers=0, shuffle_buffer=8,
                        decode_device="model")
    reader = TrainBatches(config, 0, 1, torch.device("cpu"), "inverse_depth")
    with pytest.raises(UserError, match=r"lower data.batch_size \(now 4\)"):
        reader.next(0)
    reader.close()
