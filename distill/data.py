"""Training and validation data: shards -> augmented, batched tensors.

Training: each shard set is read by ``shards.reader.build_pipeline(training=True)`` (resampled shards, a sample
shuffle buffer), several sets are mixed with weights, each sample gets a random resized crop (512x384 -> 256x192 by
default; image bilinear with antialiasing, label and mask nearest-exact, docs/decisions.md), a horizontal flip and a
colour jitter, and ``with_epoch`` bounds every reader so that each rank runs the same number of steps.

Determinism (for exact resume): the stream is cut into *data epochs* of ``data.epoch_steps`` optimizer steps; data
epoch ``e`` is a fresh pipeline seeded from ``(seed, e)``, and every random choice (shards, shuffle, mixing, crops,
flips, jitter) comes from generators seeded from that seed, the rank and the DataLoader worker. So the batches of a
step depend only on (seed, step, world size, workers), and a resumed run reads the same batches as an uninterrupted
one (it rebuilds the epoch and discards the batches already used).

Integrity: every reader checks each sample's checksums before decoding, skips a damaged one and counts lost ones;
its counts ride with each batch to the training process (``distill.integrity``), which logs them and stops past
``data.max_damaged_fraction``.

Test splits: a sample marked as part of a benchmark's evaluation split (``eval_split`` in its json: NYU test, DIODE
val, or what ``import-rgbd --eval-split`` named) stops the training and the validation reader with an error that
names its shard, unless ``data.allow_eval_split`` is true (which the resolved config and the reports then state).

Validation: the held-out shards, every sample exactly once, split by node and worker; each sample is resized to the
training size without augmentation. The loaders are plain torch DataLoaders, never passed to
``accelerator.prepare`` (prepare breaks WebDataset splitting: docs/library-notes.md, "Accelerate").

Everything a worker runs is a module-level class or function (workers may pickle the pipeline).
"""

from __future__ import annotations

import logging
import math
import signal
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from webdataset.utils import pytorch_worker_info

from distill.eval_splits import EvalSplitGuard, eval_split_screen
from distill.integrity import READS_FIELD, ReadTally, tally_for
from shards.format import METRIC_DEPTH, STUDENT_SIZE, DepthSample, check_input_size
from shards.reader import SkipCounter, build_pipeline, expand_shard_urls

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Shards and augmentation.

    ``train``: one shard set (a folder, pattern or comma list) or a list of sets mixed with ``train_weights``;
    ``val``: held-out shards for validation and for choosing the best checkpoint."""

    train: str | list[str] = ""
    """training shards: one set (a folder, brace pattern or comma list) or a list of sets mixed by train_weights"""
    train_weights: list[float] | None = None
    """one weight per set in ``train``; default equal"""
    val: str | None = None
    """held-out shards for validation and for choosing the best checkpoint (null: no validation)"""
    size: list[int] = field(default_factory=lambda: list(STUDENT_SIZE))
    """(width, height), multiples of 32"""
    batch_size: int = 64
    """per process and micro-step"""
    val_batch_size: int = 64
    """validation batch size per process"""
    num_workers: int = 8
    """DataLoader workers per process (0 = read in the training process)"""
    shuffle_buffer: int = 2000
    """samples"""
    epoch_steps: int = 1000
    """optimizer steps per data epoch (the stream is re-seeded at each)"""
    crop_scale: list[float] = field(default_factory=lambda: [0.64, 1.0])
    """crop area / sample area"""
    crop_ratio: list[float] = field(default_factory=lambda: [0.9, 1.1])
    """crop aspect / output aspect"""
    flip: float = 0.5
    """probability of a horizontal flip"""
    brightness: float = 0.2
    """colour jitter: factors drawn from [1 - x, 1 + x]"""
    contrast: float = 0.2
    """colour jitter: contrast factor drawn from [1 - x, 1 + x]"""
    saturation: float = 0.2
    """colour jitter: saturation factor drawn from [1 - x, 1 + x]"""
    checksums: bool = True
    """check every member's sha256 before decoding (docs/shards.md; cost in BENCHMARKS.md)"""
    max_damaged_fraction: float = 0.01
    """stop when more of the samples read are damaged or lost (see distill.integrity)"""
    allow_eval_split: bool = False
    """true: read samples marked as a benchmark's evaluation split (test-set leakage; the reports say so)"""

    def __post_init__(self) -> None:
        check_input_size(*self.size, "data.size")
        if not 0.0 <= self.max_damaged_fraction <= 1.0:
            raise ValueError(f"data.max_damaged_fraction must lie in [0, 1], got {self.max_damaged_fraction}")

    def train_sets(self) -> list[str]:
        sets = [self.train] if isinstance(self.train, str) else list(self.train)
        sets = [s for s in sets if s]
        if not sets:
            raise ValueError("no training shards: set --data.train to a folder of shards (or a list of shard sets)")
        return sets


