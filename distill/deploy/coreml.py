"""Core ML for iOS and macOS: conversion of a student to an ``.mlpackage`` (ML program, iOS 17), fp32 or fp16.

Only the conversion runs here: running a Core ML model needs macOS, so its parity against PyTorch is checked on a
Mac (``coremltools``' ``model.predict``), not by this project's tests. Install with
``pip install 'depth-distill[coreml]'``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from distill.deploy.runtime import INPUT_NAME, OUTPUT_NAME
from distill.students.config import check_input_size

INSTALL_HINT = "writing an .mlpackage needs coremltools: pip install 'depth-distill[coreml]'"
#: Why the parity of a Core ML file is not checked off macOS.
PARITY_NOTE = "Core ML runs on macOS only: parity not checked on this machine"


def can_run_coreml() -> bool:
    return sys.platform == "darwin"


def export_coreml(model, path: str | os.PathLike, height: int, width: int, fp16: bool = False) -> Path:
    """``model`` as an ``.mlpackage`` with input ``image`` (1, 3, H, W) float in [0, 1] and output
    ``inverse_depth`` (1, 1, H, W); fp32 compute unless ``fp16``."""
    import torch

    try:
        import coremltools as ct
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    check_input_size(width, height)
    example = (torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)),)
    program = torch.export.export(model.eval().cpu(), example).run_decompositions({})
    converted = ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=example[0].shape)],
        outputs=[ct.TensorType(name=OUTPUT_NAME)],
        compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    converted.save(str(path))
    return path
