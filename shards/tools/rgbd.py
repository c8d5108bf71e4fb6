"""Import RGB-D ground truth as ``metric_depth`` shards: ``python -m shards import-rgbd``.

Ground truth and pseudo-labels share one format, so a training run can mix them (the reference recipes also trained
on NYU and ARKitScenes ground truth). Four sources, all read through one depth reader (:func:`read_depth`:
integer depth is ``value / depth_scale`` metres, float depth is metres, 0 / negative / non-finite is invalid):

- a folder of images and a folder of depth maps, paired by relative path without extension (``a/0001.jpg`` with
  ``a/0001.png``; ARKitScenes, generated scenes);
- a pair list, one ``image_path depth_path`` per line (KITTI's annotated depth, TUM's associated frames), where the
  two do not pair by name;
- DIODE as released: float depth in metres with its validity mask;
- one split of NYU Depth v2 (the official ``nyu_depth_v2_labeled.mat`` and ``splits.mat``), raw sensor depth by
  default (holes invalid), in-painted depth as an option.

What is wrong with the input as a whole stops the import before anything is written, with the file named: a
malformed list line, a listed file or a DIODE mask that is missing, a tree outside its layout, no frames, two folders
of which no file pairs (swapped, or named apart: ``x.jpg`` with ``x.mm.png``). What is wrong with one frame is a
reject, by reason, in the stats json and the summary (an unreadable file, sizes that differ, implausible depth, no
valid pixel), except that when the first frames checked all have implausible depth (the scale or units are wrong for
every frame) or all could not be read (images and depth maps swapped) the import stops (``UNITS_PROBE_FRAMES``).

The evaluation's sources read with a depth scale refuse an implausible frame by the same check, naming the depth
scale used and the named ones that would fit (:func:`check_scaled_depth`).

Every sample is resized and cropped to 512x384 as docs/decisions.md, "The sample", fixes it: scale by ``max(512 / W,
384 / H)``, then crop (centre, or random with a seed). The image is resampled bicubically with antialiasing; depth
and mask with the exact nearest kernel (pixel centres), never averaged, so no depth is invented across an edge or a
hole.

One module of about 1,000 lines, because it is one idea: RGB + metric depth into shards. Its parts are the one
reader of an image and a depth file (also what the evaluation reads frames with, so a depth file means one thing
everywhere), the sources (folder pair, pair list, DIODE, NYU split), each turned into frame jobs, and the one import
loop that checks, crops and writes them; a source is a few functions over the shared reader and loop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from shards.format import (
    DEFAULT_LABEL_CODEC,
    METRIC_DEPTH,
    SAMPLE_SIZE,
    LabelError,
    SampleMeta,
    encode_sample,
    key_from_relative_path,
)
from shards.images import to_rgb
from shards.tools.nyu import (
    INDOOR_DEPTH,
    LONG_RANGE_DEPTH,
    DepthFrame,
    DepthLimits,
    NyuFormatError,
    NyuSplit,
    check_metric_depth,
)
from shards.writer import ShardSetWriter

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_SUFFIXES = (".png", ".npy")

#: Reject reasons of the importer (label reasons come from ``shards.format``; ``size_mismatch`` from
#: ``shards.tools.rgbd``, where image and depth are read).
REJECT_NO_DEPTH = "no_depth_for_image"
REJECT_NO_IMAGE = "no_image_for_depth"
REJECT_UNREADABLE = "unreadable"
REJECT_DUPLICATE_KEY = "duplicate_key"
REJECT_IMPLAUSIBLE_DEPTH = "implausible_depth"

#: When this many frames (or all, if fewer) have been checked, none written and all had implausible depth (or all
#: could not be read), the import stops: a wrong depth scale or unit (or swapped folders) spoils every frame, and
#: rejecting 85,000 KITTI frames one by one helps no one. A few odd frames later in a set stay counted rejects.
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
    ``shards.tools.nyu.check_metric_depth``, ``no_valid_pixels``, ``constant_label``) for frames that cannot be a label;
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
                _probe_units(summary, REJECT_UNREADABLE, error, len(jobs))
                continue
            try:
                sample = metric_sample(
                    job.key, job.source, image, depth, crop=options.crop, rng=rng, depth_scale=depth_scale,
                    codec=options.codec, extra=job.extra, where=job.where, eval_split=options.eval_split,
                )
            except LabelError as error:
                _reject(writer, summary, job.source, error.reason, error)
                _probe_units(summary, error.reason, error, len(jobs))
                continue
            writer.write(sample)
            summary.written += 1
    summary.shards = writer.shards
    return summary


#: The reject reasons that, for every one of the first frames checked, mean the input is wrong as a whole.
_WHOLE_INPUT_REASONS = {
    REJECT_IMPLAUSIBLE_DEPTH: "have implausible depth, so the depth scale or units are wrong for the whole input, "
    "not for one frame.",
    REJECT_UNREADABLE: "could not be read, so the input is wrong as a whole, not one frame: are the images and the "
    "depth maps swapped?",
}


def _probe_units(summary: ImportSummary, reason: str, error: Exception, total: int) -> None:
    """Stop when the first frames checked all had implausible depth, or could not be read (see
    ``UNITS_PROBE_FRAMES``): nothing is written, where the whole set would have been rejected frame by frame."""
    count = len(summary.rejects.get(reason, ()))
    if reason not in _WHOLE_INPUT_REASONS or summary.written or count < min(UNITS_PROBE_FRAMES, total):
        return
    raise NyuFormatError(
        f"stopped: the first {count} frame(s) checked all {_WHOLE_INPUT_REASONS[reason]} Last: {error}"
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


logger = logging.getLogger(__name__)

#: The evaluation splits an import marks by itself (``eval_split`` in every sample's json): (source, split) -> mark.
AUTOMATIC_EVAL_SPLITS = {("nyu", "test"): "nyu_test", ("diode", "val"): "diode_val"}


def _mark_eval_split(options: ImportOptions | None, source: str, split: str) -> ImportOptions:
    """``options`` with ``eval_split`` set for a benchmark's evaluation split, unless it names one already."""
    options = options or ImportOptions()
    automatic = AUTOMATIC_EVAL_SPLITS.get((source, split))
    if options.eval_split is None and automatic is not None:
        return dataclasses.replace(options, eval_split=automatic)
    return options


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
    if not pairs:
        raise NyuFormatError(
            f"no pairs: no image under --images {images} (e.g. {_example(images, image_index)}) has a depth map "
            f"under --depths {depths} (e.g. {_example(depths, depth_index)}) of the same relative path without "
            f"extension (a/0001.jpg with a/0001.png); images are {', '.join(IMAGE_SUFFIXES)}, depth maps "
            f"{', '.join(DEPTH_SUFFIXES)}: are the two folders swapped, or do the names differ beyond the extension?"
        )
    return [pairs[key] for key in sorted(pairs)]


