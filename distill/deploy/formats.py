"""A student written in each runtime's file format, fp32 or int8, with no checks: the one place that knows which
exporter and which quantiser each format uses. ``distill.deploy.release`` adds parity and the accuracy gate on top;
``distill.benchmark`` uses it directly to time the phone runtimes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

FORMATS = ("onnx", "tflite", "executorch", "coreml")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte", "coreml": ".mlpackage"}
#: format -> (modules its fp32 export needs, extra modules its int8 export needs, the pip extra that has them)
TOOLCHAINS = {
    "onnx": (("onnx",), ("onnxruntime",), "export"),
    "tflite": (("litert_torch", "ai_edge_litert"), ("ai_edge_quantizer",), "litert"),
    "executorch": (("executorch",), (), "executorch"),
    "coreml": (("coremltools",), (), "coreml"),
}


def missing_toolchain(format: str, int8: bool = False) -> list[str]:
    """The modules ``format`` (and its int8 export) needs that are not installed; empty when it can be written."""
    fp32_modules, int8_modules, _ = TOOLCHAINS[format]
    needed = fp32_modules + (int8_modules if int8 else ())
    return [module for module in needed if importlib.util.find_spec(module) is None]


def int8_path_for(path: Path) -> Path:
    """``student.tflite`` -> ``student.int8.tflite``: where an int8 file goes beside its fp32 one."""
    return path.with_name(path.stem + ".int8" + path.suffix)


def write_format(
    model: torch.nn.Module, format: str, path: Path, height: int, width: int, calibration: Sequence | None = None
) -> Path:
    """``model`` as an fp32 file of ``format`` (ExecuTorch: int8 when ``calibration`` batches are given)."""
    if format == "onnx":
        from distill.deploy.onnx import export_onnx

        return export_onnx(model, path, height=height, width=width)
    if format == "tflite":
        from distill.deploy.litert import export_tflite

        return export_tflite(model, path, height, width)
    if format == "executorch":
        from distill.deploy.executorch_pte import export_pte

        return export_pte(model, path, height, width, calibration=calibration)
    from distill.deploy.coreml import export_coreml

    return export_coreml(model, path, height, width)


def write_int8(
    model: torch.nn.Module, format: str, fp32_path: Path, int8_path: Path, height: int, width: int, batches: Sequence
) -> Path:
    """The static int8 file of ``format``, calibrated on ``batches`` (float32 (1, 3, H, W) RGB in [0, 1])."""
    if format == "onnx":
        from distill.deploy.quantize import quantize_int8

        pictures = [(batch[0].transpose(1, 2, 0) * 255).round().astype(np.uint8) for batch in batches]
        return quantize_int8(fp32_path, int8_path, mode="static", calibration=pictures)
    if format == "tflite":
        from distill.deploy.litert import quantize_tflite

        return quantize_tflite(fp32_path, int8_path, batches)
    if format == "executorch":
        return write_format(model, format, int8_path, height, width, calibration=batches)
    raise ValueError("int8 is offered for onnx, tflite and executorch; Core ML files are converted in fp32 only")
