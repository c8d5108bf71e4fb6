"""Evaluate a student, its ONNX export or a teacher on NYU Depth v2, DIODE, KITTI (or any RGB + metric depth source).

``python -m distill.evaluate --model M --data D [--splits splits.mat] [--protocol reference] --out DIR``

One idea, the evaluate command, read top to bottom as it runs: its config (:class:`EvaluateConfig`: the model, the data,
the protocol's overrides; ``compare`` scores each data set with one), the data sources ``--data`` names, the scoring
loop, the report and the command; no part has a user beyond this command and ``compare``, which reuses it whole.

The model is recognised by content (:mod:`distill.deploy.model`): an ``.onnx`` file, a student folder, a transformers
depth model folder or hub id (a teacher), or ``constant``; the data by its form (:func:`open_data`: NYU's ``.mat``, a
DIODE tree, a ``.txt`` pair list, shards of ground truth (:mod:`distill.evaluation.shard_frames`), an ``rgb/`` +
``depth/`` folder or any two folders as ``--images`` and ``--depths``, or a ``datasets`` copy). Each frame is resized
to the model's input size, the prediction resized back to the frame's size (a teacher takes the whole frame, and
resizes it and its map back once, as its authors do: ``metrics.json``'s ``resize`` says which kernels ran), then the
protocol (:mod:`distill.evaluation.protocols`) aligns it, caps it and scores it per image with ``distill.metrics``;
figures are averaged over images.

Outputs in ``--out``: ``metrics.json`` (protocol in full, model, data, count, means, and
``negative_scale_frames``: frames whose least-squares scale would be negative, scored as the best constant instead,
as stderr says too), ``per_image.csv`` (the scale as applied, and ``negative_scale``),
``table_row.md`` (the reference table's layout, then the precision), ``best_median_worst.png`` (the picture
convention of :mod:`shards.tools.pictures`; ``metrics.json``'s ``picture`` lists its rows, colour bars and legend),
``config.yaml`` (the resolved config) and, with ``--save_predictions true``, ``predictions.npz`` (every raw
prediction at the frame's size, before alignment: the model's output resized with the kernel named in its ``resize``
member, never clamped).

Models run in fp32 unless ``--precision bf16`` or ``fp16`` asks for autocast; the report states which.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import sys
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from distill.deploy.model import DepthModel
from distill.deploy.runtime import Kind, pick_device
from distill.evaluation.protocols import (
    EIGEN_CROP,
    GARG_CROP,
    PRESETS,
    Protocol,
    crop_mask,
    eval_crop,
    get_protocol,
    predicted_depth,
    resize_images,
    valid_mask,
)
from distill.evaluation.shard_frames import ShardFrames, is_shard_set
from distill.metrics import DEPTH_METRICS, batch_depth_metrics, mean_metrics
from shards.cli.config import Command, looks_like_path, parse_size, save_resolved_config
from shards.cli.errors import (
    UserError,
    hub_unreachable,
    one_line,
    read_hub_cache_only,
    refuse_filled_folder,
    run_command,
)
from shards.format import METRIC_DEPTH, LabelError
from shards.tools.nyu import DepthFrame, NyuFormatError, NyuSplit
from shards.tools.pictures import colorize_depth, error_map, frame_label, image_grid, picture_key, save_picture
from shards.tools.rgbd import (
    DIODE_SCENES,
    DepthFolder,
    DepthScaleName,
    DiodeSplit,
    HfDepthDataset,
    PairList,
    is_diode_tree,
    parse_depth_scale,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------- the config


PresetName = Literal[
    "reference", "common", "midas", "median", "metric", "diode_indoor", "diode_outdoor", "diode", "kitti_eigen"
]
Resize = Literal["bicubic", "bilinear"]


@dataclass(kw_only=True)
class ModelOptions:
    """The model and how it runs."""

    model: str
    """a student folder or hub id, an exported .onnx / .tflite / .pte file, a teacher folder or hub id, or constant"""
    size: str | None = None
    """the model's input WxH (students and constant; default 256x192, multiples of 32); others keep their own"""
    device: str = "auto"
    """auto (a GPU when there is one), cpu, cuda or cuda:N"""
    batch_size: int = 8
    """frames per forward pass"""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp32: no autocast on any device; bf16 / fp16: autocast (students and a teacher's backbone); the report says"""
    kind: Kind | None = None
    """what an exported file outputs when it does not say: relative_inverse_depth or metric_depth (without it
    relative_inverse_depth is assumed, and a warning says so)"""


@dataclass(kw_only=True)
class DataOptions:
    """The data: NYU's .mat, a DIODE root, a .txt pair list, shards, an image folder and a depth folder, or a datasets
    copy."""

    data: str | None = None
    """nyu_depth_v2_labeled.mat, a DIODE root, a .txt of 'image depth' lines, shards of ground truth (a folder of
    .tar, as python -m shards import-rgbd writes), an rgb/ + depth/ folder, or a saved datasets folder or hub id"""
    images: str | None = None
    """instead of --data: a folder of pictures, with --depths (any folder names; pairs share a file name)"""
    depths: str | None = None
    """instead of --data: a folder of depth maps (16-bit PNG / --depth_scale, or metres in .npy / float TIFF)"""
    splits: str | None = None
    """NYU's official splits.mat (with a .mat --data)"""
    split: str | None = None
    """NYU: test (default), train or all; DIODE: val (default) or train; datasets: its split name (default test)"""
    limit: int | None = None
    """read at most this many frames (smoke tests)"""
    image_column: str = "image"
    """datasets: the image column"""
    depth_column: str = "depth_map"
    """datasets: the in-painted depth column (metres)"""
    raw_depth_column: str | None = None
    """datasets: the raw depth column, if it has one"""


@dataclass(kw_only=True)
class ProtocolOptions:
    """The protocol: a preset, then any of its fields overridden (all written into the report)."""

    protocol: PresetName | None = None
    """the preset (default: reference; docs/evaluation.md lists them)"""
    depth_source: Literal["raw", "inpainted"] | None = None
    """NYU ground truth: raw (rawDepths, holes invalid) or inpainted (depths)"""
    scenes: Literal["indoors", "outdoor", "indoors,outdoor"] | None = None
    """DIODE scene types read"""
    depth_scale: float | DepthScaleName | None = None
    """integer ground truth's units per metre: a number, or kitti (256), tum (5000), arkitscenes / mm (1000);
    default: the preset's, else the source's (folders 1000)"""
    depth_min: float | None = None
    """valid ground truth is above this (metres)"""
    depth_max: float | None = None
    """valid ground truth is below this (metres)"""
    min_inclusive: bool | None = None
    """valid ground truth may equal depth_min"""
    max_inclusive: bool | None = None
    """valid ground truth may equal depth_max"""
    crop: str | None = None
    """the pixels scored: eigen, none, or top,bottom,left,right (pixels, end-exclusive)"""
    crop_fraction: str | None = None
    """the pixels scored as fractions of each frame's size: garg, none, or top,bottom,left,right"""
    input_resize: Resize | None = None
    """frame -> the model's input size (not a teacher's: it takes the whole frame and resizes as its authors do)"""
    output_resize: Resize | None = None
    """prediction -> the frame's size (not a teacher's: its own kernel, once)"""
    alignment: Literal["lsq_inverse", "median_depth", "none"] | None = None
    """per-image alignment before the metrics"""
    depth_cap: float | None = None
    """predicted depth capped here (metres): inverse depth >= 1 / cap"""
    min_prediction: float | Literal["none"] | None = None
    """lower clamp of predicted depth (metres), or none"""

    def overrides(self) -> dict[str, object]:
        """The protocol fields given (a key left out is no override), as :class:`Protocol` values."""
        given = {name: getattr(self, name) for name in _PROTOCOL_FIELDS if getattr(self, name) is not None}
        if "scenes" in given:
            given["scenes"] = tuple(given["scenes"].split(","))
        if "depth_scale" in given:
            given["depth_scale"] = _depth_scale(given["depth_scale"])
        if "crop" in given:
            given["crop"] = parse_crop(given["crop"], "crop", "eigen", EIGEN_CROP, int)
        if "crop_fraction" in given:
            given["crop_fraction"] = parse_crop(given["crop_fraction"], "crop_fraction", "garg", GARG_CROP, float)
        if given.get("min_prediction") == "none":
            given["min_prediction"] = None
        return given


_PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(Protocol) if f.name != "name")


