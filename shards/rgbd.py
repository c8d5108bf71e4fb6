"""Import RGB-D ground truth as ``metric_depth`` shards: ``python -m shards import-rgbd``.

Ground truth and pseudo-labels share one format, so a training run can mix them (the reference recipes also trained
on NYU and ARKitScenes ground truth). Four sources, all read through ``shards.depth_sources`` (one depth reader:
integer depth is ``value / depth_scale`` metres, float depth is metres, 0 / negative / non-finite is invalid):

- a folder of images and a folder of depth maps, paired by relative path without extension (``a/0001.jpg`` with
  ``a/0001.png``; ARKitScenes, generated scenes);
- a pair list, one ``image_path depth_path`` per line (KITTI's annotated depth, TUM's associated frames), where the
  two do not pair by name;
- DIODE as released (``shards.diode``): float depth in metres with its validity mask;
- one split of NYU Depth v2 (the official ``nyu_depth_v2_labeled.mat`` and ``splits.mat``), raw sensor depth by
  default (holes invalid), in-painted depth as an option.

What is wrong with the input as a whole stops the import before anything is written, with the file named: a
malformed list line, a listed file or a DIODE mask that is missing, a tree outside its layout, no frames. What is
wrong with one frame is a reject, by reason, in the stats json and the summary (an unreadable file, sizes that
differ, implausible depth, no valid pixel), except that when the first frames checked all have implausible depth the
scale or units are wrong for every frame and the import stops (``UNITS_PROBE_FRAMES``).

Every sample is resized and cropped to 512x384 as docs/decisions.md, "The sample", fixes it: scale by ``max(512 / W,
384 / H)``, then crop (centre, or random with a seed). The image is resampled bicubically with antialiasing; depth
and mask with the exact nearest kernel (pixel centres), never averaged, so no depth is invented across an edge or a
hole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shards.codec import DEFAULT_LABEL_CODEC, encode_sample
from shards.depth_sources import check_same_size
from shards.format import METRIC_DEPTH, SAMPLE_SIZE, LabelError, SampleMeta
from shards.nyu import LONG_RANGE_DEPTH, DepthLimits, NyuFormatError, check_metric_depth
from shards.writer import ShardSetWriter

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_SUFFIXES = (".png", ".npy")

#: Reject reasons of the importer (label reasons come from ``shards.format``; ``size_mismatch`` from
#: ``shards.depth_sources``, where image and depth are read).
REJECT_NO_DEPTH = "no_depth_for_image"
REJECT_NO_IMAGE = "no_image_for_depth"
REJECT_UNREADABLE = "unreadable"
REJECT_DUPLICATE_KEY = "duplicate_key"
REJECT_IMPLAUSIBLE_DEPTH = "implausible_depth"

#: When this many frames (or all, if fewer) have been checked, none written and all had implausible depth, the
#: import stops: a wrong depth scale or unit spoils every frame, and rejecting 85,000 KITTI frames one by one helps
#: no one. A few odd frames later in a set stay counted rejects.
UNITS_PROBE_FRAMES = 5


@dataclass
class ImportSummary:
    """What an import wrote: sample count, shard stats, and the rejected inputs by reason."""

    written: int = 0
    shards: list[dict] = field(default_factory=list)
    rejects: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, key: str, reason: str) -> None:
        self.rejects.setdefault(reason, []).append(key)

    def lines(self) -> list[str]:
        rejected = sum(len(keys) for keys in self.rejects.values())
        lines = [f"wrote {self.written} samples in {len(self.shards)} shards; rejected {rejected}"]
        for reason, keys in sorted(self.rejects.items()):
            lines.append(f"  {reason} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}")
        return lines


# ---------------------------------------------------------------------------------------------------------------
# Resize and crop


@dataclass(frozen=True)
class CropPlan:
    """Scale the source to ``scaled_size`` (width, height), then cut ``crop_box`` (left, top, right, bottom)."""

    scale: float
    scaled_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]


def plan_crop(
    source_size: tuple[int, int],
    size: tuple[int, int] = SAMPLE_SIZE,
    crop: str = "center",
    rng: np.random.Generator | None = None,
) -> CropPlan:
    """Scale by ``max(size_w / W, size_h / H)`` (so a 512x512 image stays 512x512), then a centre or random crop."""
    width, height = source_size
    out_w, out_h = size
    scale = max(out_w / width, out_h / height)
    scaled = (max(out_w, round(width * scale)), max(out_h, round(height * scale)))
    if crop == "center":
        left, top = (scaled[0] - out_w) // 2, (scaled[1] - out_h) // 2
    elif crop == "random":
        if rng is None:
            raise ValueError("a random crop needs a numpy Generator (seeded)")
        left, top = int(rng.integers(0, scaled[0] - out_w + 1)), int(rng.integers(0, scaled[1] - out_h + 1))
    else:
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    return CropPlan(scale, scaled, (left, top, left + out_w, top + out_h))


def crop_image(image: np.ndarray, plan: CropPlan) -> np.ndarray:
    """uint8 (H, W, 3) -> (out_h, out_w, 3): bicubic resize (PIL antialiases when it shrinks), then crop."""
    picture = Image.fromarray(image)
    if picture.size != plan.scaled_size:
        picture = picture.resize(plan.scaled_size, Image.Resampling.BICUBIC)
    return np.asarray(picture.crop(plan.crop_box))


def crop_nearest(values: np.ndarray, plan: CropPlan) -> np.ndarray:
    """Any (H, W) map -> (out_h, out_w) by the exact nearest kernel: each output pixel takes the source pixel
    under its centre (``floor((i + 0.5) * H / scaled_H)``, as torch ``nearest-exact`` and PIL ``NEAREST``)."""
    height, width = values.shape[:2]
    left, top, right, bottom = plan.crop_box
    rows = np.floor((np.arange(top, bottom) + 0.5) * (height / plan.scaled_size[1])).astype(np.intp)
    cols = np.floor((np.arange(left, right) + 0.5) * (width / plan.scaled_size[0])).astype(np.intp)
    return values[np.minimum(rows, height - 1)[:, None], np.minimum(cols, width - 1)[None, :]]


def metric_sample(
    key: str,
    source: str,
    image: np.ndarray,
    depth: np.ndarray,
    *,
    crop: str = "center",
    rng: np.random.Generator | None = None,
    depth_scale: float | None = None,
    codec: str = DEFAULT_LABEL_CODEC,
    extra: dict | None = None,
    limits: DepthLimits = LONG_RANGE_DEPTH,
    where: str | None = None,
    eval_split: str | None = None,
) -> dict:
    """One RGB-D frame (uint8 (H, W, 3), float32 metres (H, W), 0 / non-finite = invalid) -> shard members.

    Raises ``LabelError`` (``size_mismatch``, ``implausible_depth`` outside ``limits`` per
    ``shards.nyu.check_metric_depth``, ``no_valid_pixels``, ``constant_label``) for frames that cannot be a label;
    the messages name ``where`` (the depth file; ``source`` by default).
    """
    where = where or source
    check_same_size(image, depth, where)
    try:
        check_metric_depth(depth, where, limits)
    except NyuFormatError as error:
        raise LabelError(REJECT_IMPLAUSIBLE_DEPTH, str(error)) from error
    valid = np.isfinite(depth) & (depth > 0)
    plan = plan_crop((image.shape[1], image.shape[0]), SAMPLE_SIZE, crop, rng)
    meta = SampleMeta(
        source=source,
        kind=METRIC_DEPTH,
        source_size=(int(image.shape[1]), int(image.shape[0])),
        scale=plan.scale,
        crop_box=plan.crop_box,
        depth_scale=depth_scale,
        eval_split=eval_split,
        extra=dict(extra or {}),
    )
    return encode_sample(
        key,
        crop_image(image, plan),
        crop_nearest(np.where(valid, depth, 0.0).astype(np.float32), plan),
        meta,
        valid=crop_nearest(valid, plan),
        codec=codec,
    )


# ---------------------------------------------------------------------------------------------------------------
# The import loop, shared by every source


@dataclass(frozen=True)
class FrameJob:
    """One frame to import: its key, its name (the json ``source`` and the reject-list entry), how to read it
    (-> image uint8 (H, W, 3), depth float32 metres (H, W), 0 = invalid), and its depth file (for messages)."""

    key: str
    source: str
    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    extra: dict = field(default_factory=dict)
    where: str | None = None


@dataclass(frozen=True)
class ImportOptions:
    """What every import mode shares: shard size, crop position, seed of a random crop, label codec, and the
    evaluation split the frames belong to (``eval_split``: training and validation refuse such samples)."""

    samples_per_shard: int = 1000
    crop: str = "center"
    seed: int = 0
    codec: str = DEFAULT_LABEL_CODEC
    eval_split: str | None = None

    def __post_init__(self) -> None:
        if self.eval_split is not None and not self.eval_split.strip():
            raise ValueError("eval_split names an evaluation split (e.g. kitti_eigen_test); leave it out for none")


def write_frames(
    jobs: Sequence[FrameJob],
    out: str | Path,
    prefix: str,
    options: ImportOptions | None,
    summary: ImportSummary,
    *,
    depth_scale: float | None = None,
    **stats_extra: object,
) -> ImportSummary:
    """Read, check and write each frame into shards ``out/<prefix>-000-NNNNNN.tar``; a frame that cannot be a
    sample is rejected by reason (stats json and ``summary``); the units probe may stop the run. ``stats_extra``
    (source, split ...) goes into every stats json with the depth scale, crop and seed."""
    options = options or ImportOptions()
    rng = np.random.default_rng(options.seed)
    extra = {**stats_extra, "crop": options.crop, "seed": options.seed, "eval_split": options.eval_split}
    if depth_scale is not None:
        extra["depth_scale"] = depth_scale
    with ShardSetWriter(out, prefix, options.samples_per_shard, **extra) as writer:
        for name, reason in _flatten(summary.rejects):
            writer.reject(name, reason)
        for job in jobs:
            try:
                image, depth = job.read()
            except LabelError as error:
                _reject(writer, summary, job.source, error.reason, error)
                continue
            except (OSError, ValueError) as error:
                _reject(writer, summary, job.source, REJECT_UNREADABLE, error)
                continue
            try:
                sample = metric_sample(
                    job.key, job.source, image, depth, crop=options.crop, rng=rng, depth_scale=depth_scale,
                    codec=options.codec, extra=job.extra, where=job.where, eval_split=options.eval_split,
                )
            except LabelError as error:
                _reject(writer, summary, job.source, error.reason, error)
                _probe_units(summary, error, len(jobs))
                continue
            writer.write(sample)
            summary.written += 1
    summary.shards = writer.shards
    return summary


def _probe_units(summary: ImportSummary, error: LabelError, total: int) -> None:
    """Stop when the first frames checked all had implausible depth (see ``UNITS_PROBE_FRAMES``)."""
    implausible = len(summary.rejects.get(REJECT_IMPLAUSIBLE_DEPTH, ()))
    if error.reason != REJECT_IMPLAUSIBLE_DEPTH or summary.written or implausible < min(UNITS_PROBE_FRAMES, total):
        return
    raise NyuFormatError(
        f"stopped: the first {implausible} frame(s) checked all have implausible depth, so the depth scale or "
        f"units are wrong for the whole input, not for one frame. Last: {error}"
    )


def check_output_free(out: str | Path, prefix: str) -> None:
    """Refuse to write into a folder that already holds shards of this prefix: a smaller re-import would leave the
    old run's higher-numbered shards behind, mixed with the new ones."""
    existing = sorted(Path(out).glob(f"{prefix}-*.tar"))
    if existing:
        raise FileExistsError(
            f"{out} already holds {len(existing)} shard(s) named {prefix}-*.tar ({existing[0].name} ...): "
            "write to an empty folder, choose another --prefix, or delete them first"
        )


def _flatten(rejects: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    for reason, keys in rejects.items():
        for key in keys:
            yield key, reason


def _reject(writer: ShardSetWriter, summary: ImportSummary, name: str, reason: str, error: Exception) -> None:
    logger.warning("rejected %s (%s): %s", name, reason, error)
    writer.reject(name, reason)
    summary.reject(name, reason)


def check_depth_scale(depth_scale: float) -> None:
    if not depth_scale > 0:
        raise ValueError(f"--depth_scale must be positive (depth units per metre), got {depth_scale}")
