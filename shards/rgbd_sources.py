"""The sources ``python -m shards import-rgbd`` reads, each turned into :class:`shards.rgbd.FrameJob` s for the shared
import loop (:func:`shards.rgbd.write_frames`): an image folder beside a depth folder, a pair list (KITTI, TUM),
DIODE as released, and one split of NYU Depth v2.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from shards.depth_sources import read_pair_list, read_rgbd
from shards.diode import DIODE_SCENES, DiodeScan, find_diode_scans, read_diode_scan
from shards.format import key_from_relative_path
from shards.nyu import NyuSplit
from shards.rgbd import (
    DEPTH_SUFFIXES,
    IMAGE_SUFFIXES,
    REJECT_DUPLICATE_KEY,
    REJECT_NO_DEPTH,
    REJECT_NO_IMAGE,
    FrameJob,
    ImportOptions,
    ImportSummary,
    check_depth_scale,
    check_output_free,
    write_frames,
)

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
    """Write the pairs of a list (``shards.depth_sources.read_pair_list``) as metric shards, in the list's order.

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
    type when only one is read). The tree's structure is checked before anything is written (``shards.diode``).
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
