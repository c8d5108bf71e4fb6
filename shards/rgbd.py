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

Every sample is resized and cropped to 512x384 as DECISIONS.md fixes it: scale by ``max(512 / W, 384 / H)``, then
crop (centre, or random with a seed). The image is resampled bicubically with antialiasing; depth and mask with the
exact nearest kernel (pixel centres), never averaged, so no depth is invented across an edge or a hole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from shards.codec import DEFAULT_LABEL_CODEC, encode_sample
from shards.depth_sources import check_same_size, read_pair_list, read_rgbd
from shards.diode import DIODE_SCENES, DiodeScan, find_diode_scans, read_diode_scan
from shards.format import METRIC_DEPTH, SAMPLE_SIZE, LabelError, SampleMeta, key_from_relative_path
from shards.nyu import LONG_RANGE_DEPTH, DepthLimits, NyuFormatError, NyuSplit, check_metric_depth
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
    """What every import mode shares: shard size, crop position, seed of a random crop, label codec."""

    samples_per_shard: int = 1000
    crop: str = "center"
    seed: int = 0
    codec: str = DEFAULT_LABEL_CODEC


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
    extra = {**stats_extra, "crop": options.crop, "seed": options.seed}
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
                    codec=options.codec, extra=job.extra, where=job.where,
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


def _check_depth_scale(depth_scale: float) -> None:
    if not depth_scale > 0:
        raise ValueError(f"--depth-scale must be positive (depth units per metre), got {depth_scale}")


# ---------------------------------------------------------------------------------------------------------------
# Folder pairs


