"""Training and validation data: shards -> augmented batches on the device, the target in the loss's space; the
readers' damage counts; the guard against benchmark test splits.

Training: each shard set is read by ``shards.reader.build_pipeline(training=True)`` (resampled shards, a sample
shuffle buffer), several sets are mixed with weights, each sample gets a random resized crop (512x384 -> 256x192 by
default; image bilinear with antialiasing, label and mask nearest-exact, docs/decisions.md), a horizontal flip and a
colour jitter, and every reader makes the same number of batches so that each rank runs the same number of steps.
:class:`TrainBatches` hands the loop the batch of each step on the device, its target already in the student's space
(:func:`distill.training.losses.target_in_space`: the one place a metric label becomes inverse depth).

Several teachers: a sample labelled by several teachers (format 3) is trained on the label ``data.teachers`` names
(:func:`teacher_label`): the first teacher's (the default; the others are not even decoded), their aligned mean
(:func:`mean_of_teachers`), or one drawn per sample per step.

Determinism (for exact resume): the stream is cut into *data epochs* of ``data.epoch_steps`` optimizer steps; data
epoch ``e`` is a fresh pipeline seeded from ``(seed, e)``, and every random choice (shards, shuffle, mixing, crops,
flips, jitter) comes from generators seeded from that seed, the rank and the DataLoader worker. So the batches of a
step depend only on (seed, step, world size, workers), and a resumed run reads the same batches as an uninterrupted
one (it rebuilds the epoch and discards the batches already used).

Damage counts: every reader checks each sample's checksums before decoding, skips a damaged one and counts lost ones
in a ``shards`` ``SkipCounter``. A DataLoader worker has no way to the training process but its batches, so each
batch carries its reader's cumulative counts (``batch["reads"]``); the loader takes them off into the
:class:`ReadTally` its caller holds (``TrainBatches.reads``). At each log interval :func:`log_data_integrity` sums
the interval over every process, returns the scalars to log, and stops the run when more than
``data.max_damaged_fraction`` of the samples read so far was damaged or lost, naming the worst shards.

Test splits: a sample marked as part of a benchmark's evaluation split (``eval_split`` in its json: NYU test, DIODE
val, or what ``import-rgbd --eval_split`` named) stops the training and the validation reader with an error that
names its shard (the reader's ``refuse_eval_splits``), unless ``data.allow_eval_split`` is true (which the resolved
config and the reports then state).

Validation: the held-out shards, every sample exactly once, split by node and worker; each sample is resized to the
training size without augmentation. The loaders are plain torch DataLoaders, never passed to
``accelerator.prepare`` (prepare breaks WebDataset splitting: docs/library-notes.md, "Accelerate").

Decode device (``data.decode_device``, docs/distill.md): on the training GPU the workers' half is
:class:`DeviceTrainTransform` (the label chosen, the parameters drawn by :meth:`TrainTransform.draw` as on the CPU
path, the label cropped, the JPEG sent undecoded) and the device's half is
:func:`distill.training.device_augment.batch_on_device`, called by :class:`TrainBatches`.

Everything a worker runs is a module-level class or function (workers pickle the dataset). One idea, the training
data from shard to batch: transforms, stream, loader and damage counts are the stages one sample passes, under one
determinism contract, so they stay in one module.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import signal
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import webdataset as wds
from accelerate.utils import gather_object, send_to_device
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from webdataset.utils import pytorch_worker_info

from distill.align import align_scale_shift
from distill.training.config import DataConfig
from distill.training.device_augment import (
    UndecodedSample,
    batch_on_device,
    collate_device_samples,
    decode_without_image,
    takes_device_path,
)
from distill.training.losses import target_in_space
from shards.cli.errors import UserError
from shards.decode_device import decodes_on_model
from shards.format import (
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    DecodedLabel,
    DepthSample,
    as_inverse_depth,
    decode_jpeg,
    decode_sample,
)
from shards.reader import LOST_TAR_ENDED, LOST_TAR_ERROR, SkipCounter, build_pipeline, expand_shard_urls, over_limit

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Transforms: DepthSample -> dict of tensors


def _nearest_exact_indices(start: float, length: float, count: int, limit: int) -> np.ndarray:
    """Source indices of ``count`` output pixels covering [start, start + length): pixel centres, floored."""
    centres = start + (np.arange(count, dtype=np.float64) + 0.5) * (length / count)
    return np.clip(np.floor(centres).astype(np.int64), 0, limit - 1)


def crop_image(image: np.ndarray, crop_box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> the ``crop_box`` (left, top, right, bottom; source pixels, may be fractional) resized to
    ``size`` (W, H), bilinear with antialiasing (PIL): uint8 (h, w, 3)."""
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.BILINEAR, box=crop_box))


