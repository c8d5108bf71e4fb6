"""RGB + metric depth files: the one reader of an image and a depth map, pair lists, and evaluation sources.

The readers (:func:`read_rgb`, :func:`read_depth`) serve the importer (``shards.rgbd``), the DIODE reader
(``shards.diode``) and the evaluation alike, so a depth file means one thing everywhere: integer depth (16-bit
PNG or TIFF, integer ``.npy``) is ``value / depth_scale`` metres, float depth (``.npy``, float TIFF) is metres, and
0, negative or non-finite values are invalid pixels (stored as 0).

The evaluation sources are lazy sequences of :class:`shards.nyu.DepthFrame` (uint8 RGB (H, W, 3), float32 depth
(H, W) in metres, 0 = invalid) with ``describe()``, like :class:`shards.nyu.NyuSplit`, and check every depth map
they read to be metres (``shards.nyu.check_metric_depth``): an RGB-D folder, a pair list, a ``datasets`` copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from shards.format import LabelError, key_from_relative_path
from shards.images import to_rgb
from shards.nyu import INDOOR_DEPTH, LONG_RANGE_DEPTH, DepthFrame, DepthLimits, NyuFormatError, check_metric_depth

#: Integer depth units per metre of the datasets we read, by name (``--depth_scale kitti``): KITTI's annotated
#: depth PNGs are metres * 256, TUM RGB-D's are metres * 5000, ARKitScenes and NYU-style files are millimetres.
DEPTH_SCALES = {"kitti": 256.0, "tum": 5000.0, "arkitscenes": 1000.0, "mm": 1000.0}
#: The names of ``DEPTH_SCALES`` as a type, so that configs list them as choices.
DepthScaleName = Literal["kitti", "tum", "arkitscenes", "mm"]
if set(get_args(DepthScaleName)) != set(DEPTH_SCALES):  # a scale added to one table and not the other
    raise ImportError(f"DepthScaleName {get_args(DepthScaleName)} differs from DEPTH_SCALES {sorted(DEPTH_SCALES)}")

#: Reject reason (``shards.rgbd``) of an image and a depth map (or mask) that differ in size.
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
        check_metric_depth(depth, f"{pair.depth} ({self.list_path}:{pair.line})", self.limits)
        return DepthFrame(image, depth, position, key_from_relative_path(pair.name))

    def describe(self) -> dict[str, Any]:
        return {"source": "pair_list", "list": str(self.list_path), "depth_scale": self.depth_scale, "count": len(self)}


class DepthFolder:
    """RGB + metric depth pairs in ``folder/rgb/<stem>.<image>`` and ``folder/depth/<stem>.{png,tif,npy}``.

    Integer depth files (16-bit PNG) are divided by ``depth_scale`` (units per metre; 1000 = millimetres, as
    ``shards.scenes.write_scene_folder`` writes); float files (``.npy``, float TIFF) are metres. 0 = invalid.
    Pairs are matched by stem, sorted; a stem with only one half is an error naming it.
    """

    def __init__(self, folder: str | Path, depth_scale: float = 1000.0, limit: int | None = None) -> None:
        self.folder = Path(folder)
        self.depth_scale = depth_scale
        rgb_dir, depth_dir = self.folder / "rgb", self.folder / "depth"
        if not rgb_dir.is_dir() or not depth_dir.is_dir():
            raise NyuFormatError(f"{self.folder}: a depth folder holds rgb/ and depth/ subfolders of matching stems")
        images = {p.stem: p for p in sorted(rgb_dir.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}
        depths = {p.stem: p for p in sorted(depth_dir.iterdir()) if p.suffix.lower() in _DEPTH_SUFFIXES}
        unmatched = sorted(set(images) ^ set(depths))
        if unmatched:
            raise NyuFormatError(f"{self.folder}: no rgb/depth pair for {unmatched[:5]} ({len(unmatched)} unmatched)")
        if not images:
            raise NyuFormatError(f"{self.folder}: rgb/ and depth/ hold no images")
        self.stems = sorted(images)[:limit] if limit is not None else sorted(images)
        self._images, self._depths = images, depths

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, position: int) -> DepthFrame:
        stem = self.stems[position]
        image, depth = read_rgbd(self._images[stem], self._depths[stem], self.depth_scale)
        check_metric_depth(depth, str(self._depths[stem]), INDOOR_DEPTH)
        return DepthFrame(image, depth, position, stem)

    def describe(self) -> dict[str, Any]:
        return {"source": "folder", "folder": str(self.folder), "depth_scale": self.depth_scale, "count": len(self)}


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
        check_metric_depth(depth, where)
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
