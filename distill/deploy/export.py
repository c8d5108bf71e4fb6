"""Export a student for a runtime, check it against PyTorch, and optionally quantise it to int8 behind an accuracy
gate: the export command and the release path it runs.

``python -m distill.export --model runs/x/student --format onnx|tflite|executorch|coreml --out FILE [--int8 true]``

ONNX (the default): one input ``image`` (B, 3, H, W) float RGB in [0, 1] and one output ``inverse_depth``
(B, 1, H, W), with a dynamic batch axis; H and W are fixed at export (default 192 x 256). The export is followed by
a parity check against the PyTorch model on random and real-looking inputs at batch 1 and 3: the largest absolute
difference, divided by the PyTorch output's range, must stay within 1e-4, or the command fails and the file is
renamed ``*.failed-parity.onnx`` so that nothing downstream picks up an unchecked model. int8 is ONNX Runtime's
static (QDQ, calibrated) or dynamic quantisation.

The phone formats (``tflite`` for LiteRT, ``executorch`` for a ``.pte`` on XNNPACK, ``coreml`` for an
``.mlpackage``) have batch 1 and go through :func:`export`, one call for every runtime:

1. the fp32 file, written by the format's backend module (``onnx``, ``litert``, ``executorch_pte``, ``coreml``);
2. its parity against PyTorch where its runtime runs here (Core ML's only on macOS), within 1e-3 of the range;
3. with ``int8``, the int8 file calibrated on ``calibration`` pictures (a folder; generated scenes without one),
   written beside the fp32 one as ``<stem>.int8<suffix>``; with ``validation`` data (anything ``evaluate --data``
   reads, or an opened frame source) fp32 and int8 are scored under the same protocol: the int8 file is written as
   ``<stem>.int8.ungated<suffix>`` and takes its name only when the gate passes; above ``max_abs_rel_drop`` it is
   renamed ``*.failed-gate*`` and :class:`GateError` is raised, and a gate that crashes or is interrupted removes it.

Every input (the parity pictures, the calibration pictures, the validation data, the output paths) is read or
checked before the first file is written, so a bad one costs one line, not an export.

A record of all of it goes to ``<out>.json`` (the model card reads it, the runners read the output's kind from it).
The accuracy gate scores with ``distill.evaluation``, which sits above deploy: it is imported inside the gate's
functions only, from the command's side (tests/test_import_rules.py, ``LAZY_CROSSINGS``).

One module of over 600 lines, because it is one idea: turning a student into a checked file. The formats table, the
parity check, quantisation, the gate and the command are the steps of that one path, and each is used only on it
(the benchmark and compare reuse its steps to write the files they time).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from distill.deploy.model import DepthModel, load_runner
from distill.deploy.onnx import export_onnx
from distill.deploy.runtime import (
    EXPORTED_SUFFIXES,
    IMAGE_EXTENSIONS,
    INPUT_NAME,
    KIND_KEY,
    OUTPUT_NAME,
    images_to_batch,
    load_picture,
    onnx_session,
)
from distill.students import is_student_folder, student_output_kind
from distill.students.config import STUDENT_SIZE, check_input_size
from shards.cli.config import Command, parse_size, save_config_beside
from shards.cli.errors import UserError, one_line, run_command
from shards.format import RELATIVE_INVERSE_DEPTH

logger = logging.getLogger(__name__)

#: The runtimes a student is exported for.
ExportFormat = Literal["onnx", "tflite", "executorch", "coreml"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
#: ONNX Runtime's int8: static (calibrated activations) or dynamic (weights only).
Int8Mode = Literal["static", "dynamic"]
INT8_MODES: tuple[str, ...] = get_args(Int8Mode)
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte", "coreml": ".mlpackage"}
DEFAULT_FORMAT: ExportFormat = "onnx"

#: format -> (modules its fp32 export and parity check need, extra modules its int8 export needs, the pip extra that
#: has them all). Running a file needs less: the runners' messages name the runtime's own extra (docs/deploy.md).
TOOLCHAINS = {
    "onnx": (("onnx", "onnxruntime"), (), "export-onnx"),
    "tflite": (("litert_torch", "ai_edge_litert"), ("ai_edge_quantizer",), "export-litert"),
    "executorch": (("executorch",), (), "executorch"),
    "coreml": (("coremltools",), (), "coreml"),
}

#: Largest accepted max |onnx - torch| as a fraction of the PyTorch output's range (max - min).
PARITY_TOLERANCE = 1e-4

#: Batch sizes the parity check runs at: 1, and one above 1 to exercise the dynamic batch axis.
PARITY_BATCHES = (1, 3)

#: fp32 files must match PyTorch within this fraction of the output's range (the runtimes' own kernels differ).
EXPORT_PARITY_TOLERANCE = 1e-3

#: Largest accepted AbsRel increase of int8 over fp32 on the validation data.
MAX_ABS_REL_DROP = 0.005


@dataclass(kw_only=True)
class ExportConfig:
    """Export a student to ONNX, LiteRT, ExecuTorch or Core ML, check parity with PyTorch, optionally quantise it to
    int8 behind an accuracy gate (docs/deploy.md)."""

    model: str
    """the student folder to export (config.json + model.safetensors); an exported file is exported already"""
    out: str
    """the file to write: .onnx, .tflite, .pte or .mlpackage (its record <out>.json and config beside it)"""
    format: ExportFormat = DEFAULT_FORMAT
    """the runtime: onnx (ONNX Runtime), tflite (LiteRT), executorch (.pte, XNNPACK) or coreml (.mlpackage)"""
    size: str = f"{STUDENT_SIZE[0]}x{STUDENT_SIZE[1]}"
    """the model's input WxH, fixed in the graph (multiples of 32)"""
    opset: int = 17
    """the ONNX opset"""
    tolerance: float = PARITY_TOLERANCE
    """parity check: largest |onnx - torch| allowed, divided by the PyTorch output's range"""
    parity_image: list[str] = field(default_factory=list)
    """pictures to check parity on as well (repeatable)"""
    int8: bool = False
    """also write an int8 model (onnx, tflite, executorch), calibrated on --calibration"""
    int8_mode: Int8Mode = "static"
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
    max_abs_rel_drop: float = MAX_ABS_REL_DROP
    """int8 accuracy gate: the largest AbsRel rise of int8 over fp32 accepted (the int8 file is renamed above it)"""
    protocol: str = "reference"
    """int8 accuracy gate: the evaluation preset the validation data is scored under"""


