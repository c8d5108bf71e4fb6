"""Export a student to ONNX, check it against PyTorch, and optionally quantise it to int8 with ONNX Runtime.

``python -m distill.export --model runs/x/student --out student.onnx [--int8 true]``

The graph has one input ``image`` (B, 3, H, W) float RGB in [0, 1] and one output ``inverse_depth`` (B, 1, H, W),
with a dynamic batch axis; H and W are fixed at export (default 192 x 256). Every export is followed by a parity
check against the PyTorch model on random and real-looking inputs at batch 1 and 3: the largest absolute
difference, divided by the PyTorch output's range, must stay within 1e-4, or the command fails and the file is
renamed ``*.failed-parity.onnx`` so that nothing downstream picks up an unchecked model.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from distill.deploy.configs import EXPORT_SPELLING, ExportConfig
from distill.deploy.parity import check_parity, failure_message, parity_inputs
from distill.deploy.quantize import calibration_pictures, compare_outputs, quantize_int8
from distill.deploy.runtime import INPUT_NAME, OUTPUT_NAME, PREDICTION_METADATA, check_input_size
from shards.argv import parse_size
from shards.config import Command, save_config_beside
from shards.errors import UserError, run_command

logger = logging.getLogger(__name__)


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
            # The TorchScript exporter on purpose (docs/library-notes.md, "PyTorch and ONNX Runtime"): its
            # deprecation notice is not for our users.
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
    if path.suffix.lower() == ".onnx" and path.is_file():
        raise UserError(
            f"--model {model} is an exported .onnx file already: export reads a student folder (config.json + "
            "model.safetensors); run the .onnx directly with python -m distill.predict or distill.evaluate"
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
    model = _load(config.model)
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
