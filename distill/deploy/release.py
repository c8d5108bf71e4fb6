"""One export call for every runtime: write the file, check it, and for int8 gate it on accuracy.

``export(student, "tflite", "student.tflite", int8=True, calibration="photos/", validation="nyu.mat")``

1. The fp32 file: ``onnx`` (ONNX Runtime), ``tflite`` (LiteRT), ``executorch`` (``.pte``, XNNPACK) or ``coreml``
   (``.mlpackage``).
2. Parity of the fp32 file against PyTorch, where its runtime runs here (ORT, the LiteRT interpreter, the
   ExecuTorch runtime; Core ML only on macOS): on random, generated-scene (and the NYU frame's, when present)
   pictures, max |file - torch| must stay within ``parity_tolerance`` (1e-3) of the PyTorch output's range.
3. With ``int8``: the int8 file, calibrated on ``calibration`` pictures (a folder; generated scenes without one),
   written beside the fp32 one as ``<stem>.int8<suffix>``. With ``validation`` data (anything ``evaluate --data``
   reads, or an opened frame source), fp32 and int8 are scored under the same protocol; ΔAbsRel = int8 - fp32 is
   reported, and above ``max_abs_rel_drop`` the int8 file is renamed ``*.failed-gate*`` and :class:`GateError`
   is raised.

A record of all of it goes to ``<out>.json`` (the model card reads it). This module sits above evaluation (the
gate scores with ``distill.evaluation``), so the export command can use it and evaluation cannot.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from distill.deploy.formats import FORMATS, SUFFIXES, int8_path_for, write_format, write_int8
from distill.deploy.parity import ParityError, _compare, parity_inputs
from distill.deploy.quantize import calibration_pictures
from distill.deploy.runtime import PREDICTION_METADATA, images_to_batch, load_runner
from distill.students import student_output_kind
from shards.errors import UserError

logger = logging.getLogger(__name__)

#: fp32 files must match PyTorch within this fraction of the output's range (the runtimes' own kernels differ).
EXPORT_PARITY_TOLERANCE = 1e-3
#: Largest accepted AbsRel increase of int8 over fp32 on the validation data.
MAX_ABS_REL_DROP = 0.005


class GateError(RuntimeError):
    """The int8 model lost more accuracy than the gate allows."""


def parity(model: torch.nn.Module, path: Path, height: int, width: int) -> dict[str, Any]:
    """Max |file - torch| / range over the parity pictures at batch 1 (the phone files have batch 1)."""
    runner = load_runner(path, threads=1)
    cases = []
    for name, pictures in parity_inputs(height, width).items():
        images = images_to_batch(pictures[:1], width, height)
        with torch.no_grad():
            expected = model(torch.from_numpy(images))[:, 0].numpy()
        cases.append(_compare(name, 1, expected, runner(images), EXPORT_PARITY_TOLERANCE).__dict__)
    return {"runtime": runner.name.split(":")[0], "tolerance": EXPORT_PARITY_TOLERANCE, "cases": cases,
            "passed": all(case["passed"] for case in cases)}


def _open_validation(validation: Any, protocol_name: str, splits: str | None = None, limit: int | None = None):
    from distill.evaluation.configs import DataOptions
    from distill.evaluation.protocols import crop_box, get_protocol
    from distill.evaluation.sources import open_data

    protocol = get_protocol(protocol_name)
    if isinstance(validation, (str, os.PathLike)):
        source = open_data(DataOptions(data=str(validation), splits=splits, limit=limit), protocol)
    else:
        source = validation
    if len(source) == 0:
        raise UserError(f"--validation {validation}: no frames to score the int8 model on")
    height, width = source[0].depth.shape
    box = crop_box(protocol, height, width)
    if box is not None and (box[1] > height or box[3] > width):
        logger.warning("validation frames are %dx%d: the %s crop does not fit, scored uncropped", width, height,
                       protocol.name)
        protocol = get_protocol(protocol_name, crop=None)
    return source, protocol


def abs_rel_gate(
    fp32_path: Path, int8_path: Path, validation: Any, out: Path, protocol: str = "reference",
    splits: str | None = None, limit: int | None = None,
) -> dict:
    """Both files scored by ``distill.evaluation.evaluate`` on the same frames under the same protocol."""
    from distill.deploy.model import DepthModel
    from distill.evaluation.evaluate import evaluate

    source, chosen = _open_validation(validation, protocol, splits, limit)
    scores = {}
    for precision, path in (("fp32", fp32_path), ("int8", int8_path)):
        record = evaluate(DepthModel.from_pretrained(path, threads=1), source, chosen, out / precision, device="cpu")
        scores[precision] = record["metrics"]["abs_rel"]
    return {"protocol": chosen.name, "frames": len(source), "abs_rel_fp32": scores["fp32"],
            "abs_rel_int8": scores["int8"], "abs_rel_drop": scores["int8"] - scores["fp32"]}


def gate_int8(
    fp32_path: Path, int8_path: Path, validation: Any, max_abs_rel_drop: float = MAX_ABS_REL_DROP,
    protocol: str = "reference", splits: str | None = None, limit: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """The accuracy gate: (the gate's record, the int8 file's path). Above ``max_abs_rel_drop`` the int8 file is
    renamed ``*.failed-gate*`` (so nothing ships it by mistake) and the returned record says ``passed: false``."""
    work = fp32_path.with_name(fp32_path.name + ".validation")
    gate = abs_rel_gate(fp32_path, int8_path, validation, work, protocol, splits, limit)
    gate.update(max_abs_rel_drop=max_abs_rel_drop, passed=gate["abs_rel_drop"] <= max_abs_rel_drop)
    logger.info("int8 ΔAbsRel %+.4f (fp32 %.4f, int8 %.4f; limit %.4f)", gate["abs_rel_drop"], gate["abs_rel_fp32"],
                gate["abs_rel_int8"], max_abs_rel_drop)
    if gate["passed"]:
        return gate, int8_path
    failed = int8_path.with_name(int8_path.stem + ".failed-gate" + int8_path.suffix)
    os.replace(int8_path, failed)
    return gate, failed


def gate_message(gate: dict[str, Any], validation: Any, failed: Path) -> str:
    return (
        f"int8 AbsRel rose by {gate['abs_rel_drop']:.4f} on {validation} (fp32 {gate['abs_rel_fp32']:.4f}, int8 "
        f"{gate['abs_rel_int8']:.4f}), above the limit {gate['max_abs_rel_drop']}; kept as {failed}. Calibrate on "
        "pictures of the deployment domain (--calibration), or ship fp32"
    )


def export(
    model: torch.nn.Module,
    format: str,
    out: str | os.PathLike,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    validation: Any = None,
    max_abs_rel_drop: float = MAX_ABS_REL_DROP,
    height: int = 192,
    width: int = 256,
    calibration_count: int = 16,
    protocol: str = "reference",
    validation_splits: str | None = None,
    validation_limit: int | None = None,
    int8_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export ``model`` (a student) to ``format`` at ``out``, check it, quantise and gate it; returns the record
    also written to ``<out>.json``. Raises :class:`ParityError` or :class:`GateError` when a check fails."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[format]:
        raise ValueError(f"a {format} export is a {SUFFIXES[format]} file, got {out}")
    model = model.eval().cpu()
    path = write_format(model, format, out, height, width)
    kind = student_output_kind(model.config) if hasattr(model, "config") else "relative_inverse_depth"
    record: dict[str, Any] = {"format": format, "file": str(path), "precision": "fp32", PREDICTION_METADATA: kind,
                              "input": {"shape": [1, 3, height, width], "range": [0.0, 1.0]}}
    _save(out, record)  # the runners read the output kind from it
    if format == "coreml":
        from distill.deploy.coreml import PARITY_NOTE, can_run_coreml

        record["parity"] = {"runtime": "coreml", "note": PARITY_NOTE, "cases": []}
        if not can_run_coreml():
            logger.warning("%s", PARITY_NOTE)
    else:
        record["parity"] = parity(model, path, height, width)
        if not record["parity"]["passed"]:
            _save(out, record)
            raise ParityError(f"{path} does not match PyTorch: {json.dumps(record['parity']['cases'])}")
    if int8:
        pictures = calibration_pictures(calibration, calibration_count, width, height)
        batches = [images_to_batch([picture], width, height) for picture in pictures]
        int8_path = Path(int8_out) if int8_out else int8_path_for(out)
        int8_path = write_int8(model, format, path, int8_path, height, width, batches)
        _save(int8_path, {**record, "file": str(int8_path), "precision": "int8"})
        record["int8"] = {"file": str(int8_path), "calibration": str(calibration or "generated scenes"),
                          "calibration_pictures": len(pictures)}
        if validation is None:
            logger.warning("int8 without validation data: its accuracy gate did not run")
            record["int8"]["gate"] = "not run: no validation data"
        else:
            gate, int8_path = gate_int8(
                path, int8_path, validation, max_abs_rel_drop, protocol, validation_splits, validation_limit
            )
            record["int8"].update(file=str(int8_path), gate=gate)
            if not gate["passed"]:
                _save(out, record)
                raise GateError(gate_message(gate, validation, int8_path))
            _save(int8_path, {**record, "file": str(int8_path), "precision": "int8",
                              "abs_rel_drop": gate["abs_rel_drop"]})
    _save(out, record)
    return record


def _save(path: Path, record: dict[str, Any]) -> None:
    path.with_name(path.name + ".json").write_text(json.dumps(record, indent=2) + "\n")
