"""int8 with ONNX Runtime: static (QDQ, calibrated) or dynamic quantisation of an exported student, its calibration
pictures, and how far its outputs move from fp32's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.deploy.parity import generated_scenes
from distill.deploy.runtime import (
    IMAGE_EXTENSIONS,
    INPUT_NAME,
    OUTPUT_NAME,
    images_to_batch,
    load_picture,
    onnx_session,
)

logger = logging.getLogger(__name__)

INT8_MODES = ("static", "dynamic")




class _CalibrationReader:
    """Feeds calibration batches (one picture each) to ONNX Runtime's static quantiser."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # part of CalibrationDataReader's interface; one pass is all we need
        pass


def calibration_pictures(
    folder: str | os.PathLike | None, count: int, width: int, height: int, seed: int = 1000
) -> list[np.ndarray]:
    """Up to ``count`` pictures from ``folder`` (recursive, sorted) or, without one, ``count`` generated scenes (the
    same on every machine). Real pictures of the deployment domain calibrate better than generated ones."""
    if folder is not None:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"no pictures ({', '.join(IMAGE_EXTENSIONS)}) under calibration folder {folder}")
        return [load_picture(path) for path in paths[:count]]
    pictures = generated_scenes(count, width, height, first_seed=seed)
    if not pictures:
        rng = np.random.default_rng(seed)
        pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    return pictures


def quantize_int8(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    mode: str = "static",
    calibration: Sequence[np.ndarray] = (),
) -> Path:
    """ONNX Runtime int8 quantisation of an exported student.

    ``static``: QDQ format, per-channel int8 weights, uint8 activations calibrated (min-max) on ``calibration``
    pictures; every convolution is quantised. ``dynamic``: int8 weights, activations quantised at run time; no
    calibration, but ONNX Runtime's dynamic path covers convolutions poorly. On CPUs without int8 dot-product
    instructions (AVX-VNNI, AVX512-VNNI, ARM dotprod) int8 runs slower than fp32; the benchmark says which.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in INT8_MODES:
        raise ValueError(f"int8 mode must be one of {INT8_MODES}, got {mode!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_name(out_path.stem + ".prepared.onnx")
    try:
        # Symbolic shape inference gives up on the Resize nodes; ONNX shape inference is enough for a CNN.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        source = prepared
    except Exception as error:  # noqa: BLE001 - pre-processing is an optimisation; quantise the raw graph instead
        logger.warning("int8 pre-processing failed (%s); quantising the exported graph as it is", error)
        source = Path(fp32_path)
    try:
        if mode == "dynamic":
            quantize_dynamic(str(source), str(out_path), weight_type=QuantType.QInt8)
        else:
            if not calibration:
                raise ValueError("static int8 quantisation needs calibration pictures")
            session = onnx_session(fp32_path, providers=["CPUExecutionProvider"])
            height, width = session.get_inputs()[0].shape[2:4]
            del session
            batches = [images_to_batch([picture], width, height) for picture in calibration]
            quantize_static(
                str(source),
                str(out_path),
                _CalibrationReader(batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    finally:
        prepared.unlink(missing_ok=True)
    logger.info("wrote int8 (%s) model %s", mode, out_path)
    return out_path


def compare_outputs(
    reference_path: str | os.PathLike, other_path: str | os.PathLike, pictures: list[np.ndarray]
) -> dict:
    """Max and mean |difference| between two ONNX models on the same pictures, relative to the reference's range.

    Informative for int8 (which is expected to differ); its accuracy is measured by ``distill.evaluate``."""
    reference = onnx_session(reference_path, providers=["CPUExecutionProvider"], spinning=False)
    other = onnx_session(other_path, providers=["CPUExecutionProvider"], spinning=False)
    height, width = reference.get_inputs()[0].shape[2:4]
    images = images_to_batch(pictures, width, height)
    (expected,) = reference.run([OUTPUT_NAME], {INPUT_NAME: images})
    (actual,) = other.run([OUTPUT_NAME], {INPUT_NAME: images})
    difference = np.abs(actual.astype(np.float64) - expected)
    output_range = float(expected.max() - expected.min()) or 1.0
    return {
        "pictures": len(pictures),
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
        "max_relative_to_range": float(difference.max()) / output_range,
        "mean_relative_to_range": float(difference.mean()) / output_range,
    }