def _example(root: Path, index: dict[str, list[Path]]) -> str:
    """One file name under ``root`` for a message: the first indexed one, else the first file of any kind."""
    if index:
        return next(iter(sorted(index.items())))[1][0].relative_to(root).as_posix()
    other = next((path for path in sorted(root.rglob("*")) if path.is_file()), None)
    return "no file at all" if other is None else f"{other.relative_to(root).as_posix()}, not of these kinds"


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
    check_depth_scale(depth_scale)
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
    """Write the pairs of a list (``shards.tools.rgbd.read_pair_list``) as metric shards, in the list's order.

    Keys follow the key rule on each image's path as listed (relative to the list's folder); a key listed twice is
    a ``duplicate_key`` reject. A malformed line or a missing file stops before anything is written."""
    check_depth_scale(depth_scale)
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
    type when only one is read). The tree's structure is checked before anything is written (``shards.tools.rgbd``).
    The validation split is marked ``eval_split: diode_val`` (kept out of training)."""
    scenes = DIODE_SCENES if scene == "all" else (scene,)
    prefix = prefix or (f"diode{split}" if scene == "all" else f"diode{split}{scene}")
    options = _mark_eval_split(options, "diode", split)
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
    """Write one split of NYU Depth v2 as metric shards (raw sensor depth by default: holes are invalid); the test
    split is marked ``eval_split: nyu_test`` (kept out of training)."""
    prefix = prefix or f"nyu{split}"
    options = _mark_eval_split(options, "nyu", split)
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


#: Integer depth units per metre of the datasets we read, by name (``--depth_scale kitti``): KITTI's annotated
#: depth PNGs are metres * 256, TUM RGB-D's are metres * 5000, ARKitScenes and NYU-style files are millimetres.
DEPTH_SCALES = {"kitti": 256.0, "tum": 5000.0, "arkitscenes": 1000.0, "mm": 1000.0}
#: The names of ``DEPTH_SCALES`` as a type, so that configs list them as choices.
DepthScaleName = Literal["kitti", "tum", "arkitscenes", "mm"]
if set(get_args(DepthScaleName)) != set(DEPTH_SCALES):  # a scale added to one table and not the other
    raise ImportError(f"DepthScaleName {get_args(DepthScaleName)} differs from DEPTH_SCALES {sorted(DEPTH_SCALES)}")

#: Reject reason (``shards.tools.rgbd``) of an image and a depth map (or mask) that differ in size.
REJECT_SIZE_MISMATCH = "size_mismatch"

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I")


def parse_depth_scale(text: str) -> float:
    """``--depth_scale``: a number of units per metre, or a dataset's name in :data:`DEPTH_SCALES` (the callers
    check that it is positive)."""
    if text.lower() in DEPTH_SCALES:
        return DEPTH_SCALES[text.lower()]
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"depth scale {text!r} is neither a number of units per metre nor one of {sorted(DEPTH_SCALES)}"
        ) from None


# ---------------------------------------------------------------------------------------------------- reading


def read_rgb(path: Path) -> np.ndarray:
    """An RGB-D frame's colour image as uint8 (H, W, 3), by the one 8-bit rule of :mod:`shards.images` (16-bit grey
    / 257 rounded, alpha over white). No EXIF rotation: the depth map has none, and the pair must stay aligned."""
    with Image.open(path) as picture:
        return np.asarray(to_rgb(picture))


def to_metres(values: np.ndarray, depth_scale: float | None, where: str) -> np.ndarray:
    """Integer depth / ``depth_scale`` (units per metre); float depth is metres. 0, negative, NaN -> 0 (invalid)."""
    if np.issubdtype(values.dtype, np.integer):
        if depth_scale is None:
            raise NyuFormatError(
                f"{where}: integer depth ({values.dtype}) needs a depth scale in units per metre "
                f"(--depth_scale; {', '.join(f'{name} {scale:g}' for name, scale in DEPTH_SCALES.items())})"
            )
        metres = values.astype(np.float32) / np.float32(depth_scale)
    elif np.issubdtype(values.dtype, np.floating):
        metres = values.astype(np.float32)
    else:
        raise NyuFormatError(f"{where}: depth of type {values.dtype} is neither integer nor float")
    metres[~np.isfinite(metres) | (metres < 0)] = 0.0
    return metres


def read_depth(path: Path, depth_scale: float | None) -> np.ndarray:
    """A depth file as float32 metres (H, W), 0 = invalid: 16-bit PNG or TIFF and integer ``.npy`` divided by
    ``depth_scale``, float TIFF and float ``.npy`` as metres. One trailing channel of 1 (DIODE's ``.npy`` are
    (H, W, 1)) is dropped. An 8-bit image is refused: it cannot hold depth."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        values = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as picture:
            if picture.mode not in (*_INTEGER_MODES, "F"):
                raise NyuFormatError(
                    f"{path}: depth image is mode {picture.mode!r}, not 16-bit or float: it cannot hold depth"
                )
            values = np.asarray(picture)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise NyuFormatError(f"{path}: a depth map is one channel, (H, W) or (H, W, 1); got shape {values.shape}")
    return to_metres(values, depth_scale, str(path))