def _depth_scale(value: float | str) -> float:
    try:
        return parse_depth_scale(str(value))
    except ValueError as error:
        raise UserError(f"--depth_scale: {error}") from None


def parse_crop(text: str, key: str, preset_name: str, preset: tuple, number: type) -> tuple | None:
    """``eigen``/``garg``, ``none`` or ``top,bottom,left,right`` -> an evaluation crop in that order, or None."""
    if text == preset_name:
        return preset
    if text == "none":
        return None
    parts = text.split(",")
    try:
        if len(parts) == 4:
            return tuple(number(part) for part in parts)
    except ValueError:
        pass
    raise UserError(f"--{key} {text!r} is not {preset_name}, none or top,bottom,left,right")


def resolve_protocol(config: ProtocolOptions, kind: str) -> tuple[Protocol, str]:
    """The preset with its overrides; under the default preset a metric model is scored without alignment
    (docs/evaluation.md: the model's kind decides) and shards without a crop; the report states either."""
    overrides = config.overrides()
    notes = []
    if config.protocol is None and kind == METRIC_DEPTH and "alignment" not in overrides:
        overrides["alignment"] = "none"
        overrides.setdefault("min_prediction", PRESETS["metric"].min_prediction)
        notes.append("metric model under the default preset: alignment 'none' (the model's kind decides)")
        log.warning("%s", notes[-1])
    shards = is_shard_set(getattr(config, "data", None))
    if config.protocol is None and shards and not {"crop", "crop_fraction"} & overrides.keys():
        overrides["crop"] = None
        notes.append("shards under the default preset: no crop (a sample is its own crop, not a 640x480 NYU frame)")
        log.info("%s", notes[-1])
    note = "; ".join(notes) or "as given"
    try:
        return get_protocol(config.protocol or "reference", **overrides), note
    except ValueError as error:
        raise UserError(str(error)) from error