def _index_folder(root: Path, suffixes: tuple[str, ...]) -> dict[str, list[Path]]:
    """Relative path without extension -> files (several when ``x.jpg`` and ``x.png`` both exist), sorted."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes:
            relative = path.relative_to(root).as_posix()
            found.setdefault(relative[: -len(path.suffix)], []).append(path)
    return found


@dataclass(frozen=True)
class RgbdPair:
    key: str
    image: Path
    depth: Path
    relative: str  # the image's path relative to the images folder (the json ``source``)


def pair_folders(images: Path, depths: Path, summary: ImportSummary) -> list[RgbdPair]:
    """Pairs by relative path without extension, sorted by key; unpaired files and key clashes go to ``summary``."""
    image_index = _index_folder(images, IMAGE_SUFFIXES)
    depth_index = _index_folder(depths, DEPTH_SUFFIXES)
    if not image_index:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images}")
    pairs: dict[str, RgbdPair] = {}
    for stem, image_paths in sorted(image_index.items()):
        for image_path in image_paths:
            relative = image_path.relative_to(images).as_posix()
            key = key_from_relative_path(relative)
            if key in pairs:
                summary.reject(relative, REJECT_DUPLICATE_KEY)
                continue
            depth_paths = depth_index.get(stem)
            if not depth_paths:
                summary.reject(relative, REJECT_NO_DEPTH)
                continue
            if len(depth_paths) > 1:
                summary.reject(relative, REJECT_DUPLICATE_KEY)  # x.png beside x.npy: which one is meant?
                continue
            pairs[key] = RgbdPair(key, image_path, depth_paths[0], relative)
    for stem, depth_paths in sorted(depth_index.items()):
        if stem not in image_index:
            for path in depth_paths:
                summary.reject(path.relative_to(depths).as_posix(), REJECT_NO_IMAGE)
    return [pairs[key] for key in sorted(pairs)]


def _pair_job(key: str, source: str, image: Path, depth: Path, depth_scale: float) -> FrameJob:
    return FrameJob(key, source, partial(read_rgbd, image, depth, depth_scale), where=str(depth))


def import_rgbd_folder(
    images: str | Path,
    depths: str | Path,
    depth_scale: float,
    out: str | Path,
    *,
    prefix: str = "rgbd",
    options: ImportOptions | None = None,
) -> ImportSummary:
    """Write the pairs of ``images`` / ``depths`` as metric shards in ``out``; rejects go into the stats json."""
    _check_depth_scale(depth_scale)
    images, depths = Path(images), Path(depths)
    for folder in (images, depths):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder")
    check_output_free(out, prefix)
    summary = ImportSummary()
    jobs = [
        _pair_job(pair.key, pair.relative, pair.image, pair.depth, depth_scale)
        for pair in pair_folders(images, depths, summary)
    ]
    return write_frames(
        jobs, out, prefix, options, summary, depth_scale=depth_scale, source=str(images), depths=str(depths)
    )


# ---------------------------------------------------------------------------------------------------------------
# Pair lists (KITTI, TUM)


def import_pair_list(
    list_path: str | Path,
    depth_scale: float,
    out: str | Path,
    *,
    prefix: str = "rgbd",
    options: ImportOptions | None = None,
) -> ImportSummary:
    """Write the pairs of a list (``shards.depth_sources.read_pair_list``) as metric shards, in the list's order.

    Keys follow the key rule on each image's path as listed (relative to the list's folder); a key listed twice is
    a ``duplicate_key`` reject. A malformed line or a missing file stops before anything is written."""
    _check_depth_scale(depth_scale)
    check_output_free(out, prefix)
    summary = ImportSummary()
    jobs, keys = [], set()
    for pair in read_pair_list(list_path):
        key = key_from_relative_path(pair.name)
        if key in keys:
            summary.reject(pair.name, REJECT_DUPLICATE_KEY)
            continue
        keys.add(key)
        jobs.append(_pair_job(key, pair.name, pair.image, pair.depth, depth_scale))
    return write_frames(jobs, out, prefix, options, summary, depth_scale=depth_scale, source=str(list_path))


# ---------------------------------------------------------------------------------------------------------------
# DIODE


def _read_diode(scan: DiodeScan) -> tuple[np.ndarray, np.ndarray]:
    frame = read_diode_scan(scan)
    return frame.image, frame.depth


def import_diode(
    root: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    scene: str = "all",
    prefix: str | None = None,
    options: ImportOptions | None = None,
) -> ImportSummary:
    """Write one split of DIODE (``scene`` "indoors", "outdoor" or "all") as metric shards, the mask applied.

    Keys ``diode/<split>/<scene>/scene_X/scan_Y/<name>``; the default prefix is ``diode<split>`` (plus the scene
    type when only one is read). The tree's structure is checked before anything is written (``shards.diode``)."""
    scenes = DIODE_SCENES if scene == "all" else (scene,)
    prefix = prefix or (f"diode{split}" if scene == "all" else f"diode{split}{scene}")
    check_output_free(out, prefix)
    jobs = [
        FrameJob(
            scan.key, scan.relative, partial(_read_diode, scan), {"diode_split": split, "diode_scene": scan.scene},
            where=str(scan.depth),
        )
        for scan in find_diode_scans(root, split, scenes)
    ]
    return write_frames(jobs, out, prefix, options, ImportSummary(), source=str(root), split=split, scenes=list(scenes))


# ---------------------------------------------------------------------------------------------------------------
# NYU Depth v2


def nyu_key(split: str, index: int) -> str:
    """``nyu/<split>/<0-based frame index:05d>``: the frame's id in the labeled file, stable across splits."""
    return f"nyu/{split}/{index:05d}"


def _read_nyu(frames: NyuSplit, position: int) -> tuple[np.ndarray, np.ndarray]:
    frame = frames[position]  # a frame whose depth is not plausible indoor metres raises: an ``unreadable`` reject
    return frame.image, frame.depth


def import_nyu(
    labeled_mat: str | Path,
    splits_mat: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    depth: str = "raw",
    prefix: str | None = None,
    options: ImportOptions | None = None,
) -> ImportSummary:
    """Write one split of NYU Depth v2 as metric shards (raw sensor depth by default: holes are invalid)."""
    prefix = prefix or f"nyu{split}"
    check_output_free(out, prefix)
    name = Path(labeled_mat).name
    with NyuSplit(labeled_mat, splits_mat, split=split, depth=depth) as frames:  # reads one frame at a time
        jobs = [
            FrameJob(
                nyu_key(split, int(index)), f"{name}#{int(index)}", partial(_read_nyu, frames, position),
                {"nyu_depth": depth, "nyu_split": split},
            )
            for position, index in enumerate(frames.indices)
        ]
        return write_frames(
            jobs, out, prefix, options, ImportSummary(),
            source=str(labeled_mat), splits=str(splits_mat), split=split, depth=depth,
        )