def read_rgbd(image: Path, depth: Path, depth_scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    """An image (uint8 (H, W, 3)) and its depth map (float32 metres (H, W), 0 = invalid), checked to be the same
    size (a ``size_mismatch`` otherwise)."""
    pixels, metres = read_rgb(image), read_depth(depth, depth_scale)
    check_same_size(pixels, metres, str(depth))
    return pixels, metres


def check_same_size(image: np.ndarray, depth: np.ndarray, where: str) -> None:
    """An image (H, W, 3) and its depth map (H, W) must be pixel-aligned: a ``size_mismatch`` otherwise."""
    if image.shape[:2] != depth.shape[:2]:
        raise LabelError(
            REJECT_SIZE_MISMATCH,
            f"{where}: image {image.shape[1]}x{image.shape[0]} and depth {depth.shape[1]}x{depth.shape[0]} differ "
            "in size (width x height)",
        )


def integer_depth_file(path: Path) -> bool:
    """Whether a depth file holds integer codes (which a depth scale divides), not float metres."""
    if Path(path).suffix.lower() == ".npy":
        return bool(np.issubdtype(np.load(path, mmap_mode="r", allow_pickle=False).dtype, np.integer))
    with Image.open(path) as picture:
        return picture.mode in _INTEGER_MODES


def depth_scale_hint(depth: np.ndarray, depth_scale: float, limits: DepthLimits) -> str:
    """For integer depth read with ``depth_scale`` into implausible metres: the median it gave, and each scale of
    :data:`DEPTH_SCALES` that would put the frame inside ``limits``, with the median it would give (the user knows
    the scene: a room is metres, a table top tenths), or that none would."""
    values = depth[np.isfinite(depth) & (depth > 0)].astype(np.float64)
    median, highest = float(np.median(values)), float(values.max())
    said = f"median valid depth {median:.3g} m with --depth_scale {depth_scale:g}"
    fitting: dict[float, list[str]] = {}
    for name, scale in DEPTH_SCALES.items():
        ratio = depth_scale / scale
        if limits.min_median < median * ratio <= limits.max_median and highest * ratio < limits.max_depth:
            fitting.setdefault(scale, []).append(name)
    if not fitting:
        return f"{said}, and no named depth scale ({_named_scales()}) fits: give the files' units per metre"
    tries = ", ".join(
        f"{scale:g} ({', '.join(names)}) {median * depth_scale / scale:.3g} m" for scale, names in fitting.items()
    )
    return f"{said}; the --depth_scale values that fit, with the median each gives: {tries}"


def _named_scales() -> str:
    return ", ".join(f"{name} {scale:g}" for name, scale in DEPTH_SCALES.items())


def check_scaled_depth(
    depth: np.ndarray, where: str, limits: DepthLimits, depth_scale: float | None, integer: Callable[[], bool]
) -> None:
    """:func:`shards.tools.nyu.check_metric_depth` for a frame the evaluation reads with a depth scale: when the
    frame is refused and its values were integer codes (``integer()``, asked only then), the one-line refusal also
    names the depth scale used and the one that would fit (:func:`depth_scale_hint`)."""
    try:
        check_metric_depth(depth, where, limits)
    except NyuFormatError as error:
        if depth_scale is None or not integer():
            raise
        raise NyuFormatError(f"{error}. {depth_scale_hint(depth, depth_scale, limits)}") from None


# ------------------------------------------------------------------------------------------------ pair lists


@dataclass(frozen=True)
class ListedPair:
    """One line of a pair list: an image, its depth map, the image's name (relative to the list's folder, or the
    absolute path without its root) and the 1-based line number."""

    image: Path
    depth: Path
    name: str
    line: int


def _listed_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


def read_pair_list(list_path: str | Path) -> list[ListedPair]:
    """A text file of ``image_path depth_path`` lines (relative to the list's folder, or absolute; ``#`` starts a
    comment; blank lines are skipped), in the list's order.

    KITTI and TUM do not pair images and depth by name (KITTI's annotated depth lives in another tree; TUM pairs by
    timestamp), so a list names each pair. A malformed line, a listed file that does not exist or an empty list stops
    here with the line and the file named: the list is wrong as a whole, not one frame.
    """
    list_path = Path(list_path)
    base = list_path.resolve().parent
    pairs, missing = [], []
    for number, text in enumerate(list_path.read_text().splitlines(), start=1):
        fields = text.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            hint = ""
            if len(fields) == 4:
                hint = " (TUM's associate.py writes 4: 'stamp rgb stamp depth'; keep the 2nd and the 4th)"
            raise NyuFormatError(
                f"{list_path}:{number}: expected 'image_path depth_path', got {len(fields)} field(s): {text.strip()!r}"
                f"{hint}"
            )
        image, depth = (Path(field) if Path(field).is_absolute() else base / field for field in fields)
        missing.extend(f"{list_path}:{number}: {path}" for path in (image, depth) if not path.is_file())
        pairs.append(ListedPair(image, depth, _listed_name(image, base), number))
    if missing:
        raise NyuFormatError(
            f"{len(missing)} listed file(s) do not exist: {'; '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            " (relative paths are taken from the list's folder)"
        )
    if not pairs:
        raise NyuFormatError(f"{list_path}: no 'image_path depth_path' lines")
    return pairs


# ------------------------------------------------------------------------------------------ evaluation sources


class PairList:
    """The frames of a pair list (:func:`read_pair_list`), e.g. KITTI's Eigen test split with its annotated depth
    (16-bit PNG, ``depth_scale`` 256, 0 = invalid). Frames may differ in size. Names are the sample keys of the
    image paths as listed (``shards.format.key_from_relative_path``)."""

    def __init__(
        self,
        list_path: str | Path,
        depth_scale: float | None,
        limits: DepthLimits = LONG_RANGE_DEPTH,
        limit: int | None = None,
    ) -> None:
        self.list_path = Path(list_path)
        self.depth_scale = depth_scale
        self.limits = limits
        pairs = read_pair_list(self.list_path)
        self.pairs = pairs[:limit] if limit is not None else pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, position: int) -> DepthFrame:
        pair = self.pairs[position]
        image, depth = read_rgbd(pair.image, pair.depth, self.depth_scale)
        where = f"{pair.depth} ({self.list_path}:{pair.line})"
        check_scaled_depth(depth, where, self.limits, self.depth_scale, partial(integer_depth_file, pair.depth))
        return DepthFrame(image, depth, position, key_from_relative_path(pair.name))

    def describe(self) -> dict[str, Any]:
        return {"source": "pair_list", "list": str(self.list_path), "depth_scale": self.depth_scale, "count": len(self)}


class DepthFolder:
    """RGB + metric depth pairs in ``folder/rgb/<stem>.<image>`` and ``folder/depth/<stem>.{png,tif,npy}``, or in
    any two folders given as ``images`` and ``depths`` (evaluate's ``--images`` / ``--depths``).

    Integer depth files (16-bit PNG) are divided by ``depth_scale`` (units per metre; 1000 = millimetres, as
    ``shards.tools.scenes.write_scene_folder`` writes); float files (``.npy``, float TIFF) are metres. 0 = invalid.
    Pairs are matched by stem, sorted; a stem with only one half is an error naming it.
    """

    def __init__(
        self,
        folder: str | Path | None,
        depth_scale: float = 1000.0,
        limit: int | None = None,
        images: str | Path | None = None,
        depths: str | Path | None = None,
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self.depth_scale = depth_scale
        self.rgb_dir = Path(images) if images is not None else Path(folder) / "rgb"
        self.depth_dir = Path(depths) if depths is not None else Path(folder) / "depth"
        where = str(self.folder) if images is None and depths is None else f"{self.rgb_dir} + {self.depth_dir}"
        if not self.rgb_dir.is_dir() or not self.depth_dir.is_dir():
            raise NyuFormatError(f"{where}: a depth folder holds rgb/ and depth/ subfolders of matching stems")
        images_by_stem = {p.stem: p for p in sorted(self.rgb_dir.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}
        depths_by_stem = {p.stem: p for p in sorted(self.depth_dir.iterdir()) if p.suffix.lower() in _DEPTH_SUFFIXES}
        unmatched = sorted(set(images_by_stem) ^ set(depths_by_stem))
        if unmatched:
            raise NyuFormatError(f"{where}: no rgb/depth pair for {unmatched[:5]} ({len(unmatched)} unmatched)")
        if not images_by_stem:
            raise NyuFormatError(f"{where}: the image and depth folders hold no images")
        self.stems = sorted(images_by_stem)[:limit] if limit is not None else sorted(images_by_stem)
        self._images, self._depths = images_by_stem, depths_by_stem

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, position: int) -> DepthFrame:
        stem = self.stems[position]
        path = self._depths[stem]
        image, depth = read_rgbd(self._images[stem], path, self.depth_scale)
        check_scaled_depth(depth, str(path), INDOOR_DEPTH, self.depth_scale, partial(integer_depth_file, path))
        return DepthFrame(image, depth, position, stem)

    def describe(self) -> dict[str, Any]:
        folders = {"folder": str(self.folder)} if self.folder is not None else {}
        folders |= {"images": str(self.rgb_dir), "depths": str(self.depth_dir)}
        return {"source": "folder", **folders, "depth_scale": self.depth_scale, "count": len(self)}


class HfDepthDataset:
    """A Hugging Face ``datasets`` copy of the NYU test split (hub name or a local folder), read lazily.

    ``depth="raw"`` needs ``raw_depth_column``; copies that carry only in-painted depth stop with a message
    telling to choose the in-painted depth explicitly, so the protocol never changes silently. Depth columns may
    hold float metres (PIL mode "F", arrays) or integers with ``depth_scale`` units per metre.
    """

    def __init__(
        self,
        name_or_path: str,
        split: str = "test",
        depth: str = "raw",
        image_column: str = "image",
        depth_column: str = "depth_map",
        raw_depth_column: str | None = None,
        depth_scale: float | None = None,
        limit: int | None = None,
    ) -> None:
        import datasets  # heavy; only this source needs it

        self.name = name_or_path
        self.split = split
        self.depth = depth
        self.depth_scale = depth_scale
        if Path(name_or_path).is_dir() and (Path(name_or_path) / "dataset_info.json").exists():
            loaded = datasets.load_from_disk(name_or_path)
            dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            dataset = datasets.load_dataset(name_or_path, split=split)
        if depth == "raw":
            if raw_depth_column is None or raw_depth_column not in dataset.column_names:
                raise NyuFormatError(
                    f"dataset {name_or_path!r} ({split}) has no raw depth column "
                    f"({raw_depth_column!r}; columns {dataset.column_names}): the default protocol uses the raw sensor "
                    "depth; choose the in-painted depth explicitly (--protocol common, or --depth_source inpainted), "
                    "or name the raw column (--raw_depth_column)"
                )
            self.depth_column = raw_depth_column
        elif depth == "inpainted":
            self.depth_column = depth_column
        else:
            raise ValueError(f"depth must be 'raw' or 'inpainted', got {depth!r}")
        for column in (image_column, self.depth_column):
            if column not in dataset.column_names:
                raise NyuFormatError(
                    f"dataset {name_or_path!r} has no column {column!r} (columns {dataset.column_names}): "
                    "name the image and depth columns (--image_column, --depth_column)"
                )
        self.image_column = image_column
        self.dataset = dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> DepthFrame:
        row = self.dataset[position]
        image = row[self.image_column]
        image = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image, np.uint8)
        values = np.asarray(row[self.depth_column])
        where = f"dataset {self.name} row {position} column {self.depth_column}"
        depth = to_metres(values.squeeze(), self.depth_scale, where)
        check_same_size(image, depth, where)
        integer = bool(np.issubdtype(values.dtype, np.integer))
        check_scaled_depth(depth, where, INDOOR_DEPTH, self.depth_scale, lambda: integer)
        return DepthFrame(image, depth, position, f"{self.split}_{position:06d}")

    def describe(self) -> dict[str, Any]:
        return {
            "source": "huggingface_datasets",
            "dataset": self.name,
            "split": self.split,
            "depth_source": self.depth,
            "depth_column": self.depth_column,
            "depth_scale": self.depth_scale,
            "count": len(self),
        }


DIODE_SPLITS = ("train", "val")
#: Scene types, as DIODE names its folders.
DIODE_SCENES = ("indoors", "outdoor")
DEPTH_SUFFIX = "_depth.npy"
MASK_SUFFIX = "_depth_mask.npy"
#: The released layout, quoted by every structural error.
LAYOUT = (
    "<root>/<train|val>/<indoors|outdoor>/scene_XXXXX/scan_XXXXX/<name>.png with <name>_depth.npy and "
    "<name>_depth_mask.npy"
)


@dataclass(frozen=True)
class DiodeScan:
    """One frame's three files; ``relative`` is the image's path from the root (``val/indoors/scene_.../x.png``)."""

    relative: str
    scene: str
    image: Path
    depth: Path
    mask: Path

    @property
    def key(self) -> str:
        """``diode/<relative path without extension>``: the sample key and the frame's name."""
        return key_from_relative_path(f"diode/{self.relative}")


def is_diode_tree(path: str | Path) -> bool:
    """True for a DIODE root (``train/`` or ``val/`` holding ``indoors/`` or ``outdoor/``) or one split folder."""
    path = Path(path)
    folders = [path / split for split in DIODE_SPLITS] + [path]
    return any((folder / scene).is_dir() for folder in folders for scene in DIODE_SCENES)


def _split_folder(root: Path, split: str) -> Path:
    """``root/split``, or ``root`` itself when it is that split's folder (``--data DIODE/val``)."""
    if split not in DIODE_SPLITS:
        raise ValueError(f"DIODE split must be one of {DIODE_SPLITS}, got {split!r}")
    if root.name == split and any((root / scene).is_dir() for scene in DIODE_SCENES):
        return root
    if not (root / split).is_dir():
        raise NyuFormatError(f"{root} is not a DIODE root: it has no {split}/ folder (expected layout {LAYOUT})")
    return root / split


def _scene_scans(root: Path, folder: Path, scene: str) -> list[DiodeScan]:
    """Every frame under one ``<split>/<scene>`` folder, sorted, each with its depth and mask present."""
    images: dict[str, Path] = {}
    arrays: set[Path] = set()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".png", ".npy"):
            continue
        parts = path.relative_to(folder).parts
        if len(parts) != 3 or not parts[0].startswith("scene_") or not parts[1].startswith("scan_"):
            raise NyuFormatError(f"{path} is outside DIODE's layout (expected {LAYOUT})")
        if path.suffix == ".png":
            images[str(path)[: -len(".png")]] = path
        else:
            arrays.add(path)
    scans = []
    for base, image in images.items():
        depth, mask = Path(base + DEPTH_SUFFIX), Path(base + MASK_SUFFIX)
        for needed, what in ((depth, "depth"), (mask, "validity mask")):
            if needed not in arrays:
                raise NyuFormatError(f"{image}: its {what} {needed.name} is missing (expected beside it: {LAYOUT})")
        scans.append(DiodeScan(image.relative_to(root).as_posix(), scene, image, depth, mask))
    orphans = sorted(arrays - {path for scan in scans for path in (scan.depth, scan.mask)})
    if orphans:
        raise NyuFormatError(
            f"{orphans[0]} has no image beside it ({len(orphans)} such file(s)): an incomplete download? "
            f"(expected layout {LAYOUT})"
        )
    return scans


