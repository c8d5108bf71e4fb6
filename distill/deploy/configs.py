"""The configs of ``python -m distill.export``, ``distill.benchmark`` and ``distill.predict`` (read by
:func:`shards.config.parse_config`), with the old spellings each still accepts for one release."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distill.deploy.parity import PARITY_TOLERANCE
from shards.argv import Spelling
from shards.format import STUDENT_SIZE

Backend = Literal[
    "torch_eager", "ort_fp32", "ort_int8", "litert_fp32", "litert_int8", "executorch_fp32", "executorch_int8"
]
ExportFormat = Literal["onnx", "tflite", "executorch", "coreml"]
#: What a model outputs (shards.format's label kinds), for exported files that do not say.
OutputKind = Literal["relative_inverse_depth", "metric_depth"]
_DEFAULT_SIZE = f"{STUDENT_SIZE[0]}x{STUDENT_SIZE[1]}"


@dataclass(kw_only=True)
class ExportConfig:
    """Export a student to ONNX, LiteRT, ExecuTorch or Core ML, check parity with PyTorch, optionally quantise it to
    int8 behind an accuracy gate (docs/deploy.md)."""

    model: str
    """the student folder to export (config.json + model.safetensors); an exported file is exported already"""
    out: str
    """the file to write: .onnx, .tflite, .pte or .mlpackage (its record <out>.json and config beside it)"""
    format: ExportFormat = "onnx"
    """the runtime: onnx (ONNX Runtime), tflite (LiteRT), executorch (.pte, XNNPACK) or coreml (.mlpackage)"""
    size: str = _DEFAULT_SIZE
    """the model's input WxH, fixed in the graph (multiples of 32)"""
    opset: int = 17
    """the ONNX opset"""
    tolerance: float = PARITY_TOLERANCE
    """parity check: largest |onnx - torch| allowed, divided by the PyTorch output's range"""
    parity_image: list[str] = field(default_factory=list)
    """pictures to check parity on as well (repeatable)"""
    int8: bool = False
    """also write an int8 model (onnx, tflite, executorch), calibrated on --calibration"""
    int8_mode: Literal["static", "dynamic"] = "static"
    """onnx: static (calibrated activations, faster) or dynamic (weights only); the phone formats are static"""
    int8_out: str | None = None
    """the int8 file (default: <out stem>.int8<suffix>)"""
    calibration: str | None = None
    """a folder of pictures for static int8 (default: generated scenes)"""
    count: int = 16
    """calibration pictures drawn for static int8"""
    validation: str | None = None
    """int8 accuracy gate: data scored for fp32 and int8 under --protocol (anything evaluate --data reads)"""
    validation_splits: str | None = None
    """NYU's splits.mat when --validation is NYU's .mat"""
    validation_limit: int | None = None
    """score at most this many validation frames"""
    max_abs_rel_drop: float = 0.005
    """int8 accuracy gate: the largest AbsRel rise of int8 over fp32 accepted (the int8 file is renamed above it)"""
    protocol: str = "reference"
    """int8 accuracy gate: the evaluation preset the validation data is scored under"""


@dataclass(kw_only=True)
class BenchmarkConfig:
    """Latency and throughput of students on this machine: PyTorch eager, ONNX Runtime, LiteRT and ExecuTorch, fp32
    and int8, against the compute lower bound (docs/deploy.md)."""

    model: list[str]
    """the student folders to time (repeatable)"""
    out: str
    """the JSON file of every figure (its config <out>.config.yaml beside it)"""
    size: str = _DEFAULT_SIZE
    """the models' input WxH (multiples of 32)"""
    warmup: int = 5
    """untimed calls before each timing"""
    repeats: int = 50
    """timed calls at batch 1"""
    throughput_repeats: int = 10
    """timed calls at batch 8"""
    matmul_size: int = 2048
    """side of the square fp32 matmul that measures the compute bound"""
    matmul_repeats: int = 10
    """timed matmuls (the median is reported)"""
    threads: int | None = None
    """threads for every backend (default: each runtime's choice)"""
    backend: list[Backend] | None = None
    """only these backends (repeatable; default: eager, ONNX Runtime, and each phone runtime that is installed)"""
    rounds: int = 1
    """repeat the whole sequence; the median of the rounds is reported"""
    workdir: str | None = None
    """keep the exported models here (default: a temporary folder)"""


@dataclass(kw_only=True)
class PredictConfig:
    """Depth maps for pictures, folders (recursive) and videos: colour-mapped pictures, and raw relative inverse
    depth on request (docs/deploy.md)."""

    model: str
    """a student folder or an exported .onnx file"""
    inputs: list[str]
    """pictures, folders (searched recursively) or video files; bare words on the command line"""
    out: str
    """the output folder (the pictures, skipped.txt, config.yaml)"""
    save_raw: Literal["png16", "npy"] | None = None
    """also write raw inverse depth: 16-bit PNG (with its range in a .json) or float32 .npy"""
    smooth: Literal["ema", "mean"] | None = None
    """video: average the predictions over frames"""
    smooth_window: int = 5
    """frames in the moving average (mean)"""
    smooth_alpha: float = 0.5
    """weight of the newest frame (ema)"""
    video_out: Literal["mp4", "frames"] = "mp4"
    """video: an mp4, or a PNG per frame"""
    size: str | None = None
    """the model's input WxH (student folders; default 256x192; an .onnx file has its own)"""
    batch_size: int = 4
    """pictures per forward pass"""
    device: str = "auto"
    """PyTorch device for student folders: auto, cpu, cuda"""
    threads: int | None = None
    """CPU threads (default: the runtime's choice)"""
    kind: OutputKind | None = None
    """what an exported file outputs when it does not say: relative_inverse_depth (assumed) or metric_depth"""


_SIZE_PAIR = (STUDENT_SIZE[0], STUDENT_SIZE[1])
#: Old spellings, kept for one release.
EXPORT_SPELLING = Spelling(
    renames={"--student": "--model", "--calibration-count": "--count"}, size_pair=_SIZE_PAIR
)
BENCHMARK_SPELLING = Spelling(renames={"--student": "--model", "--json": "--out"}, size_pair=_SIZE_PAIR)
PREDICT_SPELLING = Spelling(renames={"--student": "--model"}, size_pair=_SIZE_PAIR, positional="inputs")