@dataclass(kw_only=True)
class EvaluateConfig(ProtocolOptions, DataOptions, ModelOptions):
    """Evaluate one depth model on one data set under a protocol (docs/evaluation.md)."""

    out: str
    """the output folder (metrics.json, per_image.csv, table_row.md, best_median_worst.png, config.yaml)"""
    save_predictions: bool = False
    """also write predictions.npz (raw, at the frames' size; frames of one size)"""
    overwrite: bool = False
    """write into an --out that already holds files (replacing this command's own); without it such a folder is
    refused before the model is loaded, so no earlier report is lost"""


# ------------------------------------------------------------------------------------------------------------- the data


#: Files that mark a folder written by ``datasets``' ``save_to_disk``, or data files ``load_dataset`` reads.
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_DATASET_FILES = ("*.parquet", "*.arrow", "*.jsonl", "*.csv")
_FORMS = (
    "nyu_depth_v2_labeled.mat (with --splits), a DIODE root, a .txt pair list, shards of ground truth (a folder of "
    ".tar from python -m shards import-rgbd), an rgb/ + depth/ folder (or any two as --images DIR --depths DIR), or a "
    "saved datasets folder or hub id"
)


def open_data(args: DataOptions, protocol: Protocol) -> Any:
    """A lazy frame source for ``--data`` (or ``--images`` + ``--depths``): ``len()``, ``source[i] -> DepthFrame``,
    ``describe()``.

    A DIODE preset (``protocol.scenes``) reads a DIODE tree, its scene types only; otherwise the source is
    recognised by form: a ``.mat`` file (NYU), a ``.txt`` pair list, a DIODE tree, shards, an ``rgb/`` + ``depth/``
    folder, else a ``datasets`` copy."""
    if args.images is not None or args.depths is not None:
        return _folder_pair(args, protocol)
    if args.data is None:
        raise UserError(f"give --data (it reads {_FORMS}), or --images and --depths")
    data = args.data
    path = Path(data)
    diode = is_diode_tree(path)
    if protocol.scenes is not None and not diode:
        raise NyuFormatError(
            f"protocol {protocol.name} reads DIODE ({', '.join(protocol.scenes)}): {data} is not a DIODE root "
            "(<root>/val/indoors|outdoor/scene_XXXXX/scan_XXXXX/...)"
        )
    if diode:
        scenes = protocol.scenes or DIODE_SCENES
        return DiodeSplit(data, split=args.split or "val", scenes=scenes, limit=args.limit)
    if path.suffix.lower() == ".mat":
        return NyuSplit(data, args.splits, split=args.split or "test", depth=protocol.depth_source, limit=args.limit)
    if path.suffix.lower() == ".txt":
        return PairList(data, depth_scale=protocol.depth_scale, limit=args.limit)
    if is_shard_set(data):
        return ShardFrames(data, limit=args.limit)
    if path.is_dir() and (path / "rgb").is_dir() and (path / "depth").is_dir():
        log.info("%s is a folder source: its depth is used as given (protocol depth_source does not apply)", data)
        return DepthFolder(data, depth_scale=protocol.depth_scale or 1000.0, limit=args.limit)
    _check_dataset_name(data)
    return _open_dataset(args, protocol)


