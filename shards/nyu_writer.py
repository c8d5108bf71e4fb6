"""Write NYU Depth v2's official layouts (``nyu_depth_v2_labeled.mat``, ``splits.mat``), for tests and the demo: files
that :mod:`shards.nyu` reads exactly as it reads the released ones."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io


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