# --------------------------------------------------------------------------------------------------------------
# The file of each format (no checks): the one place that knows each format's exporter and quantiser


def missing_toolchain(format: str, int8: bool = False) -> list[str]:
    """The modules ``format`` (and its int8 export) needs that are not installed; empty when it can be written."""
    fp32_modules, int8_modules, _ = TOOLCHAINS[format]
    needed = fp32_modules + (int8_modules if int8 else ())
    return [module for module in needed if importlib.util.find_spec(module) is None]


def int8_path_for(path: Path) -> Path:
    """``student.tflite`` -> ``student.int8.tflite``: where an int8 file goes beside its fp32 one."""
    return path.with_name(path.stem + ".int8" + path.suffix)


def write_format(
    model: nn.Module, format: str, path: Path, height: int, width: int, calibration: Sequence | None = None
) -> Path:
    """``model`` as an fp32 file of ``format`` (ExecuTorch: int8 when ``calibration`` batches are given)."""
    if format == "onnx":
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
    model: nn.Module, format: str, fp32_path: Path, int8_path: Path, height: int, width: int, batches: Sequence
) -> Path:
    """The static int8 file of ``format``, calibrated on ``batches`` (float32 (1, 3, H, W) RGB in [0, 1])."""
    if format == "onnx":
        pictures = [(batch[0].transpose(1, 2, 0) * 255).round().astype(np.uint8) for batch in batches]
        return quantize_int8(fp32_path, int8_path, mode="static", calibration=pictures)
    if format == "tflite":
        from distill.deploy.litert import quantize_tflite

        return quantize_tflite(fp32_path, int8_path, batches)
    if format == "executorch":
        return write_format(model, format, int8_path, height, width, calibration=batches)
    raise ValueError("int8 is offered for onnx, tflite and executorch; Core ML files are converted in fp32 only")


