"""Held-out test scenes written in the official NYU Depth v2 layout, so the demo's evaluation reads them through
the same loader and protocol as the real ``nyu_depth_v2_labeled.mat`` and ``splits.mat``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.tools.scenes import render_scene
from shards.tools.testing import write_nyu_labeled, write_nyu_splits

#: Frames at the start of the file that play the training split (the official file has 795 of them).
TRAIN_FRAMES = 2


@dataclass
class NyuFiles:
    labeled: Path
    splits: Path


def write_nyu_test_scenes(folder: str | Path, count: int, seed: int) -> NyuFiles:
    """``count`` test frames (640x480): ``rawDepths`` with sensor-like holes, ``depths`` without (in-painted)."""
    folder = Path(folder)
    labeled, splits = folder / "nyu_depth_v2_labeled.mat", folder / "splits.mat"
    if labeled.exists() and splits.exists():
        return NyuFiles(labeled, splits)
    total = count + TRAIN_FRAMES
    images = np.zeros((total, 480, 640, 3), np.uint8)
    depths = np.zeros((total, 480, 640), np.float32)
    raw_depths = np.zeros((total, 480, 640), np.float32)
    for index in range(total):
        clean, holey = render_scene(seed + index), render_scene(seed + index, holes=True)
        images[index], depths[index] = clean.image, clean.depth
        raw_depths[index] = np.where(holey.valid, holey.depth, 0.0)
    write_nyu_labeled(labeled, images, depths, raw_depths)
    frames = np.arange(1, total + 1)
    write_nyu_splits(splits, train_1based=frames[:TRAIN_FRAMES], test_1based=frames[TRAIN_FRAMES:])
    return NyuFiles(labeled, splits)