def find_diode_scans(root: str | Path, split: str = "val", scenes: tuple[str, ...] = DIODE_SCENES) -> list[DiodeScan]:
    """Every frame of ``split`` in the given scene types, sorted by path; the tree's structure is checked here."""
    root = Path(root)
    unknown = [scene for scene in scenes if scene not in DIODE_SCENES]
    if unknown or not scenes:
        raise ValueError(f"DIODE scene types are {DIODE_SCENES}, got {tuple(scenes)}")
    split_folder = _split_folder(root, split)
    base = split_folder.parent
    scans = []
    for scene in scenes:
        folder = split_folder / scene
        if not folder.is_dir():
            raise NyuFormatError(
                f"{folder} is missing: the scene types asked for are {list(scenes)}; choose those present "
                "(import: --diode_scene indoors|outdoor; evaluation: --protocol diode_indoor|diode_outdoor)"
            )
        scans.extend(_scene_scans(base, folder, scene))
    if not scans:
        raise NyuFormatError(f"{split_folder}: no DIODE frames in {list(scenes)} (expected layout {LAYOUT})")
    return scans


def read_diode_scan(scan: DiodeScan) -> DepthFrame:
    """One frame: image uint8 (H, W, 3), depth float32 metres (H, W) with the mask applied (0 = invalid).

    Raises ``LabelError("size_mismatch")`` when image, depth and mask differ in size, ``ValueError`` for a mask
    that is not 0/1 or a depth of the wrong shape, ``OSError`` for an unreadable file."""
    image = read_rgb(scan.image)
    depth = read_depth(scan.depth, None)  # float32 metres; (H, W, 1) as released
    mask = np.load(scan.mask, allow_pickle=False)
    if mask.ndim != 2:
        raise LabelError(REJECT_SIZE_MISMATCH, f"{scan.mask}: a mask is (H, W), got shape {mask.shape}")
    if mask.shape != depth.shape:
        raise LabelError(REJECT_SIZE_MISMATCH, f"{scan.mask}: mask {mask.shape} and depth {depth.shape} differ")
    if not np.isin(mask, (0, 1)).all():
        raise NyuFormatError(f"{scan.mask}: a validity mask holds 0 and 1, found {np.unique(mask)[:5]} ...")
    check_same_size(image, depth, str(scan.depth))
    depth = np.where(mask > 0, depth, np.float32(0.0)).astype(np.float32)
    return DepthFrame(image, depth, -1, scan.key)


