"""The configs of ``python -m distill.evaluate`` and ``python -m distill.compare``: what each reads from its command
line (through :func:`shards.config.parse_config`), and the protocol overrides both share.

``compare`` scores each data set with an :class:`EvaluateConfig` of its own, so the two commands open data and pick
protocols the same way without parsing each other's command lines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from distill.deploy.configs import OutputKind
from distill.evaluation.protocols import EIGEN_CROP, GARG_CROP, Protocol
from shards.argv import Spelling
from shards.depth_sources import DepthScaleName, parse_depth_scale
from shards.errors import UserError

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
    kind: OutputKind | None = None
    """what an exported file outputs when it does not say: relative_inverse_depth (assumed) or metric_depth"""


@dataclass(kw_only=True)
class DataOptions:
    """The data: NYU's .mat, a DIODE root, a .txt pair list, an rgb/ + depth/ folder or a datasets copy."""

    data: str
    """nyu_depth_v2_labeled.mat, a DIODE root, a .txt of 'image depth' lines, an rgb/ + depth/ folder, or a saved
    datasets folder or hub id"""
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
    """frame -> the model's input size"""
    output_resize: Resize | None = None
    """prediction -> the frame's size"""
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
            given["crop"] = parse_box(given["crop"], "crop", "eigen", EIGEN_CROP, int)
        if "crop_fraction" in given:
            given["crop_fraction"] = parse_box(given["crop_fraction"], "crop_fraction", "garg", GARG_CROP, float)
        if given.get("min_prediction") == "none":
            given["min_prediction"] = None
        return given


_PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(Protocol) if f.name != "name")


def _depth_scale(value: float | str) -> float:
    try:
        return parse_depth_scale(str(value))
    except ValueError as error:
        raise UserError(f"--depth_scale: {error}") from None


def parse_box(text: str, key: str, preset_name: str, preset: tuple, kind: type) -> tuple | None:
    """``eigen``/``garg``, ``none`` or ``top,bottom,left,right`` -> the box, or None."""
    if text == preset_name:
        return preset
    if text == "none":
        return None
    parts = text.split(",")
    try:
        if len(parts) == 4:
            return tuple(kind(part) for part in parts)
    except ValueError:
        pass
    raise UserError(f"--{key} {text!r} is not {preset_name}, none or top,bottom,left,right")


@dataclass(kw_only=True)
class EvaluateConfig(ProtocolOptions, DataOptions, ModelOptions):
    """Evaluate one depth model on one data set under a protocol (docs/evaluation.md)."""

    out: str
    """the output folder (metrics.json, per_image.csv, table_row.md, best_median_worst.png, config.yaml)"""
    save_predictions: bool = False
    """also write predictions.npz (raw, at the frames' size; frames of one size)"""


@dataclass(kw_only=True)
class CompareConfig:
    """Compare depth models in one table: parameters, MACs, batch-1 latency in each model's runtime on this machine,
    and the metrics on every data set (docs/deploy.md, 'Comparing students')."""

    model: list[str]
    """the models, repeatable: [NAME=]MODEL, MODEL as evaluate's --model; NAME the row name (default: the folder or
    file name)"""
    kind: OutputKind | None = None
    """what the exported files output when they do not say: relative_inverse_depth (assumed) or metric_depth"""
    data: list[str] = field(default_factory=list)
    """the data sets, repeatable: [NAME=]PATH[:PRESET], PATH as evaluate's --data, PRESET a protocol preset (default:
    reference; a folder whose frames are not 640x480 gets no Eigen crop), NAME the column name"""
    out: str
    """the output folder (compare.md, compare.json, compare.png, reports/, config.yaml)"""
    size: str = "256x192"
    """the students' input WxH (multiples of 32); other models keep their own"""
    limit: int | None = None
    """read at most this many frames of each data set"""
    splits: str | None = None
    """NYU's official splits.mat (for .mat data)"""
    split: str | None = None
    """NYU split (test, train, all) or a datasets split (evaluate's default: test)"""
    depth_scale: float | DepthScaleName | None = None
    """integer depth units per metre of folder data (default 1000), or a dataset's name"""
    batch_size: int = 8
    """evaluation batch size"""
    device: str = "auto"
    """evaluation device: auto (a GPU when there is one), cpu, cuda"""
    latency: bool = True
    """export and time each model (false: skip the timing)"""
    latency_repeats: int = 50
    """timed calls at batch 1 (the median is reported)"""
    latency_warmup: int = 5
    """untimed calls before timing"""
    threads: int | None = None
    """ONNX Runtime and matmul threads (default: the runtime's choice)"""
    matmul_size: int = 2048
    """side of the fp32 matmul that measures the compute bound"""
    matmul_repeats: int = 10
    """timed matmuls (the median is reported)"""
    picture_frames: int = 4
    """frames of the first data set in compare.png (0: no picture)"""


#: Old spellings of evaluate, kept for one release.
EVALUATE_SPELLING = Spelling(
    renames={
        "--input-size": "--size",
        "--no-min-inclusive": "--min_inclusive false",
        "--no-max-inclusive": "--max_inclusive false",
    }
)
#: Old spellings of compare, kept for one release.
COMPARE_SPELLING = Spelling(renames={"--input-size": "--size", "--no-latency": "--latency false"})
