"""Write NYU Depth v2's official layouts (``nyu_depth_v2_labeled.mat``, ``splits.mat``), for tests and the demo: files
that :mod:`shards.tools.nyu` reads exactly as it reads the released ones."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import webdataset as wds

from shards.format import (
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    DepthSample,
    ExtraLabel,
    SampleMeta,
    decode_sample,
    encode_sample,
    inverse_depth,
)
from shards.reader import SkipCounter, build_pipeline, checked_samples, decoded_samples
from shards.tools.verify import verify_shard
from shards.writer import ShardWriter, stats_path


def _matlab_v73_header() -> bytes:
    """The 512-byte user block MATLAB puts before the HDF5 data of a v7.3 file (so scipy recognises v7.3)."""
    created = time.strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 ."
    header = text.encode("ascii").ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    return header.ljust(512, b"\x00")


def write_nyu_labeled(path: str | Path, images: np.ndarray, depths: np.ndarray, raw_depths: np.ndarray) -> Path:
    """Write frames in the official ``nyu_depth_v2_labeled.mat`` layout (MATLAB v7.3 / HDF5, transposed).

    ``images`` uint8 (N, H, W, 3); ``depths`` (in-painted) and ``raw_depths`` (0 = hole) float (N, H, W) in
    metres. Stored as MATLAB does: ``images`` N x 3 x W x H, depths N x W x H float32, one chunk per frame.
    """
    images = np.asarray(images)
    depths = np.asarray(depths, dtype=np.float32)
    raw_depths = np.asarray(raw_depths, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if depths.shape != images.shape[:3] or raw_depths.shape != images.shape[:3]:
        raise ValueError(
            f"depths {depths.shape} and raw_depths {raw_depths.shape} must be (N, H, W) {images.shape[:3]}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = depths.shape
    with h5py.File(path, "w", userblock_size=512) as file:
        stored = file.create_dataset("images", data=images.transpose(0, 3, 2, 1), chunks=(1, 3, width, height))
        stored.attrs["MATLAB_class"] = np.bytes_("uint8")
        for name, values in (("depths", depths), ("rawDepths", raw_depths)):
            stored = file.create_dataset(name, data=values.transpose(0, 2, 1), chunks=(1, width, height))
            stored.attrs["MATLAB_class"] = np.bytes_("single")
    with open(path, "r+b") as raw:
        raw.write(_matlab_v73_header())
    return path


def write_nyu_splits(path: str | Path, train_1based: Sequence[int], test_1based: Sequence[int]) -> Path:
    """Write ``splits.mat`` as the official file is: MATLAB v5, ``trainNdxs`` and ``testNdxs`` as 1-based
    column vectors of doubles."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {
        "trainNdxs": np.asarray(train_1based, dtype=np.float64).reshape(-1, 1),
        "testNdxs": np.asarray(test_1based, dtype=np.float64).reshape(-1, 1),
    }
    scipy.io.savemat(str(path), columns, format="5")
    return path


CORRUPTIONS = (
    "bit_flip", "member_flip", "truncate", "zero_block", "duplicate_member", "delete_member", "swap_labels",
    "json_field",
)
SHARD_KINDS = ("generated", "frames", "teachers")