# --------------------------------------------------------------------------------------------------------------
# Parity: the exported file against PyTorch on the same pictures


class ParityError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


@dataclass
class ParityCase:
    """One input batch compared. ``relative_difference`` = ``max_abs_difference`` / ``output_range``."""

    name: str
    batch: int
    max_abs_difference: float
    output_range: float
    relative_difference: float
    passed: bool


@dataclass
class ParityReport:
    tolerance: float
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def worst(self) -> ParityCase:
        return max(self.cases, key=lambda case: case.relative_difference)

    def to_dict(self) -> dict:
        return {"tolerance": self.tolerance, "passed": self.passed, "cases": [asdict(case) for case in self.cases]}

    def table(self) -> str:
        lines = [f"{'input':<14} {'batch':>5} {'max |diff|':>11} {'range':>10} {'diff/range':>11}  ok"]
        for case in self.cases:
            lines.append(
                f"{case.name:<14} {case.batch:>5} {case.max_abs_difference:>11.3e} {case.output_range:>10.4g} "
                f"{case.relative_difference:>11.3e}  {'yes' if case.passed else 'NO'}"
            )
        return "\n".join(lines)


def generated_scenes(count: int, width: int, height: int, first_seed: int) -> list[np.ndarray]:
    try:
        from shards.tools.scenes import render_scene
    except ImportError:
        return []
    return [render_scene(first_seed + index, width=width, height=height).image for index in range(count)]


def parity_inputs(
    height: int, width: int, seed: int = 0, pictures: Sequence[str | os.PathLike] = ()
) -> dict[str, list[np.ndarray]]:
    """Named lists of uint8 RGB pictures, at least ``max(PARITY_BATCHES)`` each, the parity check runs on.

    ``random`` (uniform noise: exercises every input value), ``scene`` (generated rooms, ``shards.tools.scenes``) and,
    when the user names picture files (export's ``--parity_image``), ``pictures``: the inputs are the same on every
    machine unless the user adds their own.
    """
    rng = np.random.default_rng(seed)
    need = max(PARITY_BATCHES)
    sets: dict[str, list[np.ndarray]] = {
        "random": [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(need)]
    }
    scenes = generated_scenes(need, width, height, first_seed=seed)
    if scenes:
        sets["scene"] = scenes
    if pictures:
        loaded = [load_picture(path) for path in pictures]
        sets["pictures"] = [loaded[index % len(loaded)] for index in range(need)]
    return sets


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    inputs: dict[str, list[np.ndarray]],
    tolerance: float = PARITY_TOLERANCE,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Run PyTorch (fp32, CPU) and ONNX Runtime on the same batches; compare max |difference| to the output range.

    Raises :class:`ParityError` (unless ``raise_on_failure`` is false) when any case exceeds ``tolerance``.
    """
    session = onnx_session(onnx_path, providers=["CPUExecutionProvider"], spinning=False)
    height, width = session.get_inputs()[0].shape[2:4]
    batches = {
        (name, batch): images_to_batch(pictures[:batch], width, height)  # (B, 3, H, W) in [0, 1]
        for name, pictures in inputs.items()
        for batch in PARITY_BATCHES
    }
    # All of PyTorch first, then all of ONNX Runtime: interleaved, the two thread pools spin against each other
    # (about 10x slower on 2 cores).
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval().cpu()
    try:
        with torch.no_grad():
            expected = {key: model(torch.from_numpy(images)).numpy() for key, images in batches.items()}
    finally:
        model.train(was_training).to(device)
    report = ParityReport(tolerance=tolerance)
    for (name, batch), images in batches.items():
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
        report.cases.append(_compare(name, batch, expected[(name, batch)], actual, tolerance))
    del session
    if raise_on_failure and not report.passed:
        raise ParityError(failure_message(report, onnx_path))
    return report


def _compare(name: str, batch: int, expected: np.ndarray, actual: np.ndarray, tolerance: float) -> ParityCase:
    if actual.shape != expected.shape:
        return ParityCase(name, batch, float("inf"), 0.0, float("inf"), False)
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_difference = float(difference.max()) if np.isfinite(difference).all() else float("inf")
    output_range = float(expected.max() - expected.min())
    scale = output_range if output_range > 0 else max(float(np.abs(expected).max()), np.finfo(np.float32).tiny)
    relative = max_difference / scale
    return ParityCase(name, batch, max_difference, output_range, relative, relative <= tolerance)


def failure_message(report: ParityReport, onnx_path: str | os.PathLike) -> str:
    worst = report.worst
    return (
        f"ONNX parity check FAILED for {onnx_path}: max |onnx - torch| = {worst.max_abs_difference:.3e} on "
        f"'{worst.name}' at batch {worst.batch}, which is {worst.relative_difference:.3e} of the output range "
        f"{worst.output_range:.4g} (tolerance {report.tolerance:.0e}). The graph does not compute what the model "
        "computes: look for data-dependent Python control flow, in-place ops on inputs, or ops the exporter traces "
        "as constants (try another --opset).\n" + report.table()
    )


def runtime_parity(model: nn.Module, path: Path, height: int, width: int) -> dict[str, Any]:
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


def _file_parity(model: nn.Module, format: str, path: Path, height: int, width: int) -> dict[str, Any]:
    """The fp32 file's parity where its runtime runs here; Core ML runs on macOS only (a note instead of cases)."""
    if format != "coreml":
        return runtime_parity(model, path, height, width)
    from distill.deploy.coreml import PARITY_NOTE, can_run_coreml

    if not can_run_coreml():
        logger.warning("%s", PARITY_NOTE)
    return {"runtime": "coreml", "note": PARITY_NOTE, "cases": []}


