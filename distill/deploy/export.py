"""Export a student for a runtime, check it against PyTorch, and optionally quantise it to int8 behind an accuracy gate.

``python -m distill.export --model runs/x/student --format onnx|tflite|executorch|coreml --out FILE [--int8 true]``

ONNX (the default): one input ``image`` (B, 3, H, W) float RGB in [0, 1] and one output ``inverse_depth``
(B, 1, H, W), with a dynamic batch axis; H and W are fixed at export (default 192 x 256). The export is followed by
a parity check against the PyTorch model on random and real-looking inputs at batch 1 and 3: the largest absolute
difference, divided by the PyTorch output's range, must stay within 1e-4, or the command fails and the file is
renamed ``*.failed-parity.onnx`` so that nothing downstream picks up an unchecked model.

The phone formats (``tflite`` for LiteRT, ``executorch`` for a ``.pte`` on XNNPACK, ``coreml`` for an
``.mlpackage``) have batch 1 and go through :func:`distill.deploy.release.export`: parity within 1e-3 of the range
where the runtime runs here (Core ML's only on macOS). With ``--int8 true`` and ``--validation DATA`` both files are
scored on DATA under ``--protocol`` and the int8 file fails the export when its AbsRel rises by more than
``--max_abs_rel_drop``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from distill.deploy.configs import EXPORT_SPELLING, ExportConfig
from distill.deploy.formats import SUFFIXES, TOOLCHAINS
from distill.deploy.onnx import export_onnx
from distill.deploy.parity import ParityError, check_parity, failure_message, parity_inputs
from distill.deploy.quantize import calibration_pictures, compare_outputs, quantize_int8
from distill.deploy.release import GateError, export, gate_int8, gate_message
from distill.deploy.runtime import EXPORTED_SUFFIXES, INPUT_NAME, OUTPUT_NAME, check_input_size
from shards.argv import parse_size
from shards.config import Command, save_config_beside
from shards.errors import UserError, run_command

logger = logging.getLogger(__name__)


#: ``python -m distill.export``: its config and old spellings.
COMMAND = Command("python -m distill.export", ExportConfig, EXPORT_SPELLING)


def main(argv: list[str] | None = None) -> int:
    """Export, check parity, quantise; write ``<out>.json`` with what was done. 0 on success, 1 on a failed check,
    2 on a user error."""
    return run_command(_main, argv, COMMAND.prog)


def _load(model: str):
    """The student of ``--model``: export takes a student folder; anything else is refused by name."""
    from distill.students import is_student_folder, load_student

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
    model_network, _ = load_student(path)
    return model_network


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = parse_size(config.size)
    try:
        check_input_size(width, height)
    except ValueError as error:
        raise UserError(f"--size: {error}") from error
    out = Path(config.out)
    suffix = SUFFIXES[config.format]
    if out.suffix.lower() != suffix:
        raise UserError(f"--out {out}: a {config.format} export is a {suffix} file")
    if config.int8 and config.format == "coreml":
        raise UserError("--int8: offered for onnx, tflite and executorch; Core ML files are converted in fp32 only")
    model = _load(config.model)
    if config.format != "onnx":
        return _export_for_phones(config, model, out, width, height, resolved_yaml)
    export_onnx(model, out, height=height, width=width, opset=config.opset)
    save_config_beside(resolved_yaml, out)
    inputs = parity_inputs(height, width, pictures=config.parity_image)
    report = check_parity(model, out, inputs, tolerance=config.tolerance, raise_on_failure=False)
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
    if config.int8:
        int8_path = Path(config.int8_out) if config.int8_out else out.with_name(out.stem + ".int8.onnx")
        calibration = calibration_pictures(config.calibration, config.count, width, height)
        quantize_int8(out, int8_path, mode=config.int8_mode, calibration=calibration)
        real_looking = [picture for name, pictures in inputs.items() if name != "random" for picture in pictures]
        change = compare_outputs(out, int8_path, real_looking or inputs["random"])
        record["int8"] = {
            "onnx": str(int8_path),
            "mode": config.int8_mode,
            "calibration": config.calibration or "generated scenes",
            "calibration_pictures": len(calibration) if config.int8_mode == "static" else 0,
            "difference_to_fp32": change,
        }
        print(
            f"int8 ({config.int8_mode}) -> {int8_path}: max |int8 - fp32| / range = "
            f"{change['max_relative_to_range']:.3f}, mean {change['mean_relative_to_range']:.4f}"
        )
        if config.validation is None:
            record["int8"]["gate"] = "not run: no validation data"
            print("int8 accuracy not checked: give --validation DATA to score fp32 and int8 on it (the gate)")
        else:
            gate, int8_path = gate_int8(
                out, int8_path, config.validation, config.max_abs_rel_drop, config.protocol,
                config.validation_splits, config.validation_limit,
            )
            record["int8"].update(onnx=str(int8_path), gate=gate)
            if not gate["passed"]:
                _write_record(out, record)
                print(gate_message(gate, config.validation, int8_path), file=sys.stderr)
                return 1
            print(f"int8 gate passed: ΔAbsRel {gate['abs_rel_drop']:+.4f} <= {config.max_abs_rel_drop}")
    _write_record(out, record)
    return 0


def _export_for_phones(config: ExportConfig, model, out: Path, width: int, height: int, resolved_yaml: str) -> int:
    """tflite / executorch / coreml through :func:`distill.deploy.release.export`; 1 when a check fails."""
    try:
        record = export(
            model, config.format, out, int8=config.int8, calibration=config.calibration, validation=config.validation,
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


def _write_record(out: Path, record: dict) -> None:
    path = out.with_name(out.name + ".json")
    path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