def crop_label(depth: np.ndarray, valid: np.ndarray, crop_box: tuple[float, float, float, float],
               size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A label (H, W) and its mask -> the ``crop_box`` resized to ``size`` (W, H), nearest-exact."""
    left, top, right, bottom = crop_box
    width, height = size
    rows = _nearest_exact_indices(top, bottom - top, height, depth.shape[0])
    cols = _nearest_exact_indices(left, right - left, width, depth.shape[1])
    # take() twice is ~5x faster than fancy indexing with an outer product of indices
    return depth.take(rows, axis=0).take(cols, axis=1), valid.take(rows, axis=0).take(cols, axis=1)


def resize_crop(sample: DepthSample, crop_box: tuple[float, float, float, float], size: tuple[int, int]) -> dict:
    """Crop ``crop_box`` (left, top, right, bottom; source pixels, may be fractional) and resize to ``size`` (W, H):
    the image bilinear with antialiasing (PIL), label and mask nearest-exact. Returns uint8 / float32 / bool arrays."""
    depth, valid = crop_label(sample.depth, sample.valid, crop_box, size)
    return {"image": crop_image(sample.image, crop_box, size), "depth": depth, "valid": valid}


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


# ---------------------------------------------------------------------------------------------------------------
# Several teachers: which label a sample is trained on (data.teachers)

#: The reader's decoder when only the first label is used: the other teachers' labels are not decoded.
decode_first_label = functools.partial(decode_sample, all_labels=False)


def mean_of_teachers(labels: Sequence[DecodedLabel]) -> tuple[np.ndarray, np.ndarray]:
    """Several teachers' labels of one image -> one relative inverse-depth map (H, W) float32 and its mask (H, W).

    Teachers agree at best up to a scale and a shift (relative teachers have no units; a metric one's metres are a
    different quantity), so a plain average would mix units. Each label becomes inverse depth
    (:func:`shards.format.as_inverse_depth`: metres -> 1 / m, relative as it is); every later one is mapped onto the
    first by its least-squares scale and shift (:func:`distill.align.align_scale_shift`, the fit every metric uses),
    fitted and averaged over the pixels valid in all of them; the others are invalid. The result is relative
    inverse depth whatever the kinds: after a free scale and shift, metres are no longer metres."""
    valid = np.logical_and.reduce([label.valid for label in labels])  # (H, W)
    inverse = np.stack([np.where(valid, as_inverse_depth(label.depth, label.kind), 0.0) for label in labels])
    maps = torch.from_numpy(inverse.astype(np.float64))  # (T, H, W)
    mask = torch.from_numpy(valid)[None].expand_as(maps[1:])
    aligned = align_scale_shift(maps[1:], maps[:1].expand_as(maps[1:]), mask)  # (T - 1, H, W) onto the first
    mean = (maps[0] + aligned.sum(0)) / len(labels)
    return np.where(valid, mean.numpy(), 0.0).astype(np.float32), valid


def teacher_label(sample: DepthSample, mode: str, rng: np.random.Generator | None = None) -> tuple[DepthSample, str]:
    """The sample as it is trained on under ``data.teachers`` = ``mode``, and its label's kind: ``first`` (the
    first teacher's label), ``mean`` (:func:`mean_of_teachers`, relative) or ``random`` (one teacher's label, drawn
    from ``rng``: a different teacher each time the sample is read). A sample with one label keeps it in every mode."""
    labels = sample.labels
    if mode == "first" or len(labels) < 2:
        return sample, sample.meta.kind
    if mode == "random":
        label = labels[int(rng.integers(len(labels)))]
        return dataclasses.replace(sample, depth=label.depth, valid=label.valid), label.kind
    if mode == "mean":
        depth, valid = mean_of_teachers(labels)
        return dataclasses.replace(sample, depth=depth, valid=valid), RELATIVE_INVERSE_DEPTH
    raise ValueError(f"data.teachers is {mode!r}; expected first, mean or random")


def centre_box(source_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred crop box (left, top, right, bottom) of the output's aspect ratio in a (W, H) source."""
    source_width, source_height = source_size
    aspect = size[0] / size[1]
    box_width = min(source_width, source_height * aspect)
    box_height = box_width / aspect
    left, top = (source_width - box_width) / 2, (source_height - box_height) / 2
    return (left, top, left + box_width, top + box_height)