def _folder_pair(args: DataOptions, protocol: Protocol) -> DepthFolder:
    """``--images DIR --depths DIR``: a folder of pictures and one of depth maps, under any names."""
    if args.images is None or args.depths is None or args.data is not None:
        raise UserError(
            "--images and --depths go together, without --data: a folder of pictures and a folder of depth maps "
            "whose files share names (a/0001.jpg with b/0001.png)"
        )
    for key, folder in (("--images", args.images), ("--depths", args.depths)):
        if not Path(folder).is_dir():
            raise UserError(f"{key} {folder}: no such folder")
    return DepthFolder(
        None, depth_scale=protocol.depth_scale or 1000.0, limit=args.limit, images=args.images, depths=args.depths
    )


def _open_dataset(args: DataOptions, protocol: Protocol) -> HfDepthDataset:
    """A ``datasets`` copy: a saved folder, or a hub id. For a hub id the hub is checked once first (``datasets``
    retries an unreachable hub for half a minute): when it does not answer, only the local cache is read."""
    data = args.data
    unreachable = None if Path(data).expanduser().is_dir() else hub_unreachable()
    if unreachable is not None:
        read_hub_cache_only()
    try:
        return HfDepthDataset(
            data,
            split=args.split or "test",
            depth=protocol.depth_source,
            image_column=args.image_column,
            depth_column=args.depth_column,
            raw_depth_column=args.raw_depth_column,
            depth_scale=protocol.depth_scale,
            limit=args.limit,
        )
    except (ConnectionError, FileNotFoundError) as error:  # datasets' answers for a name it cannot find or reach
        if unreachable is not None:
            raise UserError(
                f"--data {data} is neither a local path (no such file or folder) nor reachable on the Hugging Face "
                f"hub ({unreachable}), and no copy is cached here: check the path, or run where the hub is reachable; "
                f"evaluate reads {_FORMS}"
            ) from error
        raise UserError(
            f"--data {data} is not a local path, and the datasets hub has no copy here ({one_line(error)}): save the "
            f"data set to a folder on a machine with internet (datasets.load_dataset(...).save_to_disk(DIR)) and "
            f"give --data DIR, or check the name; evaluate reads {_FORMS}"
        ) from error