# --------------------------------------------------------------------------------------------------------------
# int8 with ONNX Runtime: calibration pictures, quantisation, and how far the outputs move


class CalibrationReader:
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
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"calibration folder {folder}: no such folder (give a folder of pictures)")
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
                CalibrationReader(batches),
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


# --------------------------------------------------------------------------------------------------------------
# The accuracy gate: fp32 and int8 scored by distill.evaluation (imported here only, lazily)


class GateError(RuntimeError):
    """The int8 model lost more accuracy than the gate allows."""


def _open_validation(validation: Any, protocol_name: str, splits: str | None = None, limit: int | None = None):
    from distill.evaluation.evaluate import DataOptions, open_data
    from distill.evaluation.protocols import eval_crop, get_protocol

    protocol = get_protocol(protocol_name)
    if isinstance(validation, (str, os.PathLike)):
        source = open_data(DataOptions(data=str(validation), splits=splits, limit=limit), protocol)
    else:
        source = validation
    if len(source) == 0:
        raise UserError(f"--validation {validation}: no frames to score the int8 model on")
    height, width = source[0].depth.shape
    box = eval_crop(protocol, height, width)
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


def pending_int8_path(int8_path: Path) -> Path:
    """``s.int8.onnx`` -> ``s.int8.ungated.onnx``: where an int8 file waits for its accuracy gate. It takes its final
    name only once the gate passed, so a failed, crashed or interrupted gate leaves nothing that looks shipped."""
    return int8_path.with_name(int8_path.stem + ".ungated" + int8_path.suffix)


def failed_gate_path(int8_path: Path) -> Path:
    """``s.int8.onnx`` -> ``s.int8.failed-gate.onnx``: an int8 file set aside by its gate, kept for inspection."""
    return int8_path.with_name(int8_path.stem + ".failed-gate" + int8_path.suffix)


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _move_with_record(source: Path, target: Path) -> None:
    """Rename a written file and its ``<file>.json`` record (when it has one)."""
    os.replace(source, target)
    if _record_path(source).exists():
        os.replace(_record_path(source), _record_path(target))


def _remove_with_record(path: Path) -> None:
    for item in (path, _record_path(path)):
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink(missing_ok=True)