# ---------------------------------------------------------------------------------------------------------------
# Transforms: DepthSample -> dict of tensors


def _nearest_exact_indices(start: float, length: float, count: int, limit: int) -> np.ndarray:
    """Source indices of ``count`` output pixels covering [start, start + length): pixel centres, floored."""
    centres = start + (np.arange(count, dtype=np.float64) + 0.5) * (length / count)
    return np.clip(np.floor(centres).astype(np.int64), 0, limit - 1)


def resize_crop(sample: DepthSample, box: tuple[float, float, float, float], size: tuple[int, int]) -> dict:
    """Crop ``box`` (left, top, width, height; source pixels, may be fractional) and resize to ``size`` (W, H):
    the image bilinear with antialiasing (PIL), label and mask nearest-exact. Returns uint8 / float32 / bool arrays."""
    left, top, box_width, box_height = box
    width, height = size
    picture = Image.fromarray(sample.image).resize(
        (width, height), Image.BILINEAR, box=(left, top, left + box_width, top + box_height)
    )
    rows = _nearest_exact_indices(top, box_height, height, sample.depth.shape[0])
    cols = _nearest_exact_indices(left, box_width, width, sample.depth.shape[1])
    return {  # take() twice is ~5x faster than fancy indexing with an outer product of indices
        "image": np.asarray(picture),
        "depth": sample.depth.take(rows, axis=0).take(cols, axis=1),
        "valid": sample.valid.take(rows, axis=0).take(cols, axis=1),
    }


def _channels_first(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 255], C-contiguous (one copy)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


def _to_tensors(key: str, image: np.ndarray, depth: np.ndarray, valid: np.ndarray, kind: str) -> dict:
    """float32 (3, H, W) image in [0, 1], label and mask (H, W) -> the training sample dict of tensors."""
    return {
        "key": key,
        "image": torch.from_numpy(image),  # (3, H, W)
        "target": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],  # (1, H, W)
        "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None],  # (1, H, W)
        "is_metric": kind == METRIC_DEPTH,
    }