def _check_dataset_name(data: str) -> None:
    """Refuse, before ``datasets`` tries the hub, a ``--data`` that can only be a mistyped path or a folder that holds
    no data set."""
    path = Path(data).expanduser()
    if path.is_dir():
        if any((path / marker).exists() for marker in _DATASET_MARKERS):
            return
        if any(next(path.rglob(pattern), None) is not None for pattern in _DATASET_FILES):
            return
        raise UserError(f"--data {data} is a folder of none of the forms evaluate reads: {_FORMS}")
    if path.exists():
        raise UserError(f"--data {data} is a file of none of the forms evaluate reads: {_FORMS}")
    if looks_like_path(data):
        raise UserError(f"--data {data}: no such file or folder (it reads {_FORMS})")


def open_checked(config: DataOptions, protocol: Protocol, check_crop: bool = True) -> Any:
    """The data source of ``config.data``, refused with a user error when it is empty or (``check_crop``) its
    frames do not fit the protocol's crop."""
    if config.limit is not None and config.limit < 1:
        raise UserError(f"--limit is {config.limit}, so no frame would be read: give --limit 1 or more, or leave it "
                        "out to read every frame")
    try:
        source = open_data(config, protocol)
        if len(source) == 0:
            raise UserError(f"{data_flags(config)} holds no frames")
        height, width = source[0].depth.shape
        if check_crop:  # a crop that does not fit the frames stops here
            crop_mask(height, width, eval_crop(protocol, height, width))
    except (ValueError, NyuFormatError, LabelError) as error:
        raise UserError(str(error)) from error
    except FileNotFoundError as error:  # shards: a location that matches nothing
        raise UserError(f"--data {config.data}: {error}") from error
    return source


def data_flags(config: DataOptions) -> str:
    """How the command line named the data, for messages: ``--data X`` or ``--images X --depths Y``."""
    return f"--data {config.data}" if config.data is not None else f"--images {config.images} --depths {config.depths}"


def _batches(source: Any, batch_size: int) -> list[list[int]]:
    return [list(range(start, min(start + batch_size, len(source)))) for start in range(0, len(source), batch_size)]


def _read(source: Any, positions: list[int]) -> list[DepthFrame]:
    return [source[position] for position in positions]


# ----------------------------------------------------------------------------------------------------------- evaluation


@dataclass
class BatchResult:
    raw: torch.Tensor  # (B, H, W) prediction at the frame's size, before alignment
    depth: torch.Tensor  # (B, H, W) float64 predicted metres after the protocol
    target: torch.Tensor  # (B, H, W) ground truth metres
    valid: torch.Tensor  # (B, H, W) bool
    scale: torch.Tensor  # (B,) as applied: lsq_inverse holds it at >= 0
    shift: torch.Tensor  # (B,)
    metrics: dict[str, torch.Tensor]  # name -> (B,)
    negative_scale: torch.Tensor  # (B,) bool: the free fit's scale was negative, scored as the best constant


def evaluate_frames(model: DepthModel, protocol: Protocol, frames: Sequence[DepthFrame], device) -> BatchResult:
    """Run the model on frames of one size and score them under the protocol."""
    images = torch.from_numpy(np.stack([frame.image for frame in frames])).to(device)
    target = torch.from_numpy(np.stack([frame.depth for frame in frames])).to(device)
    height, width = target.shape[-2:]
    inputs = images.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
    model_width, model_height = model.input_size_for(width, height)  # a teacher: the frame as it is
    inputs = resize_images(inputs, model_height, model_width, protocol.input_resize).clamp(0.0, 1.0)
    with torch.inference_mode():
        prediction = model.infer(inputs).to(device=device, dtype=torch.float32)  # (B, h, w)
    # not clamped: a relative prediction's offset is free, so its negative values enter the fit as they are; the
    # protocol clamps only metric depth (non-negative by definition). A teacher's map is at the frame's size already.
    raw = resize_images(prediction[:, None], height, width, protocol.output_resize)[:, 0]
    valid = valid_mask(protocol, target)
    depth, scale, shift, negative = predicted_depth(protocol, raw, model.kind, target, valid)
    metrics = batch_depth_metrics(depth, target, valid)
    return BatchResult(raw, depth, target, valid, scale, shift, metrics, negative)