def gate_int8(
    fp32_path: Path, int8_path: Path, validation: Any, max_abs_rel_drop: float = MAX_ABS_REL_DROP,
    protocol: str = "reference", splits: str | None = None, limit: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """The accuracy gate on the int8 file written at :func:`pending_int8_path` of ``int8_path``: (the gate's record,
    the int8 file's path). It is renamed to ``int8_path`` when the gate passes, to ``*.failed-gate*`` (so nothing
    ships it by mistake, the record saying ``passed: false``) above ``max_abs_rel_drop``, and removed when scoring
    raises or is interrupted: no outcome but a pass leaves a file under the int8 name."""
    pending = pending_int8_path(int8_path)
    work = fp32_path.with_name(fp32_path.name + ".validation")
    try:
        gate = abs_rel_gate(fp32_path, pending, validation, work, protocol, splits, limit)
    except BaseException:
        _remove_with_record(pending)
        raise
    gate.update(max_abs_rel_drop=max_abs_rel_drop, passed=gate["abs_rel_drop"] <= max_abs_rel_drop)
    logger.info("int8 ΔAbsRel %+.4f (fp32 %.4f, int8 %.4f; limit %.4f)", gate["abs_rel_drop"], gate["abs_rel_fp32"],
                gate["abs_rel_int8"], max_abs_rel_drop)
    final = int8_path if gate["passed"] else failed_gate_path(int8_path)
    _move_with_record(pending, final)
    return gate, final


def _data_name(validation: Any) -> str:
    """A validation path as given, or the file or folder an opened frame source reads (its ``describe()``)."""
    if isinstance(validation, (str, os.PathLike)):
        return str(validation)
    described = validation.describe() if hasattr(validation, "describe") else {}
    where = [described[key] for key in ("folder", "root", "dataset", "labeled_mat", "list") if key in described]
    return str(where[0]) if where else "the validation data"


def gate_message(gate: dict[str, Any], validation: Any, failed: Path) -> str:
    return (
        f"int8 AbsRel rose by {gate['abs_rel_drop']:.4f} on {_data_name(validation)} (fp32 "
        f"{gate['abs_rel_fp32']:.4f}, int8 {gate['abs_rel_int8']:.4f}), above the limit {gate['max_abs_rel_drop']}; "
        f"kept as {failed}. Calibrate on pictures of the deployment domain (--calibration), or ship fp32"
    )


# --------------------------------------------------------------------------------------------------------------
# One export call for every runtime


def export(
    model: nn.Module,
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
    also written to ``<out>.json``. Raises :class:`ParityError` or :class:`GateError` when a check fails.

    The calibration pictures and the validation data (a path or an opened frame source) are read before the first
    file is written, so a bad one fails at once; the int8 file has its final name only once its gate passed."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[format]:
        raise ValueError(f"a {format} export is a {SUFFIXES[format]} file, got {out}")
    pictures = calibration_pictures(calibration, calibration_count, width, height) if int8 else []
    if int8 and validation is not None:
        validation = _open_validation(validation, protocol, validation_splits, validation_limit)[0]
    model = model.eval().cpu()
    path = write_format(model, format, out, height, width)
    kind = student_output_kind(model.config) if hasattr(model, "config") else RELATIVE_INVERSE_DEPTH
    record: dict[str, Any] = {"format": format, "file": str(path), "precision": "fp32", KIND_KEY: kind,
                              "input": {"shape": [1, 3, height, width], "range": [0.0, 1.0]}}
    _write_record(out, record)  # the runners read the output kind from it
    record["parity"] = _file_parity(model, format, path, height, width)
    if not record["parity"].get("passed", True):
        _write_record(out, record)
        raise ParityError(f"{path} does not match PyTorch: {json.dumps(record['parity']['cases'])}")
    if int8:
        int8_path = Path(int8_out) if int8_out else int8_path_for(out)
        record["int8"] = _export_int8(model, format, path, int8_path, record, pictures, validation is not None)
        record["int8"]["calibration"] = str(calibration or "generated scenes")
        if validation is not None:
            gate, int8_path = gate_int8(
                path, int8_path, validation, max_abs_rel_drop, protocol, validation_splits, validation_limit
            )
            record["int8"].update(file=str(int8_path), gate=gate)
            if not gate["passed"]:
                _write_record(out, record)
                raise GateError(gate_message(gate, validation, int8_path))
            _write_record(int8_path, {**record, "file": str(int8_path), "precision": "int8",
                              "abs_rel_drop": gate["abs_rel_drop"]})
    _write_record(out, record)
    return record


def _export_int8(
    model: nn.Module, format: str, fp32_path: Path, int8_path: Path, record: dict[str, Any], pictures: list,
    gated: bool,
) -> dict[str, Any]:
    """The int8 file of a phone format and its record beside it (the runners read its kind there); with a gate to
    come (``gated``) it is written under :func:`pending_int8_path`, and a file left under the final name by an
    earlier run is removed first. Returns ``record["int8"]``'s start."""
    _, _, height, width = record["input"]["shape"]
    target = pending_int8_path(int8_path) if gated else int8_path
    if gated:
        _remove_with_record(int8_path)
    batches = [images_to_batch([picture], width, height) for picture in pictures]
    written = write_int8(model, format, fp32_path, target, height, width, batches)
    _write_record(written, {**record, "file": str(written), "precision": "int8"})
    if not gated:
        logger.warning("int8 without validation data: its accuracy gate did not run")
    return {"file": str(written), "calibration_pictures": len(pictures),
            **({} if gated else {"gate": "not run: no validation data"})}


# --------------------------------------------------------------------------------------------------------------
# The command


#: ``python -m distill.export``: its config.
COMMAND = Command("python -m distill.export", ExportConfig)


def main(argv: list[str] | None = None) -> int:
    """Export, check parity, quantise; write ``<out>.json`` with what was done. 0 on success, 1 on a failed check,
    2 on a user error."""
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = _checked_request(config)
    network = _load_student(config.model)
    inputs = _checked_inputs(config, width, height)
    out = Path(config.out)
    if config.format != "onnx":
        return _export_for_phones(config, network, out, (width, height), inputs, resolved_yaml)
    return _export_onnx_file(config, network, out, (width, height), inputs, resolved_yaml)


def _checked_request(config: ExportConfig) -> tuple[int, int]:
    """The input (width, height), once the size, the file ending and int8 fit the format; else a user error."""
    width, height = parse_size(config.size)
    try:
        check_input_size(width, height)
    except ValueError as error:
        raise UserError(f"--size: {error}") from error
    out = Path(config.out)
    if out.suffix.lower() != SUFFIXES[config.format]:
        raise UserError(wrong_ending("--out", out, config.format))
    if config.int8 and config.format == "coreml":
        raise UserError("--int8: offered for onnx, tflite and executorch; Core ML files are converted in fp32 only")
    _check_output_paths(config)
    absent = missing_toolchain(config.format, config.int8)
    if absent:
        what = f"--format {config.format}" + (" --int8 true" if config.int8 and TOOLCHAINS[config.format][1] else "")
        raise UserError(
            f"{what} needs {', '.join(absent)}: pip install 'depth-distill[{TOOLCHAINS[config.format][2]}]'"
        )
    return width, height


def wrong_ending(flag: str, path: Path, format: str) -> str:
    """The message for a file name whose ending is not ``format``'s, with the fixes: the format that writes that
    ending (for ``--out``), or the same name with the right ending."""
    suffix = SUFFIXES[format]
    fixes = [f"--format {name} to write a {path.suffix} file" for name, ending in SUFFIXES.items()
             if flag == "--out" and ending == path.suffix.lower()]
    fixes.append(f"{flag} {path.with_suffix(suffix) if path.suffix else path.with_name(path.name + suffix)}")
    default = " (the default)" if format == DEFAULT_FORMAT else ""
    return f"{flag} {path}: --format {format}{default} writes a {suffix} file; give {', or '.join(fixes)}"


def _check_output_paths(config: ExportConfig) -> None:
    """``--out`` and ``--int8_out`` name two files this export can write: the format's ending, not an existing
    folder (but an .mlpackage, which is one and is replaced), and no file where a folder of the path must be."""
    suffix = SUFFIXES[config.format]
    paths = {"--out": Path(config.out)}
    if config.int8 and config.int8_out:
        paths["--int8_out"] = Path(config.int8_out)
        if paths["--int8_out"].suffix.lower() != suffix:
            raise UserError(wrong_ending("--int8_out", paths["--int8_out"], config.format))
        if paths["--int8_out"].resolve() == paths["--out"].resolve():
            raise UserError(f"--int8_out {config.int8_out} is --out: name another file for the int8 model")
    for flag, path in paths.items():
        if path.is_dir() and config.format != "coreml":
            raise UserError(f"{flag} {path} is a folder: name the {suffix} file to write")
        holder = next(parent for parent in path.absolute().parents if parent.exists())
        if not holder.is_dir():
            raise UserError(f"{flag} {path}: {holder} is a file, so no folder can hold the output")


@dataclass
class CheckedInputs:
    """What the export reads after writing its first file, read before it: int8's calibration pictures (empty
    without ``--int8``) and the gate's frame source (None without ``--int8 true --validation``)."""

    calibration: list[np.ndarray]
    validation: Any


def _checked_inputs(config: ExportConfig, width: int, height: int) -> CheckedInputs:
    """Every input read: the parity pictures and, with ``--int8``, the calibration pictures and the validation data
    (opened as ``evaluate --data`` opens it, one frame read), so a bad one is one line before any file is written."""
    for picture in config.parity_image:
        _read_input("--parity_image", picture, load_picture)
    if not config.int8:
        return CheckedInputs([], None)
    calibration = _read_input(
        "--calibration", config.calibration, lambda folder: calibration_pictures(folder, config.count, width, height)
    )
    if config.validation is None:
        return CheckedInputs(calibration, None)
    try:
        source, _ = _open_validation(
            config.validation, config.protocol, config.validation_splits, config.validation_limit
        )
    except (UserError, ValueError, OSError) as error:
        why = one_line(error).removeprefix(f"--data {config.validation}").lstrip(" :")
        raise UserError(
            f"--validation {config.validation} cannot be scored (the int8 gate reads what evaluate --data reads): "
            f"{why}"
        ) from error
    return CheckedInputs(calibration, source)


def _read_input(flag: str, value: Any, read: Any) -> Any:
    """``read(value)``, with an unreadable input a user error naming ``flag``."""
    try:
        return read(value)
    except (OSError, ValueError) as error:
        raise UserError(f"{flag} {value}: {one_line(error)}") from error


def _load_student(model: str) -> nn.Module:
    """The network of ``--model``, loaded as every command loads a model (:meth:`DepthModel.from_pretrained`), in
    the standard memory layout the exporters write. Export takes a student folder; anything else is refused by name."""
    path = Path(model)
    if path.suffix.lower() in EXPORTED_SUFFIXES and path.is_file():
        raise UserError(
            f"--model {model} is an exported {path.suffix} file already: export reads a student folder (config.json "
            f"+ model.safetensors); run the {path.suffix} directly with python -m distill.predict or distill.evaluate"
        )
    if not path.is_dir() or not is_student_folder(path):
        what = "no such file or folder" if not path.exists() else "not a student folder"
        raise UserError(
            f"--model {model}: {what}; export reads a student folder (config.json with our 'architecture' "
            "marker + model.safetensors, as written by training)"
        )
    student = DepthModel.from_pretrained(path, device="cpu", precision="fp32")
    return student.runner.model.to(memory_format=torch.contiguous_format)  # the runner keeps channels_last


def _export_onnx_file(
    config: ExportConfig, network: nn.Module, out: Path, size: tuple[int, int], checked: CheckedInputs,
    resolved_yaml: str,
) -> int:
    """The ONNX file, its parity at batch 1 and 3, and on request its int8 file; 1 when a check fails."""
    width, height = size
    export_onnx(network, out, height=height, width=width, opset=config.opset)
    save_config_beside(resolved_yaml, out)
    inputs = parity_inputs(height, width, pictures=config.parity_image)
    report = check_parity(network, out, inputs, tolerance=config.tolerance, raise_on_failure=False)
    print(report.table())
    record: dict = {
        "student": str(config.model),
        "onnx": str(out),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "range": [0.0, 1.0]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", 1, height, width]},
        "opset": config.opset,
        "parity": report.to_dict(),
    }
    if not report.passed:
        failed = out.with_name(out.stem + ".failed-parity.onnx")
        os.replace(out, failed)
        record["onnx"] = str(failed)
        _write_record(out, record)
        print(failure_message(report, failed), file=sys.stderr)
        return 1
    print(
        f"parity OK: worst max |onnx - torch| / range = {report.worst.relative_difference:.2e} "
        f"(tolerance {config.tolerance:.0e}) -> {out}"
    )
    if config.int8 and not _int8_onnx_file(config, out, inputs, checked, record):
        return 1
    _write_record(out, record)
    return 0


def _int8_onnx_file(
    config: ExportConfig, out: Path, inputs: dict[str, list[np.ndarray]], checked: CheckedInputs, record: dict
) -> bool:
    """The int8 ONNX file, how far it moves from fp32, and its accuracy gate when there is validation data (written
    under :func:`pending_int8_path` until the gate passed); fills ``record["int8"]``. False when the gate fails (the
    record is written then)."""
    int8_path = Path(config.int8_out) if config.int8_out else out.with_name(out.stem + ".int8.onnx")
    gated = checked.validation is not None
    written = pending_int8_path(int8_path) if gated else int8_path
    if gated:
        _remove_with_record(int8_path)  # an earlier run's file must not pass for this one's
    quantize_int8(out, written, mode=config.int8_mode, calibration=checked.calibration)
    real_looking = [picture for name, pictures in inputs.items() if name != "random" for picture in pictures]
    change = compare_outputs(out, written, real_looking or inputs["random"])
    record["int8"] = {
        "onnx": str(written),
        "mode": config.int8_mode,
        "calibration": config.calibration or "generated scenes",
        "calibration_pictures": len(checked.calibration) if config.int8_mode == "static" else 0,
        "difference_to_fp32": change,
    }
    print(
        f"int8 ({config.int8_mode}) -> {written}: max |int8 - fp32| / range = "
        f"{change['max_relative_to_range']:.3f}, mean {change['mean_relative_to_range']:.4f}"
    )
    if not gated:
        record["int8"]["gate"] = "not run: no validation data"
        print("int8 accuracy not checked: give --validation DATA to score fp32 and int8 on it (the gate)")
        return True
    gate, int8_path = gate_int8(
        out, int8_path, checked.validation, config.max_abs_rel_drop, config.protocol,
        config.validation_splits, config.validation_limit,
    )
    record["int8"].update(onnx=str(int8_path), gate=gate)
    if not gate["passed"]:
        _write_record(out, record)
        print(gate_message(gate, config.validation, int8_path), file=sys.stderr)
        return False
    print(f"int8 gate passed: ΔAbsRel {gate['abs_rel_drop']:+.4f} <= {config.max_abs_rel_drop} -> {int8_path}")
    return True


def _export_for_phones(
    config: ExportConfig, model: nn.Module, out: Path, size: tuple[int, int], checked: CheckedInputs,
    resolved_yaml: str,
) -> int:
    """tflite / executorch / coreml through :func:`export`; 1 when a check fails."""
    width, height = size
    try:
        record = export(
            model, config.format, out, int8=config.int8, calibration=config.calibration, validation=checked.validation,
            max_abs_rel_drop=config.max_abs_rel_drop, height=height, width=width, calibration_count=config.count,
            protocol=config.protocol, validation_splits=config.validation_splits,
            validation_limit=config.validation_limit, int8_out=config.int8_out,
        )
    except ImportError as error:
        extra = TOOLCHAINS[config.format][2]
        raise UserError(
            f"--format {config.format} needs its toolchain: pip install 'depth-distill[{extra}]' ({error})"
        ) from error
    except (ParityError, GateError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if out.exists():
            save_config_beside(resolved_yaml, out)
    parity = record["parity"]
    if parity.get("cases"):
        worst = max(case["relative_difference"] for case in parity["cases"])
        print(f"parity OK ({parity['runtime']}): worst max |file - torch| / range = {worst:.2e} "
              f"(tolerance {parity['tolerance']:.0e}) -> {out}")
    else:
        print(f"converted -> {out}; {parity.get('note', 'parity not checked here')}")
    if "int8" in record:
        gate = record["int8"]["gate"]
        said = f"ΔAbsRel {gate['abs_rel_drop']:+.4f}" if isinstance(gate, dict) else gate
        print(f"int8 -> {record['int8']['file']} ({said})")
    return 0


def _write_record(out: Path, record: dict[str, Any]) -> None:
    """``<out>.json``: what was written and checked."""
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