class EvalTransform:
    """Validation: the centred box of the output aspect (the whole 512x384 sample for 4:3), resized to ``size``; the
    first label, whatever ``data.teachers`` says (the held-out set's own label, comparable across runs)."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: DepthSample) -> dict:
        crop_box = centre_box((sample.depth.shape[1], sample.depth.shape[0]), self.size)
        out = resize_crop(sample, crop_box, self.size)
        image = _channels_first(out["image"])
        image *= np.float32(1.0 / 255.0)
        return _to_tensors(sample.key, image, out["depth"], out["valid"], sample.meta.kind)


@dataclasses.dataclass(frozen=True)
class AugmentDraw:
    """One sample's random augmentation: ``crop_box`` (left, top, right, bottom) in source pixels, fractional;
    ``flip``; ``jitter`` the (brightness, contrast, saturation) factors."""

    crop_box: tuple[float, float, float, float]
    flip: bool
    jitter: tuple[float, float, float]


class TrainTransform:
    """Random resized crop, horizontal flip and colour jitter, image and label kept aligned.

    Random numbers come from a generator seeded at first use from ``(seed, rank, worker)``, so each reader has
    its own reproducible sequence. The label is chosen first, by ``data.teachers`` (:func:`teacher_label`).
    """

    def __init__(self, config: DataConfig, seed: int) -> None:
        self.teachers = config.teachers
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
        """A random crop box (left, top, right, bottom): a share ``crop_scale`` of the area, the output aspect times a
        factor in ``crop_ratio``."""
        source_width, source_height = source_size
        area = source_width * source_height * rng.uniform(*self.crop_scale)
        aspect = self.size[0] / self.size[1] * math.exp(rng.uniform(*np.log(self.crop_ratio)))
        box_width = min(math.sqrt(area * aspect), source_width)
        box_height = min(math.sqrt(area / aspect), source_height)
        left = rng.uniform(0, source_width - box_width)
        top = rng.uniform(0, source_height - box_height)
        return (left, top, left + box_width, top + box_height)

    def draw(self, rng: np.random.Generator, source_size: tuple[int, int]) -> AugmentDraw:
        """One sample's parameters, in the order they have always been drawn: the box, the flip, the three colour
        factors (float32, as they are applied). Both paths draw here, so they see the same parameters."""
        crop_box = self.random_box(rng, source_size)
        flip = bool(rng.uniform() < self.flip)
        jitter = tuple(float(np.float32(rng.uniform(1 - x, 1 + x))) for x in self.jitter)
        return AugmentDraw(crop_box, flip, jitter)

    def __call__(self, sample: DepthSample) -> dict:
        rng = self._generator()
        sample, kind = teacher_label(sample, self.teachers, rng)
        draw = self.draw(rng, (sample.depth.shape[1], sample.depth.shape[0]))
        out = resize_crop(sample, draw.crop_box, self.size)
        image, depth, valid = out["image"], out["depth"], out["valid"]
        if draw.flip:
            image, depth, valid = image[:, ::-1], depth[:, ::-1], valid[:, ::-1]
        image = self.colour_jitter(_channels_first(image), draw.jitter)
        return _to_tensors(sample.key, image, depth, valid, kind)

    @staticmethod
    def colour_jitter(image: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
        """float32 (3, H, W) in [0, 255], in place -> [0, 1]: brightness, contrast about the mean grey, saturation
        about each pixel's grey (ITU-R 601 luma weights). numpy, not torch, in the workers: torch's threads made it
        up to 80x slower in a process with several on a loaded host (BENCHMARKS.md); the device path's
        ``device_augment.jitter_colours`` is the same formula, tested equal."""
        brightness, contrast, saturation = (np.float32(factor) for factor in factors)
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


class DeviceTrainTransform(TrainTransform):
    """The workers' half of the device path (:mod:`distill.training.device_augment`): the label chosen, the
    parameters drawn (:meth:`TrainTransform.draw`, the same generator and order as today's path) and the label
    cropped and flipped here; the JPEG sent as it is, or, where the device decoder should not take it, decoded,
    cropped and flipped here as today (only the jitter waits for the device)."""

    def __call__(self, sample: UndecodedSample) -> dict:
        rng = self._generator()
        sample, kind = teacher_label(sample, self.teachers, rng)
        draw = self.draw(rng, sample.size)
        depth, valid = crop_label(sample.depth, sample.valid, draw.crop_box, self.size)
        jpeg, crop = sample.jpeg, None
        if not takes_device_path(sample):
            pixels = crop_image(decode_jpeg(sample.jpeg.tobytes()), draw.crop_box, self.size)
            crop = torch.from_numpy(np.ascontiguousarray(pixels[:, ::-1] if draw.flip else pixels)).permute(2, 0, 1)
            jpeg = None
        if draw.flip:
            depth, valid = depth[:, ::-1], valid[:, ::-1]
        return {
            "key": sample.key, "jpeg": jpeg, "crop": crop, "crop_box": draw.crop_box, "flip": draw.flip,
            "jitter": draw.jitter,
            "target": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],  # (1, h, w)
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None],  # (1, h, w)
            "is_metric": kind == METRIC_DEPTH,
        }


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


#: The batch field that carries a reader's damage counts out of its DataLoader worker.
READS_FIELD = "reads"


def eval_split_refusal(allow_eval_split: bool, role: str) -> str | None:
    """How a ``role`` reader ("training", "validation") refuses a sample of a benchmark's evaluation split, for
    ``build_pipeline(refuse_eval_splits=...)``: None where ``data.allow_eval_split`` is true."""
    if allow_eval_split:
        return None
    return (
        f"which {role} does not read (a model must not train or be selected on its test set). Take these shards out "
        "of --data.train / --data.val, or set --data.allow_eval_split true to read them anyway (the resolved config "
        "and the reports then say so)"
    )


class TrainStream(IterableDataset):
    """One reader's training batches: samples drawn from the shard sets with weights (our own seeded generator, so
    the mix is reproducible), augmented by :class:`TrainTransform`, batched; each batch carries the reader's
    cumulative damage counts (``READS_FIELD``). Every set is a resampled ``build_pipeline(training=True)``, all
    counting into the reader's one ``SkipCounter``."""

    def __init__(self, config: DataConfig, shard_sets: list[list[str]], stream_seed: int, batches: int,
                 on_model: bool = False) -> None:
        weights = config.train_weights or [1.0] * len(shard_sets)
        if len(weights) != len(shard_sets):
            raise ValueError(f"data.train_weights has {len(weights)} weights for {len(shard_sets)} shard sets")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"data.train_weights must be non-negative with a positive sum, got {list(weights)}")
        self.shard_sets = shard_sets
        self.probabilities = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self.seed = stream_seed
        self.batches = batches
        self.batch_size = config.batch_size
        self.shuffle_buffer = config.shuffle_buffer
        self.checksums = config.checksums
        self.max_damaged_fraction = config.max_damaged_fraction
        self.refusal = eval_split_refusal(config.allow_eval_split, "training")
        if on_model:  # the device path: the JPEG stays undecoded, the batch is finished on the device
            self.decode = functools.partial(decode_without_image, all_labels=config.teachers != "first")
            self.transform, self.collate = DeviceTrainTransform(config, stream_seed), collate_device_samples
        else:
            self.decode = decode_first_label if config.teachers == "first" else decode_sample
            self.transform, self.collate = TrainTransform(config, stream_seed), collate_samples

    def __iter__(self) -> Iterator[dict]:
        counter = SkipCounter(max_fraction=self.max_damaged_fraction)
        reads = {"reader": uuid.uuid4().hex}  # this reader's counts, told apart from other workers' and epochs'
        batch: list[dict] = []
        made = 0
        for sample in map(self.transform, self.samples(counter)):
            if len(batch) == self.batch_size:  # handed over once the next sample is read, as wds.batched does
                yield {**self.collate(batch), READS_FIELD: {**reads, **counter.snapshot()}}
                made += 1
                if made == self.batches:
                    return
                batch = []
            batch.append(sample)

    def samples(self, counter: SkipCounter) -> Iterator[DepthSample]:
        """Endless decoded samples, each drawn from a set chosen by weight."""
        rank, _, worker, _ = pytorch_worker_info()
        rng = np.random.default_rng([self.seed, rank, worker, 2])
        sources = [
            iter(build_pipeline(
                urls, training=True, seed=self.seed + 7919 * index, shuffle_buffer=self.shuffle_buffer,
                skip_counter=counter, checksums=self.checksums, refuse_eval_splits=self.refusal, decode=self.decode,
            ))
            for index, urls in enumerate(self.shard_sets)
        ]
        while True:
            index = int(rng.choice(len(sources), p=self.probabilities)) if len(sources) > 1 else 0
            try:
                yield next(sources[index])
            except StopIteration:  # a resampled source only ends when it holds no readable sample at all
                raise RuntimeError(f"shard set {index} ({self.shard_sets[index][:2]}...) yielded no sample") from None