def _frame_sample(key: str, rng: np.random.Generator, size: tuple[int, int]) -> dict:
    """A photo-like sample: smooth shapes, texture and noise (JPEG-heavy), a smooth depth with sensor holes."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.01, 0.2, 2).tolist() + [rng.uniform(0, 6.3)]
        image[..., channel] = 128 + 80 * np.sin(fx * x + fy * y + phase)
    image += rng.normal(0, 12, image.shape)
    depth = 1.0 + 3.0 * (y / height) + 0.5 * np.sin(x / 9.0)
    valid = rng.uniform(size=depth.shape) > 0.1
    meta = SampleMeta(source=f"frames/{key}.jpg", kind=METRIC_DEPTH, source_size=size, crop_box=(0, 0, *size))
    return encode_sample(key, np.clip(image, 0, 255).astype(np.uint8), depth, meta, valid=valid)


def _generated_sample(key: str, seed: int, size: tuple[int, int]) -> dict:
    from shards.tools.scenes import render_scene

    scene = render_scene(seed, width=size[0], height=size[1], holes=True)
    meta = SampleMeta(source=f"scenes/{seed}", kind=RELATIVE_INVERSE_DEPTH, source_size=size, crop_box=(0, 0, *size))
    inverse = inverse_depth(scene.depth, scene.valid)
    return encode_sample(key, scene.image, inverse, meta, valid=scene.valid)


def _teachers_sample(key: str, seed: int, size: tuple[int, int]) -> dict:
    """A generated scene labelled by two teachers (format 3): relative inverse depth with the scene's holes, then
    metric depth everywhere, as a relative and a metric teacher would give them."""
    from shards.tools.scenes import render_scene

    scene = render_scene(seed, width=size[0], height=size[1], holes=True)
    meta = SampleMeta(source=f"scenes/{seed}", kind=RELATIVE_INVERSE_DEPTH, teacher="relative",
                      source_size=size, crop_box=(0, 0, *size))
    metric = ExtraLabel.from_depth(scene.depth * 1.1, METRIC_DEPTH, "metric", valid=scene.depth > 0)
    inverse = inverse_depth(scene.depth, scene.valid)
    return encode_sample(key, scene.image, inverse, meta, valid=scene.valid, more_labels=[metric])


def write_template(folder: Path, kind: str, samples: int = 6, seed: int = 0) -> Path:
    """One finished shard of ``samples`` samples of ``kind`` (one of ``SHARD_KINDS``) through the real writer."""
    rng = np.random.default_rng(seed)
    with ShardWriter(folder, kind, 0, 0) as writer:
        for index in range(samples):
            key = f"{kind}/{index:04d}"
            if kind == "frames":
                writer.write(_frame_sample(key, rng, (192, 144)))
            elif kind == "teachers":
                writer.write(_teachers_sample(key, seed * 100 + index, (128, 96)))
            else:
                writer.write(_generated_sample(key, seed * 100 + index, (128, 96)))
    return writer.path


# ---------------------------------------------------------------------------------------------------------------
# Corruptions: each takes the tar's bytes and a generator, returns the damaged bytes


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar.getmembers() if info.isfile()]


def _rewrite(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, payload in members:
            info = tarfile.TarInfo(info.name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _flip(data: bytes, offset: int, rng: np.random.Generator) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 1 << int(rng.integers(8))
    return bytes(damaged)


def bit_flip(data: bytes, rng: np.random.Generator) -> bytes:
    return _flip(data, int(rng.integers(len(data))), rng)


def member_flip(data: bytes, rng: np.random.Generator) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = [info for info in tar.getmembers() if info.isfile() and info.size]
    info = infos[int(rng.integers(len(infos)))]
    return _flip(data, info.offset_data + int(rng.integers(info.size)), rng)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(len(data)))]


def zero_block(data: bytes, rng: np.random.Generator) -> bytes:
    start = 512 * int(rng.integers(len(data) // 512))
    return data[:start] + bytes(512) + data[start + 512 :]


def duplicate_member(data: bytes, rng: np.random.Generator) -> bytes:
    members = _members(data)
    index = int(rng.integers(len(members)))
    at = int(rng.integers(len(members) + 1))
    return _rewrite(members[:at] + [members[index]] + members[at:])


def delete_member(data: bytes, rng: np.random.Generator) -> bytes:
    members = _members(data)
    del members[int(rng.integers(len(members)))]
    return _rewrite(members)


def swap_labels(data: bytes, rng: np.random.Generator) -> bytes:
    members = _members(data)
    labels = [i for i, (info, _) in enumerate(members) if ".depth16" in info.name]  # any teacher's label
    first, second = rng.choice(len(labels), 2, replace=False)
    a, b = labels[int(first)], labels[int(second)]
    members[a], members[b] = (members[a][0], members[b][1]), (members[b][0], members[a][1])
    return _rewrite(members)


def json_field(data: bytes, rng: np.random.Generator) -> bytes:
    """One character of a field name or of a value in one sample's json replaced (the record stays json)."""
    members = _members(data)
    jsons = [i for i, (info, _) in enumerate(members) if info.name.endswith(".json")]
    index = jsons[int(rng.integers(len(jsons)))]
    text = members[index][1].decode()
    record = json.loads(text)
    name = sorted(record)[int(rng.integers(len(record)))]
    if rng.uniform() < 0.5:  # damage the name: 'depth_codec' -> 'depth]codec'
        where = text.index(f'"{name}"') + 1 + int(rng.integers(len(name)))
    else:  # damage a character of the value
        start = text.index(f'"{name}"') + len(name) + 4
        end = text.find(', "', start)
        end = len(text) - 1 if end < 0 else end
        where = start + int(rng.integers(max(1, end - start)))
    replacement = chr(int(rng.integers(33, 127)))
    while replacement == text[where] or replacement in '"\\':
        replacement = chr(int(rng.integers(33, 127)))
    members[index] = (members[index][0], (text[:where] + replacement + text[where + 1 :]).encode())
    return _rewrite(members)