class DiodeSplit:
    """A lazy sequence of one DIODE split's frames in the given scene types (the evaluation source): ``len()``,
    ``split[i] -> DepthFrame`` (index = position, name = the sample key), ``describe()``. Each depth map is checked
    to be metres within a laser scanner's range (``shards.tools.nyu.LONG_RANGE_DEPTH``)."""

    def __init__(
        self, root: str | Path, split: str = "val", scenes: tuple[str, ...] = DIODE_SCENES, limit: int | None = None
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.scenes = tuple(scenes)
        scans = find_diode_scans(self.root, split, self.scenes)
        self.scans = scans[:limit] if limit is not None else scans

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, position: int) -> DepthFrame:
        scan = self.scans[position]
        frame = read_diode_scan(scan)
        check_metric_depth(frame.depth, str(scan.depth), LONG_RANGE_DEPTH)
        return DepthFrame(frame.image, frame.depth, position, frame.name)

    def describe(self) -> dict[str, Any]:
        return {"source": "diode", "root": str(self.root), "split": self.split, "scenes": list(self.scenes),
                "count": len(self)}  # fmt: skip


def write_diode_scan(
    root: str | Path,
    split: str,
    scene: str,
    name: tuple[int, int, int, int],
    image: np.ndarray,
    depth: np.ndarray,
    mask: np.ndarray,
) -> Path:
    """Write one frame as released: ``name`` = (scene id, scan id, two view numbers) gives
    ``<root>/<split>/<scene>/scene_00019/scan_00183/00019_00183_<scene>_000_010.png`` with its ``_depth.npy``
    (float32, (H, W, 1)) and ``_depth_mask.npy`` (float32 0/1, (H, W)). Returns the image's path."""
    scene_id, scan_id, first, second = name
    folder = Path(root) / split / scene / f"scene_{scene_id:05d}" / f"scan_{scan_id:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{scene_id:05d}_{scan_id:05d}_{scene}_{first:03d}_{second:03d}"
    Image.fromarray(image).save(folder / f"{stem}.png", compress_level=1)
    np.save(folder / f"{stem}{DEPTH_SUFFIX}", np.asarray(depth, dtype=np.float32).reshape(*depth.shape[:2], 1))
    np.save(folder / f"{stem}{MASK_SUFFIX}", np.asarray(mask, dtype=np.float32))
    return folder / f"{stem}.png"
