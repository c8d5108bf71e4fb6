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
from pathlib import Path

from distill.deploy.onnx import export_onnx
from distill.deploy.parity import PARITY_TOLERANCE, check_parity, failure_message, parity_inputs
from distill.deploy.quantize import INT8_MODES, calibration_pictures, compare_outputs, quantize_int8
from distill.deploy.runtime import INPUT_NAME, OUTPUT_NAME
from shards.format import STUDENT_SIZE

logger = logging.getLogger(__name__)


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
        print(failure_message(report, failed), file=sys.stderr)
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
