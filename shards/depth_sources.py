"""Other sources of RGB + metric depth for the evaluation: an RGB-D folder and a Hugging Face ``datasets`` copy.

Each is a lazy sequence of :class:`shards.nyu.DepthFrame` (uint8 RGB (H, W, 3), float32 depth (H, W) in metres,
0 = invalid) with ``describe()``, like :class:`shards.nyu.NyuSplit`, and checks every depth map it reads to be
metres (``shards.nyu.check_metric_depth``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shards.nyu import DepthFrame, NyuFormatError, check_metric_depth

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def _to_metres(values: np.ndarray, depth_scale: float | None, where: str) -> np.ndarray:
    """Integer depth / ``depth_scale`` (units per metre); float depth is taken as metres. 0 and NaN -> invalid."""
    if np.issubdtype(values.dtype, np.integer):
        if depth_scale is None:
            raise NyuFormatError(f"{where}: integer depth ({values.dtype}) needs a depth scale (units per metre)")
        metres = values.astype(np.float32) / np.float32(depth_scale)
    else:
        metres = values.astype(np.float32)
    metres[~np.isfinite(metres) | (metres < 0)] = 0.0
    return metres


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def _read_depth_file(path: Path, depth_scale: float | None) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        values = np.load(path)
    else:
        with Image.open(path) as picture:
            values = np.asarray(picture)
    if values.ndim != 2:
        raise NyuFormatError(f"{path}: a depth map is one channel (H, W), got shape {values.shape}")
    return _to_metres(values, depth_scale, str(path))


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
        image = _read_rgb(self._images[stem])
        depth = _read_depth_file(self._depths[stem], self.depth_scale)
        if depth.shape != image.shape[:2]:
            raise NyuFormatError(f"{self.folder}: {stem}: image {image.shape[:2]} and depth {depth.shape} differ")
        check_metric_depth(depth, str(self._depths[stem]))
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
                    "depth; choose the in-painted depth explicitly (--protocol common, or --depth-source inpainted), "
                    "or name the raw column (--raw-depth-column)"
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
                    "name the image and depth columns (--image-column, --depth-column)"
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
        depth = _to_metres(values.squeeze(), self.depth_scale, where)
        if depth.shape != image.shape[:2]:
            raise NyuFormatError(f"{where}: depth {depth.shape} and image {image.shape[:2]} differ in size")
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