def centre_box(source_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred box of the output's aspect ratio in a (W, H) source."""
    source_width, source_height = source_size
    aspect = size[0] / size[1]
    box_width = min(source_width, source_height * aspect)
    box_height = box_width / aspect
    return ((source_width - box_width) / 2, (source_height - box_height) / 2, box_width, box_height)


class EvalTransform:
    """Validation: the centred box of the output aspect (the whole 512x384 sample for 4:3), resized to ``size``."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: DepthSample) -> dict:
        box = centre_box((sample.depth.shape[1], sample.depth.shape[0]), self.size)
        out = resize_crop(sample, box, self.size)
        image = _channels_first(out["image"])
        image *= np.float32(1.0 / 255.0)
        return _to_tensors(sample.key, image, out["depth"], out["valid"], sample.meta.kind)


class TrainTransform:
    """Random resized crop, horizontal flip and colour jitter, image and label kept aligned.

    Random numbers come from a generator seeded at first use from ``(seed, rank, worker)``, so each reader has
    its own reproducible sequence.
    """

    def __init__(self, config: DataConfig, seed: int) -> None:
        self.size = (int(config.size[0]), int(config.size[1]))
        self.crop_scale = tuple(config.crop_scale)
        self.crop_ratio = tuple(config.crop_ratio)
        self.flip = config.flip
        self.jitter = (config.brightness, config.contrast, config.saturation)
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def _generator(self) -> np.random.Generator:
        if self._rng is None:
            rank, _, worker, _ = pytorch_worker_info()
            self._rng = np.random.default_rng([self.seed, rank, worker, 1])
        return self._rng

    def random_box(self, rng: np.random.Generator, source_size: tuple[int, int]) -> tuple[float, float, float, float]:
        source_width, source_height = source_size
        area = source_width * source_height * rng.uniform(*self.crop_scale)
        aspect = self.size[0] / self.size[1] * math.exp(rng.uniform(*np.log(self.crop_ratio)))
        box_width = min(math.sqrt(area * aspect), source_width)
        box_height = min(math.sqrt(area / aspect), source_height)
        left = rng.uniform(0, source_width - box_width)
        top = rng.uniform(0, source_height - box_height)
        return (left, top, box_width, box_height)

    def colour_jitter(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """float32 (3, H, W) in [0, 255], in place -> [0, 1]: brightness, contrast about the mean grey, saturation
        about each pixel's grey (ITU-R 601 luma weights)."""
        brightness, contrast, saturation = (np.float32(rng.uniform(1 - x, 1 + x)) for x in self.jitter)
        image *= brightness / np.float32(255.0)
        grey = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]  # (H, W)
        mean = grey.mean(dtype=np.float32)
        image -= mean
        image *= contrast
        image += mean
        grey -= mean
        grey *= contrast
        grey += mean  # the grey of the contrast-adjusted image
        image *= saturation
        image += (1 - saturation) * grey
        return np.clip(image, 0.0, 1.0, out=image)

    def __call__(self, sample: DepthSample) -> dict:
        rng = self._generator()
        box = self.random_box(rng, (sample.depth.shape[1], sample.depth.shape[0]))
        out = resize_crop(sample, box, self.size)
        image, depth, valid = out["image"], out["depth"], out["valid"]
        if rng.uniform() < self.flip:
            image, depth, valid = image[:, ::-1], depth[:, ::-1], valid[:, ::-1]
        image = self.colour_jitter(rng, _channels_first(image))
        return _to_tensors(sample.key, image, depth, valid, sample.meta.kind)