class TrainLoader:
    """The training batches of one data epoch for this process; each batch's reader counts are taken off into
    :attr:`reads` (the caller's tally, so that one tally spans the run's epochs)."""

    def __init__(self, loader: DataLoader, reads: ReadTally) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.reads = reads

    def __iter__(self) -> Iterator[dict]:
        for batch in worker_batches(self.loader):
            self.reads.record(batch.pop(READS_FIELD))
            yield batch


def worker_batches(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches, its workers shut down however the reading ends (finished, closed, or failed), and a
    worker's exception raised with the worker's own message (:func:`worker_error`).

    The workers ignore SIGTERM (:func:`ignore_stop_signals`): a loader still running when the process exits (held by
    an exception's traceback) leaves multiprocessing's exit handler joining its workers for ever. Close this generator
    (or let it finish) to end them; torch's own clean-up is the iterator's ``_shutdown_workers``, what its
    ``__del__`` calls."""
    batches = iter(loader)
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as error:
                rebuilt = worker_error(error)
                if rebuilt is error:
                    raise
                raise rebuilt from error
            yield batch
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # absent without workers
        if shutdown is not None:
            shutdown()


def worker_error(error: Exception) -> Exception:
    """torch raises a worker's exception again in the training process as its type with the worker's whole traceback
    as the message (``Caught X in DataLoader worker process 0. Original Traceback ...``); this returns the same type
    with the worker's own message (the traceback's last line), so that a user error stays one line. Any other error,
    or one whose type cannot be rebuilt from a message, is returned as it is."""
    text = str(error)
    if not (text.startswith("Caught ") and "in DataLoader worker process" in text.partition("\n")[0]):
        return error
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    _, found, message = text.rpartition(f"\n{name}: ")
    if not found:
        return error
    try:
        return kind(message.rstrip("\n"))  # the traceback's text ends with a newline
    except Exception:  # an exception type that takes more than a message
        return error


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the training process, which checkpoints and then shuts them
    down; a worker killed by Ctrl-C or a scheduler's SIGTERM would make the next batch raise before the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_seed(seed: int, epoch: int) -> int:
    """The stream seed of data epoch ``epoch``: independent streams per epoch, reproducible from (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def build_train_loader(
    config: DataConfig, seed: int, epoch: int, batches: int, reads: ReadTally | None = None, on_model: bool = False
) -> TrainLoader:
    """A loader over ``batches`` training batches of data epoch ``epoch`` for this process, whose counts of damaged
    and lost samples go to ``reads`` (a new tally when None). ``on_model``: the device path's batches
    (:func:`~distill.training.device_augment.batch_on_device` finishes them).

    Every worker yields ``ceil(batches / workers)`` batches; the caller takes the first ``batches`` (the DataLoader
    interleaves workers in a fixed order, so that prefix is deterministic).
    """
    shard_sets = [expand_shard_urls(spec) for spec in config.train_sets()]
    workers = max(0, config.num_workers)
    stream = TrainStream(config, shard_sets, epoch_seed(seed, epoch), math.ceil(batches / max(1, workers)), on_model)
    loader = DataLoader(
        stream, batch_size=None, num_workers=workers, persistent_workers=False, worker_init_fn=ignore_stop_signals
    )
    return TrainLoader(loader, reads if reads is not None else ReadTally())


class TrainBatches:
    """The batch of each step from step ``s`` onwards, on ``device``, its target in ``space`` (the student's
    prediction: :func:`~distill.training.losses.target_in_space`). Data epoch ``s // epoch_steps`` is rebuilt at each
    epoch boundary, the batches already used in the current epoch read and discarded (deterministic stream, above).
    :attr:`reads` holds the damage counts of every epoch's readers."""

    def __init__(self, config: DataConfig, seed: int, accumulation: int, device: torch.device, space: str) -> None:
        self.config = config
        self.seed = seed
        self.accumulation = accumulation
        self.device = device
        self.space = space
        self.micro_steps = config.epoch_steps * accumulation
        self.on_model = decodes_on_model(config.decode_device, device)
        where = f"on {device}" if self.on_model else "by the data loader's processes"
        logger.info("training images are decoded %s (data.decode_device %s)", where, config.decode_device)
        self.reads = ReadTally()
        self._epoch: int | None = None
        self._batches: Iterator[dict] | None = None  # the epoch's reader (a generator: closing it ends its workers)
        self._iterator: Iterator[dict] | None = None

    def next(self, step: int) -> dict:
        epoch, offset = divmod(step, self.config.epoch_steps)
        if epoch != self._epoch:
            self.close()
            loader = build_train_loader(self.config, self.seed, epoch, self.micro_steps, self.reads, self.on_model)
            skip = offset * self.accumulation
            if skip:
                logger.info("resuming inside data epoch %d: reading and discarding %d batches", epoch, skip)
            self._batches = iter(loader)
            self._iterator = itertools.islice(self._batches, skip, self.micro_steps)
            self._epoch = epoch
        batch = next(self._iterator)
        if not self.on_model:
            return batch_in_space(send_to_device(batch, self.device), self.space)
        try:
            return batch_in_space(batch_on_device(batch, self.device), self.space)
        except torch.cuda.OutOfMemoryError:
            raise UserError(f"a batch of {self.config.batch_size} images does not fit in the memory of {self.device} "
                            f"beside the model: lower data.batch_size (now {self.config.batch_size})") from None

    def close(self) -> None:
        """End the current epoch's loader workers: at each new epoch, and when the run ends, however it ends."""
        if self._batches is not None:
            self._batches.close()
        self._batches = self._iterator = self._epoch = None


def batch_in_space(batch: dict, space: str) -> dict:
    """The batch with its target (and valid mask) in ``space``, where the batch is made: once, for every user."""
    batch["target"], batch["valid"] = target_in_space(batch["target"], batch["valid"], batch["is_metric"], space)
    return batch


# ---------------------------------------------------------------------------------------------------------------
# Validation


def build_val_loader(
    config: DataConfig, workers: int | None = None, rank: int | None = None, world_size: int | None = None
) -> DataLoader:
    """Validation batches: every held-out sample exactly once across processes and workers, no augmentation.

    ``rank`` / ``world_size`` default to torch.distributed's (tests pass them to simulate nodes)."""
    if not config.val:
        raise ValueError("no validation shards: set --data.val to a folder of held-out shards")
    pipeline = build_pipeline(
        config.val, training=False, transform=EvalTransform(config.size), split=True, rank=rank, world_size=world_size,
        refuse_eval_splits=eval_split_refusal(config.allow_eval_split, "validation"), decode=decode_first_label,
    )
    pipeline.append(wds.batched(config.val_batch_size, collation_fn=collate_samples, partial=True))
    workers = config.num_workers if workers is None else workers
    return DataLoader(pipeline, batch_size=None, num_workers=workers, worker_init_fn=ignore_stop_signals)


# ---------------------------------------------------------------------------------------------------------------
# Damage counts


#: Reasons in a fixed order, so that every process reduces the same vector.
SKIP_REASONS = ("checksum", "decode", "error")
LOST_REASONS = (LOST_TAR_ERROR, LOST_TAR_ENDED)


class DamagedDataError(RuntimeError):
    """Too large a share of the training samples is damaged or lost; the message names the shards to check."""


class ReadTally:
    """The latest cumulative counts of every reader of one run, and the run's totals over every process."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}
        self._taken = torch.zeros(1 + len(SKIP_REASONS) + len(LOST_REASONS), dtype=torch.int64)
        self.run = torch.zeros_like(self._taken)  # summed over processes, the same on every rank

    def record(self, reads: dict[str, Any]) -> None:
        """One batch's counts of its reader (cumulative for that reader, so the latest replaces the earlier)."""
        self._latest[reads["reader"]] = reads

    def vector(self) -> torch.Tensor:
        """This process's totals: [read, skipped by reason..., lost by reason...]."""
        skipped, lost, read = Counter(), Counter(), 0
        for reads in self._latest.values():
            read += reads["read"]
            skipped.update(reads["skipped"])
            lost.update(reads["lost"])
        values = [read, *(skipped[name] for name in SKIP_REASONS), *(lost[name] for name in LOST_REASONS)]
        return torch.tensor(values, dtype=torch.int64)

    def take_interval(self) -> torch.Tensor:
        """This process's counts since the last call."""
        now = self.vector()
        interval, self._taken = now - self._taken, now
        return interval

    def shards(self) -> Counter:
        """Shard -> samples skipped or lost, in this process."""
        total: Counter = Counter()
        for reads in self._latest.values():
            total.update(reads["shards"])
        return total


def interval_scalars(interval: torch.Tensor, run: torch.Tensor) -> dict[str, float]:
    """``data/...`` scalars: this interval's samples read, skipped and lost (by reason), and the run's damaged share."""
    read, skipped, lost = _split(interval)
    run_read, run_skipped, run_lost = _split(run)
    damaged = sum(run_skipped.values()) + sum(run_lost.values())
    scalars = {"data/read": read, "data/skipped": sum(skipped.values()), "data/lost": sum(lost.values())}
    scalars.update({f"data/skipped_{name}": value for name, value in skipped.items()})
    scalars.update({f"data/lost_{name}": value for name, value in lost.items()})
    scalars["data/damaged_fraction"] = damaged / max(run_read + sum(run_lost.values()), 1.0)
    return scalars


def log_data_integrity(accelerator: Any, tally: ReadTally, data_config: DataConfig) -> dict[str, float]:
    """Every process calls this at a log interval with its run's ``tally``: the interval's counts summed over
    processes, as scalars.

    Raises :class:`DamagedDataError` on every process at once when the run's damaged share exceeds
    ``data.max_damaged_fraction``."""
    interval = tally.take_interval().to(accelerator.device)
    interval = accelerator.reduce(interval, reduction="sum").cpu()
    tally.run += interval
    scalars = interval_scalars(interval, tally.run)
    run_read, run_skipped, run_lost = _split(tally.run)
    damaged = int(sum(run_skipped.values()) + sum(run_lost.values()))
    total = int(run_read + sum(run_lost.values()))
    if over_limit(damaged, total, data_config.max_damaged_fraction):
        worst: Counter = Counter()
        for shards in gather_object([tally.shards()]):
            worst.update(shards)
        raise DamagedDataError(damaged_message(damaged, total, data_config, worst))
    return scalars


def damaged_message(damaged: int, total: int, data_config: DataConfig, worst: Counter) -> str:
    named = "\n  ".join(f"{url}: {count} sample(s)" for url, count in worst.most_common(10)) or "(none named)"
    sets = " ".join(data_config.train_sets())
    return (
        f"{damaged} of {total} training samples read so far were damaged or lost, more than "
        f"data.max_damaged_fraction = {data_config.max_damaged_fraction:.2%}. Worst shards:\n  {named}\n"
        f"Find every damaged sample with: python -m shards verify {sets}\n"
        "then rewrite the set without them (python -m shards repair DIR --out NEW) or relabel those shards."
    )


def postfix(scalars: dict[str, float]) -> dict[str, int]:
    """Progress-bar fields: this interval's skipped and lost samples (shown only when there are any)."""
    shown = {name: int(scalars.get(f"data/{name}", 0)) for name in ("skipped", "lost")}
    return {name: value for name, value in shown.items() if value}


def _split(vector: torch.Tensor) -> tuple[float, dict[str, float], dict[str, float]]:
    values = [float(value) for value in vector]
    skipped = dict(zip(SKIP_REASONS, values[1 : 1 + len(SKIP_REASONS)]))
    lost = dict(zip(LOST_REASONS, values[1 + len(SKIP_REASONS) :]))
    return values[0], skipped, lost
