"""Import RGB-D ground truth as ``metric_depth`` shards: ``python -m shards import-rgbd``.

Ground truth and pseudo-labels share one format, so a training run can mix them (the reference recipes also trained
on NYU and ARKitScenes ground truth). Two sources:

- a folder of images and a folder of depth maps, paired by relative path without extension (``a/0001.jpg`` with
  ``a/0001.png``); 16-bit PNG depth is ``value / depth_scale`` metres, ``.npy`` depth is float metres; 0 (and any
  non-finite or negative value) is an invalid pixel;
- one split of NYU Depth v2 (the official ``nyu_depth_v2_labeled.mat`` and ``splits.mat``), raw sensor depth by
  default (holes invalid), in-painted depth as an option.

Every sample is resized and cropped to 512x384 as DECISIONS.md fixes it: scale by ``max(512 / W, 384 / H)``, then
crop (centre, or random with a seed). The image is resampled bicubically with antialiasing; depth and mask with the
exact nearest kernel (pixel centres), never averaged, so no depth is invented across an edge or a hole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shards.codec import DEFAULT_LABEL_CODEC, encode_sample
from shards.format import METRIC_DEPTH, SAMPLE_SIZE, LabelError, SampleMeta, key_from_relative_path
from shards.writer import ShardSetWriter

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEPTH_SUFFIXES = (".png", ".npy")

#: Reject reasons of the importer (label reasons come from ``shards.format``).
REJECT_NO_DEPTH = "no_depth_for_image"
REJECT_NO_IMAGE = "no_image_for_depth"
REJECT_UNREADABLE = "unreadable"
REJECT_SIZE_MISMATCH = "size_mismatch"
REJECT_DUPLICATE_KEY = "duplicate_key"
REJECT_IMPLAUSIBLE_DEPTH = "implausible_depth"

#: Indoor and outdoor sensors stay well under this; a larger median means the depth scale is wrong.
MAX_PLAUSIBLE_MEDIAN_DEPTH = 100.0


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
) -> dict:
    """One RGB-D frame (uint8 (H, W, 3), float32 metres (H, W), 0 / non-finite = invalid) -> shard members.

    Raises ``LabelError`` (``no_valid_pixels``, ``constant_label``, ``implausible_depth``) for frames that
    cannot be a label, and ``ValueError`` when image and depth differ in size.
    """
    if image.shape[:2] != depth.shape:
        raise LabelError(
            REJECT_SIZE_MISMATCH, f"image {image.shape[1]}x{image.shape[0]} and depth {depth.shape[1]}x{depth.shape[0]}"
        )
    valid = np.isfinite(depth) & (depth > 0)
    if valid.any():
        median = float(np.median(depth[valid]))
        if median > MAX_PLAUSIBLE_MEDIAN_DEPTH:
            raise LabelError(
                REJECT_IMPLAUSIBLE_DEPTH,
                f"median depth {median:.1f} m is not plausible: is --depth-scale right (units per metre)?",
            )
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
# Folder pairs


def read_rgb(path: Path) -> np.ndarray:
    """An RGB-D frame's colour image as uint8 (H, W, 3). No EXIF rotation: the depth map has none, and the pair
    must stay pixel-aligned. 16-bit greyscale is scaled by 1/257 (PIL's convert would clip it white)."""
    with Image.open(path) as picture:
        if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
            grey = (np.asarray(picture, dtype=np.uint32) // 257).clip(0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
            rgba = picture.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(picture.convert("RGB"))


def read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """Depth in metres, float32 (H, W), 0 = invalid. PNG: 16-bit integers / ``depth_scale``; ``.npy``: float
    metres (integer arrays are divided by ``depth_scale`` too). An 8-bit PNG is refused: it cannot hold depth."""
    if path.suffix.lower() == ".npy":
        values = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as picture:
            if picture.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"depth PNG is mode {picture.mode!r}, not 16-bit: it cannot hold depth")
            values = np.asarray(picture)
    if values.ndim != 2:
        raise ValueError(f"depth map has shape {values.shape}; expected one channel (H, W)")
    if np.issubdtype(values.dtype, np.integer):
        metres = values.astype(np.float32) / np.float32(depth_scale)
    else:
        metres = values.astype(np.float32)
    metres[~np.isfinite(metres) | (metres < 0)] = 0.0
    return metres


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


def import_rgbd_folder(
    images: str | Path,
    depths: str | Path,
    depth_scale: float,
    out: str | Path,
    *,
    prefix: str = "rgbd",
    samples_per_shard: int = 1000,
    crop: str = "center",
    seed: int = 0,
    codec: str = DEFAULT_LABEL_CODEC,
) -> ImportSummary:
    """Write the pairs of ``images`` / ``depths`` as metric shards in ``out``; rejects go into the stats json."""
    if not depth_scale > 0:
        raise ValueError(f"--depth-scale must be positive (depth units per metre), got {depth_scale}")
    images, depths = Path(images), Path(depths)
    for folder in (images, depths):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder")
    check_output_free(out, prefix)
    summary = ImportSummary()
    pairs = pair_folders(images, depths, summary)
    rng = np.random.default_rng(seed)
    extra = {"source": str(images), "depths": str(depths), "depth_scale": depth_scale, "crop": crop, "seed": seed}
    with ShardSetWriter(out, prefix, samples_per_shard, **extra) as writer:
        for key, reason in _flatten(summary.rejects):
            writer.reject(key, reason)
        for pair in pairs:
            try:
                image, depth = read_rgb(pair.image), read_depth(pair.depth, depth_scale)
            except (OSError, ValueError) as error:
                _reject(writer, summary, pair.relative, REJECT_UNREADABLE, error)
                continue
            try:
                sample = metric_sample(
                    pair.key, pair.relative, image, depth, crop=crop, rng=rng, depth_scale=depth_scale, codec=codec
                )
            except LabelError as error:
                _reject(writer, summary, pair.relative, error.reason, error)
                continue
            writer.write(sample)
            summary.written += 1
    summary.shards = writer.shards
    return summary


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


# ---------------------------------------------------------------------------------------------------------------
# NYU Depth v2


def nyu_key(split: str, index: int) -> str:
    """``nyu/<split>/<0-based frame index:05d>``: the frame's id in the labeled file, stable across splits."""
    return f"nyu/{split}/{index:05d}"


def import_nyu(
    labeled_mat: str | Path,
    splits_mat: str | Path,
    out: str | Path,
    *,
    split: str = "train",
    depth: str = "raw",
    prefix: str | None = None,
    samples_per_shard: int = 1000,
    crop: str = "center",
    seed: int = 0,
    codec: str = DEFAULT_LABEL_CODEC,
) -> ImportSummary:
    """Write one split of NYU Depth v2 as metric shards (raw sensor depth by default: holes are invalid)."""
    from shards.nyu import NyuSplit  # h5py / scipy: only this mode needs them; reads one frame at a time

    prefix = prefix or f"nyu{split}"
    check_output_free(out, prefix)
    summary = ImportSummary()
    rng = np.random.default_rng(seed)
    extra = {"source": str(labeled_mat), "splits": str(splits_mat), "split": split, "depth": depth, "crop": crop,
             "seed": seed}
    with NyuSplit(labeled_mat, splits_mat, split=split, depth=depth) as frames, ShardSetWriter(
        out, prefix, samples_per_shard, **extra
    ) as writer:
        for position in range(len(frames)):
            key = nyu_key(split, int(frames.indices[position]))
            try:
                frame = frames[position]
            except ValueError as error:  # a frame whose depth is not plausible metres
                _reject(writer, summary, key, REJECT_UNREADABLE, error)
                continue
            try:
                sample = metric_sample(
                    key, f"{Path(labeled_mat).name}#{frame.index}", frame.image, frame.depth,
                    crop=crop, rng=rng, codec=codec, extra={"nyu_depth": depth, "nyu_split": split},
                )
            except LabelError as error:
                _reject(writer, summary, key, error.reason, error)
                continue
            writer.write(sample)
            summary.written += 1
    summary.shards = writer.shards
    return summary