class PredictionWriter:
    """Streams raw predictions into ``predictions.npz`` (``predictions`` float32 (N, H, W), ``indices``,
    ``names``, ``resize``: the kernel that took each output to the frame's size) without holding them all in memory;
    ``np.load`` reads it back."""

    def __init__(self, path: Path, count: int, resize: str) -> None:
        self.path, self.count, self.written, self.resize = path, count, 0, resize
        self.archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.member = None
        self.shape: tuple[int, int] | None = None

    def write(self, raw: np.ndarray) -> None:
        if self.member is None:
            self.shape = raw.shape[1:]
            self.member = self.archive.open("predictions.npy", "w", force_zip64=True)
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.count, *self.shape)}
            np.lib.format.write_array_header_2_0(self.member, header)
        if raw.shape[1:] != self.shape:
            raise ValueError(f"--save_predictions needs frames of one size: {raw.shape[1:]} after {self.shape}")
        self.member.write(np.ascontiguousarray(raw, dtype="<f4").tobytes())
        self.written += len(raw)

    def close(self, indices: list[int], names: list[str]) -> None:
        if self.member is not None:
            self.member.close()
        members = (
            ("indices", np.asarray(indices, dtype=np.int64)), ("names", np.asarray(names)),
            ("resize", np.asarray(self.resize)),
        )
        for name, values in members:
            with self.archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, values)
        self.archive.close()
        if self.written != self.count:
            raise RuntimeError(f"{self.path}: wrote {self.written} predictions, expected {self.count}")


def _picture(
    model: DepthModel, protocol: Protocol, source: Any, rows: list[tuple[str, int]], device
) -> tuple[np.ndarray, dict[str, Any]]:
    """RGB, ground truth, prediction and error of the chosen frames, and what the picture says beside them
    (:func:`shards.tools.pictures.picture_key`). Depths in metres, ground truth and prediction on each row's scale;
    holes grey; pixels outside the evaluation crop dimmed and hatched; each row labelled by its frame's name."""
    pictures, labels = [], []
    results: dict[int, tuple[DepthFrame, BatchResult]] = {}
    for label, position in rows:
        if position not in results:  # with few frames, best, median and worst may be one frame
            frame = source[position]
            results[position] = frame, evaluate_frames(model, protocol, [frame], device)
        frame, result = results[position]
        target = result.target[0].cpu().numpy()
        valid = result.valid[0].cpu().numpy()
        depth = result.depth[0].cpu().numpy()
        height, width = target.shape
        outside = ~crop_mask(height, width, eval_crop(protocol, height, width)).numpy()
        low, high = np.percentile(target[valid], [2, 98]) if valid.any() else (0.0, protocol.depth_cap)
        pictures.append(
            [
                frame.image,
                colorize_depth(target, target > 0, (low, high), inverse=False, outside=outside),
                colorize_depth(depth, None, (low, high), inverse=False, outside=outside),
                error_map(depth - target, valid, "m", outside=outside),
            ]
        )
        labels.append(f"{frame_label(frame.name)}\n{label}, AbsRel {float(result.metrics['abs_rel'][0]):.3f}")
    titles = ["RGB", "ground truth (m)", "prediction (m)", "|error| (m)"]
    key = {"columns": titles, "rows": labels, **picture_key(pictures)}
    return image_grid(pictures, titles=titles, row_labels=labels, cell_height=192), key


#: Column headers of the reference table, with the metric each shows.
TABLE_COLUMNS = (
    ("AbsRel", "abs_rel"),
    ("SqRel", "sq_rel"),
    ("RMSE", "rmse"),
    ("RMSE log", "rmse_log"),
    ("δ<1.25", "delta1"),
    ("δ<1.25²", "delta2"),
    ("δ<1.25³", "delta3"),
)