def collate_samples(samples: list[dict]) -> dict:
    """Stack sample dicts: image (B, 3, H, W) float, target (B, 1, H, W), valid (B, 1, H, W) bool, is_metric (B,)
    bool, key: list of str."""
    return {
        "key": [s["key"] for s in samples],
        "image": torch.stack([s["image"] for s in samples]),
        "target": torch.stack([s["target"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "is_metric": torch.tensor([bool(s["is_metric"]) for s in samples]),
    }


# ---------------------------------------------------------------------------------------------------------------
# Training stream


class MixedShardSets(IterableDataset):
    """Endless decoded samples drawn from several shard sets with weights (``wds.RandomMix``, with our own seeded
    generator so the mix is reproducible). Each set is a resampled ``build_pipeline(training=True)``; one
    ``SkipCounter`` per reader counts what they skip and lose (see :class:`AttachReads`)."""

    def __init__(
        self, shard_sets: Sequence[list[str]], weights: Sequence[float], seed: int, shuffle_buffer: int,
        checksums: bool = True, max_damaged_fraction: float | None = None, screen: EvalSplitGuard | None = None,
    ):
        if len(weights) != len(shard_sets):
            raise ValueError(f"data.train_weights has {len(weights)} weights for {len(shard_sets)} shard sets")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"data.train_weights must be non-negative with a positive sum, got {list(weights)}")
        self.shard_sets = [list(urls) for urls in shard_sets]
        self.probabilities = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.checksums = checksums
        self.max_damaged_fraction = max_damaged_fraction
        self.screen = screen
        self.counter = SkipCounter(max_fraction=max_damaged_fraction)
        self.reader = ""

    def __iter__(self) -> Iterator[DepthSample]:
        rank, _, worker, _ = pytorch_worker_info()
        rng = np.random.default_rng([self.seed, rank, worker, 2])
        self.counter = SkipCounter(max_fraction=self.max_damaged_fraction)
        self.reader = uuid.uuid4().hex  # this reader's counts, told apart from other workers' and loaders'
        sources = [
            iter(build_pipeline(
                urls, training=True, seed=self.seed + 7919 * index, shuffle_buffer=self.shuffle_buffer,
                skip_counter=self.counter, checksums=self.checksums, screen=self.screen,
            ))
            for index, urls in enumerate(self.shard_sets)
        ]
        while True:
            index = int(rng.choice(len(sources), p=self.probabilities)) if len(sources) > 1 else 0
            try:
                yield next(sources[index])
            except StopIteration:  # a resampled source only ends when it holds no readable sample at all
                raise RuntimeError(f"shard set {index} ({self.shard_sets[index][:2]}...) yielded no sample") from None


class AttachReads:
    """Pipeline stage after batching: the batch carries its reader's cumulative counts (read, skipped and lost
    samples, by reason and shard) to the training process, which has no other view into a DataLoader worker."""

    def __init__(self, dataset: MixedShardSets) -> None:
        self.dataset = dataset  # pickled with the pipeline: each worker sees its own copy

    def __call__(self, batch: dict) -> dict:
        batch[READS_FIELD] = {"reader": self.dataset.reader, **self.dataset.counter.snapshot()}
        return batch


class TalliedLoader:
    """The training DataLoader, taking each batch's reader counts off into the run's :class:`ReadTally`."""

    def __init__(self, loader: DataLoader, tally: ReadTally) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.tally = tally

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            reads = batch.pop(READS_FIELD, None)
            if reads is not None:
                self.tally.record(reads)
            yield batch


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the training process, which checkpoints and then shuts them
    down; a worker killed by Ctrl-C or a scheduler's SIGTERM would make the next batch raise before the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_seed(seed: int, epoch: int) -> int:
    """The stream seed of data epoch ``epoch``: independent streams per epoch, reproducible from (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def build_train_loader(config: DataConfig, seed: int, epoch: int, batches: int) -> TalliedLoader:
    """A DataLoader over ``batches`` training batches of data epoch ``epoch`` for this process, whose counts of
    damaged and lost samples go to ``distill.integrity.tally_for(config)``.

    Every worker yields ``ceil(batches / workers)`` batches (``with_epoch``); the caller takes the first
    ``batches`` (the DataLoader interleaves workers in a fixed order, so that prefix is deterministic).
    """
    shard_sets = [expand_shard_urls(spec) for spec in config.train_sets()]
    weights = config.train_weights or [1.0] * len(shard_sets)
    stream_seed = epoch_seed(seed, epoch)
    workers = max(0, config.num_workers)
    per_worker = math.ceil(batches / max(1, workers))
    mixed = MixedShardSets(
        shard_sets, weights, stream_seed, config.shuffle_buffer, config.checksums, config.max_damaged_fraction,
        eval_split_screen(config.allow_eval_split, "training"),
    )
    pipeline = wds.DataPipeline(
        mixed,
        wds.map(TrainTransform(config, stream_seed)),
        wds.batched(config.batch_size, collation_fn=collate_samples, partial=False),
        wds.map(AttachReads(mixed)),
    ).with_epoch(nbatches=per_worker)
    loader = DataLoader(
        pipeline, batch_size=None, num_workers=workers, persistent_workers=False, worker_init_fn=ignore_stop_signals
    )
    return TalliedLoader(loader, tally_for(config))


def build_val_loader(
    config: DataConfig, workers: int | None = None, rank: int | None = None, world_size: int | None = None
) -> DataLoader:
    """Validation batches: every held-out sample exactly once across processes and workers, no augmentation.

    ``rank`` / ``world_size`` default to torch.distributed's (tests pass them to simulate nodes)."""
    if not config.val:
        raise ValueError("no validation shards: set --data.val to a folder of held-out shards")
    pipeline = build_pipeline(
        config.val, training=False, transform=EvalTransform(config.size), split=True, rank=rank, world_size=world_size,
        screen=eval_split_screen(config.allow_eval_split, "validation"),
    )
    pipeline.append(wds.batched(config.val_batch_size, collation_fn=collate_samples, partial=True))
    workers = config.num_workers if workers is None else workers
    return DataLoader(pipeline, batch_size=None, num_workers=workers, worker_init_fn=ignore_stop_signals)
