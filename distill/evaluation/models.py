"""The models ``evaluate`` and ``compare`` score: anything :meth:`distill.deploy.model.DepthModel.from_pretrained`
loads (a student folder or hub id, an exported ``.onnx`` / ``.tflite`` / ``.pte`` file, a teacher), or ``constant``
(the baseline). Each is a :class:`DepthModel`, so evaluation runs models through the same path as the Python API.
"""

from __future__ import annotations

import torch

from distill.deploy.model import ACCEPTED_MODELS as LOADABLE_MODELS
from distill.deploy.model import DepthModel, detect_source
from shards.errors import UserError
from shards.format import RELATIVE_INVERSE_DEPTH, STUDENT_SIZE

__all__ = [
    "ACCEPTED_MODELS", "CONSTANT_MODEL", "EVALUATION_PRECISIONS", "DepthModel", "detect_model_type", "load_model",
]

#: ``--model constant``: the baseline every depth model must beat. Its inverse depth is 1 everywhere, so after the
#: protocol's per-image alignment it becomes the best single depth for each image.
CONSTANT_MODEL = "constant"
ACCEPTED_MODELS = f"{LOADABLE_MODELS}, or '{CONSTANT_MODEL}' (the baseline that predicts one value everywhere)"
#: What ``--precision`` accepts: evaluation runs fp32 unless asked otherwise.
EVALUATION_PRECISIONS = ("fp32", "bf16", "fp16")


def detect_model_type(model: str) -> str:
    """"onnx", "tflite", "pte", "student", "teacher" or "constant", from the model's content (docs/evaluation.md,
    "The model"); anything else is a user error naming the accepted forms."""
    if model == CONSTANT_MODEL:
        return CONSTANT_MODEL
    try:
        return detect_source(model)[0]
    except UserError as error:
        raise UserError(str(error).replace(LOADABLE_MODELS, ACCEPTED_MODELS)) from None


def _constant_prediction(images: torch.Tensor) -> torch.Tensor:
    return torch.ones(images.shape[0], images.shape[2], images.shape[3], dtype=torch.float32)


def load_model(
    model: str,
    device: str = "auto",
    input_size: tuple[int, int] | None = None,
    precision: str = "fp32",
    kind: str | None = None,
) -> DepthModel:
    """The model of ``--model``; ``input_size`` (W, H) overrides a student's default 256x192. ``precision``: fp32
    (the default: no autocast on any device), bf16 or fp16 autocast (a teacher's head stays fp32); ``kind`` states
    the output of an exported file that does not say."""
    if precision not in EVALUATION_PRECISIONS:
        raise ValueError(f"precision must be one of {EVALUATION_PRECISIONS}, got {precision!r}")
    if detect_model_type(model) == CONSTANT_MODEL:
        width, height = input_size or STUDENT_SIZE
        return DepthModel(CONSTANT_MODEL, CONSTANT_MODEL, RELATIVE_INVERSE_DEPTH, width, height, _constant_prediction)
    return DepthModel.from_pretrained(model, device=device, input_size=input_size, kind=kind, precision=precision)
