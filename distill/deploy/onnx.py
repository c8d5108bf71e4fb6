"""Write a student as ONNX: one input ``image`` (B, 3, H, W) float RGB in [0, 1], one output ``inverse_depth``
(B, 1, H, W), a dynamic batch axis, H and W fixed at export; the graph's metadata says what the output holds."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from distill.deploy.runtime import INPUT_NAME, KIND_KEY, OUTPUT_NAME
from distill.students.config import check_input_size

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
            # The TorchScript exporter on purpose (docs/deploy.md says why); its deprecation notice is not for users.
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
            f"writing a .onnx needs the onnx package: pip install 'depth-distill[export-onnx]' ({error})"
        ) from error
    finally:
        model.train(was_training).to(device)
    import onnx

    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "prediction"):  # a student: say what its output holds
        from distill.students import student_output_kind

        graph = onnx.load(str(path))
        onnx.helper.set_model_props(
            graph, {KIND_KEY: student_output_kind(config), "architecture": config.architecture}
        )
        onnx.save(graph, str(path))
    onnx.checker.check_model(str(path))
    logger.info("exported %s (%dx%d, opset %d)", path, width, height, opset)
    return path