CORRUPT: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "bit_flip": bit_flip, "member_flip": member_flip, "truncate": truncate, "zero_block": zero_block,
    "duplicate_member": duplicate_member, "delete_member": delete_member, "swap_labels": swap_labels,
    "json_field": json_field,
}


# ---------------------------------------------------------------------------------------------------------------
# One trial


@dataclass
class Trial:
    corruption: str
    shard_kind: str
    changed: bool = False  # an unchecked reader would get some sample wrong (value, key, or the sample)
    damaged: set[str] = field(default_factory=set)  # those samples' keys
    flagged: bool = False  # verify found a problem
    named: set[str] = field(default_factory=set)  # keys verify names
    missed: set[str] = field(default_factory=set)  # damaged keys verify did not name
    yielded_damaged: int = 0  # samples the checked reader yielded that differ from the original (must be 0)
    delivered: int = 0
    counted: int = 0  # skipped + lost, exact mode
    count_error: int = 0  # |counted - (expected - delivered)|, exact mode plus the resampled-style double read


def same(sample: DepthSample, original: DepthSample) -> bool:
    return (
        sample.key == original.key and sample.meta == original.meta and np.array_equal(sample.image, original.image)
        and np.array_equal(sample.valid, original.valid) and np.array_equal(sample.depth, original.depth)
        and len(sample.labels) == len(original.labels)
        and all(np.array_equal(a.depth, b.depth) and np.array_equal(a.valid, b.valid)
                for a, b in zip(sample.labels, original.labels))
    )


def unchecked_read(path: Path) -> dict[str, DepthSample | None]:
    """What a reader without checks would get: key -> decoded sample (None when it does not decode)."""
    pipeline = wds.DataPipeline(
        wds.SimpleShardList([str(path)]), wds.tarfile_to_samples(handler=wds.ignore_and_continue)
    )
    found: dict[str, DepthSample | None] = {}
    for raw in pipeline:
        try:
            found[raw["__key__"]] = decode_sample(raw)
        except Exception:  # noqa: BLE001 - an undecodable sample is what this records
            found[raw["__key__"]] = None
    return found


def originals(template: Path) -> dict[str, DepthSample]:
    return {sample.key: sample for sample in build_pipeline(str(template), training=False, split=False)}


def run_trial(template: Path, truth: dict[str, DepthSample], folder: Path, corruption: str, seed: int) -> Trial:
    """Damage a copy of ``template`` with ``corruption`` and read it three ways (see the module docstring)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / template.name
    shutil.copy(stats_path(template), stats_path(path))
    path.write_bytes(CORRUPT[corruption](template.read_bytes(), rng))
    trial = Trial(corruption, template.name.split("-")[0])

    unchecked = unchecked_read(path)
    trial.damaged = {key for key in truth if unchecked.get(key) is None or not same(unchecked[key], truth[key])}
    trial.damaged |= set(unchecked) - set(truth)
    trial.changed = bool(trial.damaged)

    result = verify_shard(str(path))
    trial.flagged = bool(result.problems)
    trial.named = {problem.key for problem in result.problems if problem.key is not None}
    trial.missed = trial.damaged - trial.named

    counter = SkipCounter()
    delivered = list(build_pipeline(str(path), training=False, split=False, skip_counter=counter))
    trial.yielded_damaged = sum(1 for s in delivered if s.key not in truth or not same(s, truth[s.key]))
    trial.delivered, trial.counted = len(delivered), counter.count
    trial.count_error = abs(counter.count - (len(truth) - len(delivered)))

    twice = SkipCounter()  # resampled mode hands the same tar over and over: each full read counts its losses
    again = list(decoded_samples(checked_samples(iter([{"url": str(path)}] * 2), twice), decode_sample, twice))
    trial.yielded_damaged += sum(1 for s in again if s.key not in truth or not same(s, truth[s.key]))
    trial.count_error += abs(twice.count - (2 * len(truth) - len(again)))
    path.unlink()
    stats_path(path).unlink()
    return trial
