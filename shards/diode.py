"""DIODE (Dense Indoor and Outdoor DEpth) as released, read frame by frame: one reader for the importer and the
evaluation.

The released tree: ``<root>/{train,val}/{indoors,outdoor}/scene_XXXXX/scan_XXXXX/<name>.png`` (RGB, 1024x768),
``<name>_depth.npy`` (float32 metres, (768, 1024, 1)) and ``<name>_depth_mask.npy`` (float32 0/1 validity,
(768, 1024)). Frames come out as :class:`shards.nyu.DepthFrame` with the mask applied (0 = invalid, the shard
format's validity policy).

What is wrong with the tree as a whole stops where it is found: a missing split or scene folder, a file outside the
layout, an image without its depth or mask (or the reverse), no frames at all. What is wrong with one frame (an
unreadable file, shapes that differ, a mask that is not 0/1) is raised when that frame is read, so the importer can
reject it by name and the evaluation can stop on it.

``write_diode_scan`` writes the released layout, for tests and demos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shards.depth_sources import REJECT_SIZE_MISMATCH, check_same_size, read_depth, read_rgb
from shards.format import LabelError, key_from_relative_path
from shards.nyu import LONG_RANGE_DEPTH, DepthFrame, NyuFormatError, check_metric_depth

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
    to be metres within a laser scanner's range (``shards.nyu.LONG_RANGE_DEPTH``)."""

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
