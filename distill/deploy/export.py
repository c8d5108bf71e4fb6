"""Export a student to ONNX, check it against PyTorch, and optionally quantise it to int8 with ONNX Runtime.

``python -m distill.export --student runs/x/student --format onnx --out student.onnx [--int8]``

The graph has one input ``image`` (B, 3, H, W) float RGB in [0, 1] and one output ``inverse_depth`` (B, 1, H, W),
with a dynamic batch axis; H and W are fixed at export (default 192 x 256). Every export is followed by a parity
check against the PyTorch model on random and real-looking inputs at batch 1 and 3: the largest absolute
difference, divided by the PyTorch output's range, must stay within 1e-4, or the command fails and the file is
renamed ``*.failed-parity.onnx`` so that nothing downstream picks up an unchecked model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.runtime import (
    IMAGE_EXTENSIONS,
    INPUT_NAME,
    OUTPUT_NAME,
    PREDICTION_METADATA,
    check_input_size,
    images_to_batch,
    load_picture,
    onnx_session,
)
from shards.format import STUDENT_SIZE

logger = logging.getLogger(__name__)

#: Largest accepted max |onnx - torch| as a fraction of the PyTorch output's range (max - min).
PARITY_TOLERANCE = 1e-4
#: Batch sizes the parity check runs at: 1, and one above 1 to exercise the dynamic batch axis.
PARITY_BATCHES = (1, 3)
#: The real NYU frame shipped beside the checkout (``../shared`` relative to the repository root), if present.
NYU_SAMPLE_FRAME = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nyu-fastdepth-sample" / "rgb.png"
INT8_MODES = ("static", "dynamic")


class ParityError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


def export_onnx(
    model: nn.Module, path: str | os.PathLike, height: int = 192, width: int = 256, opset: int = 17
) -> Path:
    """Write ``model`` as ONNX (TorchScript exporter, ``dynamo=False``: no onnxscript needed, same graph speed).

    Input ``image`` (B, 3, height, width) float [0, 1], output ``inverse_depth`` (B, 1, height, width), batch axis
    dynamic. The model is exported in eval mode on CPU in float32; its own mode and device are restored.
    """
    check_input_size(width, height)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval().cpu()
    dummy = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # We pick the TorchScript exporter on purpose (STACK.md); its deprecation notice is not for our users.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"ONNX export needs the onnx package: pip install 'depth-distill[export]' ({error})"
        ) from error
    finally:
        model.train(was_training).to(device)
    import onnx

    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "prediction"):  # a student: say what its output holds
        from distill.students import student_output_kind

        graph = onnx.load(str(path))
        onnx.helper.set_model_props(
            graph, {PREDICTION_METADATA: student_output_kind(config), "architecture": config.architecture}
        )
        onnx.save(graph, str(path))
    onnx.checker.check_model(str(path))
    logger.info("exported %s (%dx%d, opset %d)", path, width, height, opset)
    return path


# --------------------------------------------------------------------------------------------------------------
# Parity


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


def _generated_scenes(count: int, width: int, height: int, first_seed: int) -> list[np.ndarray]:
    try:
        from shards.scenes import render_scene
    except ImportError:
        return []
    return [render_scene(first_seed + index, width=width, height=height).image for index in range(count)]


def _variants(picture: np.ndarray, count: int) -> list[np.ndarray]:
    """A real frame, mirrored, and darkened: a batch of distinct real-looking inputs from one picture."""
    variants = [picture, picture[:, ::-1].copy(), (picture.astype(np.float32) * 0.6).astype(np.uint8)]
    return [variants[index % len(variants)] for index in range(count)]


def parity_inputs(
    height: int, width: int, seed: int = 0, pictures: Sequence[str | os.PathLike] = (), use_nyu_frame: bool = True
) -> dict[str, list[np.ndarray]]:
    """Named lists of uint8 RGB pictures, at least ``max(PARITY_BATCHES)`` each, the parity check runs on.

    ``random`` (uniform noise: exercises every input value), ``scene`` (generated rooms from ``shards.scenes``),
    ``nyu_frame`` (the real NYU frame in ``../shared/data`` when present) and ``pictures`` (the user's own).
    """
    rng = np.random.default_rng(seed)
    need = max(PARITY_BATCHES)
    sets: dict[str, list[np.ndarray]] = {
        "random": [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(need)]
    }
    scenes = _generated_scenes(need, width, height, first_seed=seed)
    if scenes:
        sets["scene"] = scenes
    if use_nyu_frame and NYU_SAMPLE_FRAME.is_file():
        sets["nyu_frame"] = _variants(load_picture(NYU_SAMPLE_FRAME), need)
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
        raise ParityError(_failure_message(report, onnx_path))
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


def _failure_message(report: ParityReport, onnx_path: str | os.PathLike) -> str:
    worst = report.worst
    return (
        f"ONNX parity check FAILED for {onnx_path}: max |onnx - torch| = {worst.max_abs_difference:.3e} on "
        f"'{worst.name}' at batch {worst.batch}, which is {worst.relative_difference:.3e} of the output range "
        f"{worst.output_range:.4g} (tolerance {report.tolerance:.0e}). The graph does not compute what the model "
        "computes: look for data-dependent Python control flow, in-place ops on inputs, or ops the exporter traces "
        "as constants (try another --opset).\n" + report.table()
    )


# --------------------------------------------------------------------------------------------------------------
# int8


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
    """Up to ``count`` pictures from ``folder`` (recursive, sorted) or, without one, generated scenes plus the NYU
    frame when present. Real pictures of the deployment domain calibrate better than generated ones."""
    if folder is not None:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"no pictures ({', '.join(IMAGE_EXTENSIONS)}) under calibration folder {folder}")
        return [load_picture(path) for path in paths[:count]]
    pictures = [load_picture(NYU_SAMPLE_FRAME)] if NYU_SAMPLE_FRAME.is_file() else []
    pictures += _generated_scenes(max(count - len(pictures), 0), width, height, first_seed=seed)
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


# --------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill.export",
        description="Export a student to ONNX, check parity with PyTorch, optionally quantise to int8.",
    )
    parser.add_argument("--student", required=True, help="a student folder (config.json + model.safetensors)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format (ONNX only)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--height", type=int, default=STUDENT_SIZE[1], help="input height, a multiple of 32")
    parser.add_argument("--width", type=int, default=STUDENT_SIZE[0], help="input width, a multiple of 32")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE, help="max |diff| / output range")
    parser.add_argument("--parity-image", action="append", default=[], help="also check parity on this picture")
    parser.add_argument("--int8", action="store_true", help="also write an int8 model quantised by ONNX Runtime")
    parser.add_argument("--int8-mode", default="static", choices=INT8_MODES)
    parser.add_argument("--int8-out", help="the int8 .onnx file (default: <out stem>.int8.onnx)")
    parser.add_argument("--calibration", help="folder of pictures for static int8 (default: generated scenes)")
    parser.add_argument("--calibration-count", type=int, default=16)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export, check parity, quantise; write ``<out>.json`` with what was done. 0 on success, 1 on a failed check."""
    from distill.students import load_student

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    model, _ = load_student(args.student)
    export_onnx(model, out, height=args.height, width=args.width, opset=args.opset)
    inputs = parity_inputs(args.height, args.width, pictures=args.parity_image)
    report = check_parity(model, out, inputs, tolerance=args.tolerance, raise_on_failure=False)
    print(report.table())
    record: dict = {
        "student": str(args.student),
        "onnx": str(out),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, args.height, args.width], "range": [0.0, 1.0]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", 1, args.height, args.width]},
        "opset": args.opset,
        "parity": report.to_dict(),
    }
    if not report.passed:
        failed = out.with_name(out.stem + ".failed-parity.onnx")
        os.replace(out, failed)
        record["onnx"] = str(failed)
        _write_record(out, record)
        print(_failure_message(report, failed), file=sys.stderr)
        return 1
    print(
        f"parity OK: worst max |onnx - torch| / range = {report.worst.relative_difference:.2e} "
        f"(tolerance {args.tolerance:.0e}) -> {out}"
    )
    if args.int8:
        int8_path = Path(args.int8_out) if args.int8_out else out.with_name(out.stem + ".int8.onnx")
        calibration = calibration_pictures(args.calibration, args.calibration_count, args.width, args.height)
        quantize_int8(out, int8_path, mode=args.int8_mode, calibration=calibration)
        real_looking = [picture for name, pictures in inputs.items() if name != "random" for picture in pictures]
        change = compare_outputs(out, int8_path, real_looking or inputs["random"])
        record["int8"] = {
            "onnx": str(int8_path),
            "mode": args.int8_mode,
            "calibration": args.calibration or "generated scenes (+ the NYU frame when present)",
            "calibration_pictures": len(calibration) if args.int8_mode == "static" else 0,
            "difference_to_fp32": change,
        }
        print(
            f"int8 ({args.int8_mode}) -> {int8_path}: max |int8 - fp32| / range = "
            f"{change['max_relative_to_range']:.3f}, mean {change['mean_relative_to_range']:.4f} (informative; "
            "measure its accuracy with python -m distill.evaluate --model " + str(int8_path) + ")"
        )
    _write_record(out, record)
    return 0


def _write_record(out: Path, record: dict) -> None:
    path = out.with_name(out.name + ".json")
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