def table_row(name: str, input_size: str, metrics: dict[str, float], precision: str | None = None) -> str:
    """A markdown table (header + one row) in the reference table's layout (``input_size`` as
    :meth:`DepthModel.input_label` prints it); then the precision, when given."""
    header = "| Model | Input | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "---|" * (len(TABLE_COLUMNS) + 2)
    values = " | ".join(f"{metrics.get(key, math.nan):.3f}" for _, key in TABLE_COLUMNS)
    note = f"\nPrecision: {precision}.\n" if precision else ""
    return f"{header}\n{rule}\n| {name} | {input_size} | {values} |\n{note}"


def resize_kernels(model: DepthModel, protocol: Protocol) -> dict[str, str]:
    """The kernels that took each frame to the model's input and its output back to the frame's size: the
    protocol's, or a teacher's own (its authors' resizes, inside the teacher: docs/evaluation.md, "A teacher's row")."""
    if model.native_size:
        info = model.runner.info()
        return {"input": f"teacher: {info['input_resize']}", "output": f"teacher: {info['output_resize']}"}
    return {"input": protocol.input_resize, "output": protocol.output_resize}


def negative_scale_note(negative: int, scored: int) -> str:
    """The line that counts the frames scored as a constant because their free fit had a negative scale (evaluate's
    stderr, compare's stderr and compare.md): the usual cause is a model's kind, metres read as inverse depth."""
    return (
        f"{negative} of {scored} frames fit a negative scale: the output looks like depth, not inverse depth; "
        "see --kind"
    )


def evaluate(
    model: DepthModel,
    source: Any,
    protocol: Protocol,
    out: Path,
    batch_size: int = 8,
    save_predictions: bool = False,
    device: torch.device | str = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every frame of ``source``; write the outputs into ``out``; return the ``metrics.json`` record.

    Files of this command's own names that this run may not write (an earlier run's predictions or picture, in a
    folder written over with ``--overwrite``) are removed first, so the folder never mixes two runs."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("predictions.npz", "best_median_worst.png"):
        (out / name).unlink(missing_ok=True)
    count = len(source)
    if count == 0:
        raise ValueError("the data source holds no frames")
    resize = resize_kernels(model, protocol)
    writer = PredictionWriter(out / "predictions.npz", count, resize["output"]) if save_predictions else None
    started = time.perf_counter()
    rows = _score_source(model, source, protocol, batch_size, device, writer)
    seconds = time.perf_counter() - started
    means = mean_metrics({name: [row[name] for row in rows] for name in DEPTH_METRICS})  # in the order scored
    rows.sort(key=lambda row: row["position"])
    if writer is not None:
        writer.close([row["index"] for row in rows], [row["name"] for row in rows])
    scored = [row for row in rows if not math.isnan(row["abs_rel"])]
    if len(scored) < count:
        log.warning("%d of %d frames have no valid pixel under the protocol: left out", count - len(scored), count)
    negative = sum(1 for row in scored if row["negative_scale"])
    if negative:
        log.warning("%s: %s", model.name, negative_scale_note(negative, len(scored)))
    record = {
        "protocol": protocol.to_dict(),
        "model": model.describe(),
        "resize": resize,
        "data": source.describe(),
        "count": len(scored),
        "frames_without_valid_pixels": count - len(scored),
        "negative_scale_frames": negative,
        "metrics": means,
        "averaging": "mean over images of per-image metrics",
        "seconds": seconds,
        "images_per_second": count / seconds,
        "device": str(device),
        "precision": model.precision,
        **(extra or {}),
    }
    if scored:
        path = out / "best_median_worst.png"
        drawn = _draw_best_median_worst(model, protocol, source, scored, device, path)
        record["picture"] = {"file": path.name, **drawn}
    _write_report(out, record, rows, model, means)
    return record


def _score_source(
    model: DepthModel, source: Any, protocol: Protocol, batch_size: int, device, writer: PredictionWriter | None
) -> list[dict[str, Any]]:
    """Every frame's row of ``per_image.csv``, in the order scored; the next batch is read on a thread while the
    model runs on this one."""
    rows: list[dict[str, Any]] = []
    batches, count = _batches(source, batch_size), len(source)
    with ThreadPoolExecutor(max_workers=1) as reader, tqdm(total=count, desc="evaluate", unit="image") as progress:
        pending = reader.submit(_read, source, batches[0])
        for number, positions in enumerate(batches):
            frames = pending.result()
            if number + 1 < len(batches):
                pending = reader.submit(_read, source, batches[number + 1])
            rows += _score_batch(model, protocol, positions, frames, device, writer)
            progress.update(len(frames))
    return rows


