"""NYU Depth v2's official files, read frame by frame and checked as they are read.

The official files:

- ``nyu_depth_v2_labeled.mat``: MATLAB v7.3, i.e. HDF5 (read with h5py). MATLAB writes column-major, so the
  arrays come out transposed: ``images`` N x 3 x W x H (uint8), ``depths`` (in-painted) and ``rawDepths``
  (sensor, 0 = hole) N x W x H, in metres. 1449 frames of 480 x 640.
- ``splits.mat``: MATLAB v5 (read with ``scipy.io.loadmat``, not HDF5): ``trainNdxs`` (795) and ``testNdxs``
  (654), 1-based frame numbers.

Frames come out as :class:`DepthFrame` (uint8 RGB (H, W, 3), float32 depth (H, W) in metres with 0 = invalid, a
0-based index and a name), as from the other sources in ``shards.tools.rgbd`` (RGB-D folders, ``datasets``
copies). Each depth map is checked to be metres when it is read, so a file in millimetres or with a transposed
layout is refused with a message that says what is wrong. Reading is lazy: only the frames asked for are read, so
the 654 test frames never need the whole file in memory.

``shards.tools.testing`` writes the official layouts, for tests and the demo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from shards.cli.errors import UserError

log = logging.getLogger(__name__)

#: Frame size of NYU Depth v2, (height, width).
NYU_HEIGHT = 480
NYU_WIDTH = 640
#: Frame counts of the official files.
NYU_LABELED_FRAMES = 1449
NYU_TEST_FRAMES = 654
NYU_TRAIN_FRAMES = 795

#: Depth sources of the labeled file: our name -> the MATLAB variable.
DEPTH_VARIABLES = {"raw": "rawDepths", "inpainted": "depths"}
SPLIT_VARIABLES = {"train": "trainNdxs", "test": "testNdxs"}

#: Plausibility of metric depth per frame: indoor sensors stay under 20 m, and a median under 10 cm means the frame
#: is not in metres (or is almost all holes, which the check then skips). A median over 100 is millimetres or
#: unscaled integer codes.
MAX_PLAUSIBLE_DEPTH = 20.0
MIN_PLAUSIBLE_MEDIAN = 0.1
MAX_PLAUSIBLE_MEDIAN = 100.0


@dataclass(frozen=True)
class DepthLimits:
    """What one frame of metric depth from a kind of sensor looks like (metres): every valid value under
    ``max_depth``, the median of the valid values in (``min_median``, ``max_median``]. Outside them the units or
    the depth scale are wrong."""

    max_depth: float
    min_median: float = MIN_PLAUSIBLE_MEDIAN
    max_median: float = MAX_PLAUSIBLE_MEDIAN


#: Indoor structured-light, time-of-flight and phone sensors (NYU's Kinect, TUM, ARKitScenes): under 20 m.
INDOOR_DEPTH = DepthLimits(max_depth=MAX_PLAUSIBLE_DEPTH)
#: Laser scanners and lidar (DIODE's scanner reaches 350 m; a KITTI 16-bit PNG at 1/256 m tops out at 256 m).
LONG_RANGE_DEPTH = DepthLimits(max_depth=400.0)


class NyuFormatError(UserError, ValueError):
    """A file that does not hold what the official NYU layout (or a depth source) promises."""


@dataclass(frozen=True)
class DepthFrame:
    """One RGB-D frame: ``image`` uint8 (H, W, 3); ``depth`` float32 (H, W) metres, 0 = invalid."""

    image: np.ndarray
    depth: np.ndarray
    index: int  # 0-based position in the source's own numbering (the labeled file's frame id for NYU)
    name: str


@dataclass
class NyuFrames:
    """Frames read into memory: ``images`` uint8 (N, 480, 640, 3), ``depths`` float32 (N, 480, 640) metres with
    0 = invalid, ``indices`` int64 (N,) 0-based frame ids in the labeled file."""

    images: np.ndarray
    depths: np.ndarray
    indices: np.ndarray
    depth_source: str = "raw"
    description: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> DepthFrame:
        index = int(self.indices[position])
        return DepthFrame(self.images[position], self.depths[position], index, f"nyu_{index:04d}")

    def describe(self) -> dict[str, Any]:
        return dict(self.description, count=len(self))


def check_metric_depth(depth: np.ndarray, where: str, limits: DepthLimits = INDOOR_DEPTH) -> None:
    """Refuse a depth map that is not metres under ``limits`` (indoor by default: max >= 20 m, or a median over 100,
    i.e. millimetres or unscaled codes, or under 0.1), with a message naming ``where`` and the fix.

    Zeros are holes and are ignored; a frame without valid pixels passes (the metrics skip it).
    """
    values = depth[np.isfinite(depth) & (depth > 0)]
    if values.size == 0:
        return
    median = float(np.median(values))
    highest = float(values.max())
    if median > limits.max_median:
        raise NyuFormatError(
            f"{where}: depth median {median:.1f} looks like millimetres or unscaled integer codes, not metres: "
            "give integer depth's units per metre as the depth scale (KITTI 256, TUM 5000, millimetres 1000) and "
            "store float depth in metres"
        )
    if highest >= limits.max_depth or median <= limits.min_median:
        raise NyuFormatError(
            f"{where}: depth max {highest:.3f}, median {median:.3f} is not plausible depth in metres "
            f"(expected max < {limits.max_depth:g} m and median > {limits.min_median:g} m): check the units "
            "and the depth scale"
        )


# ----------------------------------------------------------------------------------------------- the labeled file


def _dataset(file: h5py.File, name: str, path: str) -> h5py.Dataset:
    if name not in file:
        raise NyuFormatError(
            f"{path} has no variable {name!r} (found {sorted(file.keys())}): use the official "
            "nyu_depth_v2_labeled.mat, which holds images, depths and rawDepths"
        )
    return file[name]


class NyuLabeledFile:
    """The official ``nyu_depth_v2_labeled.mat`` opened for lazy reads; checks the layout when opened.

    ``frame(index, depth)`` returns one frame with a 0-based ``index``, transposed back to (480, 640).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.path}: no such file (NYU's nyu_depth_v2_labeled.mat, MATLAB v7.3)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise NyuFormatError(
                f"{self.path} is not an HDF5 (MATLAB v7.3) file ({error}): the official nyu_depth_v2_labeled.mat "
                "is v7.3; download it from https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html"
            ) from error
        self.images = _dataset(self._file, "images", self.path)
        self._check_layout()

    def _check_layout(self) -> None:
        shape = self.images.shape
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != (NYU_WIDTH, NYU_HEIGHT):
            hint = ""
            if len(shape) == 4 and shape[1:] == (NYU_HEIGHT, NYU_WIDTH, 3):
                hint = " (this is the non-transposed N x H x W x 3 layout, which MATLAB never writes)"
            raise NyuFormatError(
                f"{self.path}: 'images' has shape {shape}, expected the official transposed layout N x 3 x "
                f"{NYU_WIDTH} x {NYU_HEIGHT} (MATLAB's column-major 480x640x3xN){hint}"
            )
        if self.images.dtype != np.uint8:
            raise NyuFormatError(f"{self.path}: 'images' is {self.images.dtype}, expected uint8")
        for variable in DEPTH_VARIABLES.values():
            if variable not in self._file:
                continue  # checked when that depth source is asked for
            self._check_depth_layout(variable)

    def _check_depth_layout(self, variable: str) -> h5py.Dataset:
        depths = _dataset(self._file, variable, self.path)
        expected = (len(self), NYU_WIDTH, NYU_HEIGHT)
        if depths.shape != expected:
            hint = ""
            if depths.shape == (len(self), NYU_HEIGHT, NYU_WIDTH):
                hint = " (this is the non-transposed N x H x W layout, which MATLAB never writes)"
            raise NyuFormatError(
                f"{self.path}: {variable!r} has shape {depths.shape}, expected the official transposed layout "
                f"{expected} (N x W x H) to match {len(self)} images{hint}"
            )
        if not np.issubdtype(depths.dtype, np.floating):
            raise NyuFormatError(f"{self.path}: {variable!r} is {depths.dtype}, expected float metres")
        return depths

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def frame(self, index: int, depth: str = "raw") -> DepthFrame:
        """Frame ``index`` (0-based): image (480, 640, 3) uint8, depth (480, 640) float32 metres, checked."""
        if depth not in DEPTH_VARIABLES:
            raise ValueError(f"depth must be one of {sorted(DEPTH_VARIABLES)}, got {depth!r}")
        variable = DEPTH_VARIABLES[depth]
        depths = self._check_depth_layout(variable)
        image = np.ascontiguousarray(self.images[index].transpose(2, 1, 0))  # (3, W, H) -> (H, W, 3)
        depth_map = np.ascontiguousarray(depths[index].T, dtype=np.float32)  # (W, H) -> (H, W)
        depth_map[~np.isfinite(depth_map)] = 0.0
        check_metric_depth(depth_map, f"{self.path} {variable} frame {index} (0-based)")
        return DepthFrame(image, depth_map, index, f"nyu_{index:04d}")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NyuLabeledFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_nyu_splits(path: str | Path, frame_count: int | None = None) -> dict[str, np.ndarray]:
    """``splits.mat`` -> {"train": 0-based int64 (795,), "test": 0-based int64 (654,)}, checked.

    Reads MATLAB v5 with scipy (the official format); a v7.3 (HDF5) copy is read with h5py as a courtesy.
    Indices must be 1-based, unique, disjoint between train and test, and within ``frame_count`` when given.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file (NYU's official splits.mat)")
    try:
        variables = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to a v7.3 file
        with h5py.File(path, "r") as file:
            variables = {name: np.asarray(file[name]) for name in file.keys()}
    except (ValueError, OSError) as error:
        raise NyuFormatError(f"{path} is not a MATLAB splits file ({error}): use the official splits.mat") from error
    splits = {}
    for split, variable in SPLIT_VARIABLES.items():
        if variable not in variables:
            found = sorted(name for name in variables if not name.startswith("__"))
            raise NyuFormatError(f"{path} has no variable {variable!r} (found {found}): use the official splits.mat")
        numbers = np.asarray(variables[variable]).reshape(-1)
        if numbers.size and (not np.all(numbers == np.round(numbers)) or numbers.min() < 1):
            raise NyuFormatError(
                f"{path}: {variable} must hold 1-based frame numbers (MATLAB), got min {numbers.min()}"
            )
        indices = numbers.astype(np.int64) - 1
        if len(np.unique(indices)) != len(indices):
            raise NyuFormatError(f"{path}: {variable} repeats frame numbers")
        if frame_count is not None and indices.size and indices.max() >= frame_count:
            raise NyuFormatError(
                f"{path}: {variable} refers to frame {indices.max() + 1} but the labeled file has {frame_count} frames"
            )
        splits[split] = indices
    if np.intersect1d(splits["train"], splits["test"]).size:
        raise NyuFormatError(f"{path}: trainNdxs and testNdxs share frames")
    if frame_count == NYU_LABELED_FRAMES and (len(splits["test"]), len(splits["train"])) != (
        NYU_TEST_FRAMES,
        NYU_TRAIN_FRAMES,
    ):
        log.warning(
            "%s: %d test / %d train frames, the official split has %d / %d",
            path,
            len(splits["test"]),
            len(splits["train"]),
            NYU_TEST_FRAMES,
            NYU_TRAIN_FRAMES,
        )
    return splits


class NyuSplit:
    """A lazy sequence of one split of the labeled file: ``len()``, ``split[i] -> DepthFrame``, ``describe()``.

    ``split``: "test" (654 frames), "train" (795) or "all" (every frame; no splits file needed).
    ``depth``: "raw" (``rawDepths``, holes = 0 = invalid) or "inpainted" (``depths``).
    """

    def __init__(
        self,
        labeled_mat: str | Path,
        splits_mat: str | Path | None,
        split: str = "test",
        depth: str = "raw",
        limit: int | None = None,
    ) -> None:
        if depth not in DEPTH_VARIABLES:
            raise ValueError(f"depth must be one of {sorted(DEPTH_VARIABLES)}, got {depth!r}")
        self.file = NyuLabeledFile(labeled_mat)
        try:
            self.file._check_depth_layout(DEPTH_VARIABLES[depth])
            if split == "all":
                indices = np.arange(len(self.file), dtype=np.int64)
            elif split in SPLIT_VARIABLES:
                if splits_mat is None:
                    raise ValueError(f"split {split!r} needs the official splits.mat (--splits)")
                indices = read_nyu_splits(splits_mat, len(self.file))[split]
            else:
                raise ValueError(f"split must be 'test', 'train' or 'all', got {split!r}")
        except Exception:
            self.file.close()
            raise
        self.indices = indices[:limit] if limit is not None else indices
        self.depth = depth
        self.split = split
        self.splits_mat = None if splits_mat is None else str(splits_mat)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> DepthFrame:
        return self.file.frame(int(self.indices[position]), self.depth)

    def describe(self) -> dict[str, Any]:
        return {
            "source": "nyu_labeled_mat",
            "labeled_mat": self.file.path,
            "splits_mat": self.splits_mat,
            "split": self.split,
            "depth_source": self.depth,
            "depth_variable": DEPTH_VARIABLES[self.depth],
            "count": len(self),
        }

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> NyuSplit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_nyu(
    labeled_mat: str | Path,
    splits_mat: str | Path | None,
    split: str = "test",
    depth: str = "raw",
    limit: int | None = None,
) -> NyuFrames:
    """Read one split of the official labeled file into memory (the test split: about 1.4 GB), checked.

    ``depth="raw"`` reads ``rawDepths`` (holes are 0 = invalid); ``"inpainted"`` reads ``depths``. For a
    frame-at-a-time reader use :class:`NyuSplit`.
    """
    with NyuSplit(labeled_mat, splits_mat, split=split, depth=depth, limit=limit) as frames:
        count = len(frames)
        images = np.empty((count, NYU_HEIGHT, NYU_WIDTH, 3), dtype=np.uint8)
        depths = np.empty((count, NYU_HEIGHT, NYU_WIDTH), dtype=np.float32)
        for position in range(count):
            frame = frames[position]
            images[position] = frame.image
            depths[position] = frame.depth
        return NyuFrames(images, depths, frames.indices.copy(), depth, frames.describe())