def _score_batch(
    model: DepthModel,
    protocol: Protocol,
    positions: list[int],
    frames: list[DepthFrame],
    device,
    writer: PredictionWriter | None,
) -> list[dict[str, Any]]:
    """The rows of one batch read from ``positions``; frames of one size go through the model together."""
    groups: dict[tuple[int, int], list[int]] = {}
    for offset, frame in enumerate(frames):
        groups.setdefault(frame.depth.shape, []).append(offset)
    rows: list[dict[str, Any]] = []
    for offsets in groups.values():
        result = evaluate_frames(model, protocol, [frames[o] for o in offsets], device)
        if writer is not None:
            writer.write(result.raw.cpu().numpy())
        valid_pixels = result.valid.sum((1, 2)).cpu()
        for row_number, offset in enumerate(offsets):
            frame = frames[offset]
            row: dict[str, Any] = {
                "position": positions[offset],
                "index": frame.index,
                "name": frame.name,
                "valid_pixels": int(valid_pixels[row_number]),
                "scale": float(result.scale[row_number]),
                "shift": float(result.shift[row_number]),
                "negative_scale": bool(result.negative_scale[row_number]),
            }
            row.update({name: float(result.metrics[name][row_number]) for name in DEPTH_METRICS})
            rows.append(row)
    return rows


def _write_report(
    out: Path, record: dict[str, Any], rows: list[dict[str, Any]], model: DepthModel, means: dict[str, float]
) -> None:
    """``metrics.json``, ``per_image.csv`` (one row per frame, by position) and ``table_row.md``."""
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(out / "per_image.csv", "w", newline="") as file:
        table = csv.DictWriter(file, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
    (out / "table_row.md").write_text(table_row(model.name, model.input_label(), means, model.precision))


def _draw_best_median_worst(
    model: DepthModel, protocol: Protocol, source: Any, scored: list[dict[str, Any]], device, path: Path
) -> dict[str, Any]:
    """``best_median_worst.png``: the frames of lowest, median and highest AbsRel, scored again to be drawn; returns
    what ``metrics.json`` says of it (columns, row labels, colour bars, legend)."""
    ranked = sorted(scored, key=lambda row: row["abs_rel"])
    chosen = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
    picture, key = _picture(model, protocol, source, [(label, row["position"]) for label, row in chosen], device)
    save_picture(picture, str(path))
    return key


# -------------------------------------------------------------------------------------------------------------- command


#: ``python -m distill.evaluate``: its config.
COMMAND = Command("python -m distill.evaluate", EvaluateConfig)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    if not config.overwrite:
        refuse_filled_folder(config.out, "--out", "pass --overwrite true to write over it")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = pick_device(config.device)
    input_size = parse_size(config.size) if config.size else None
    try:
        model = DepthModel.from_pretrained(
            config.model, device=config.device, input_size=input_size, precision=config.precision, kind=config.kind
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    protocol, note = resolve_protocol(config, model.kind)
    source = open_checked(config, protocol)
    out = Path(config.out)
    save_resolved_config(resolved_yaml, out)
    try:
        record = evaluate(
            model,
            source,
            protocol,
            out,
            batch_size=config.batch_size,
            save_predictions=config.save_predictions,
            device=device,
            extra={"protocol_note": note},
        )
    except (NyuFormatError, LabelError, OSError) as error:  # a frame that is unreadable or not what its source says
        raise UserError(str(error)) from error
    finally:
        if hasattr(source, "close"):
            source.close()
    log.info("%s", json.dumps(record["metrics"]))
    sys.stdout.write(table_row(model.name, model.input_label(), record["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
