"""The models ``evaluate`` and ``compare`` score: anything :meth:`distill.deploy.model.DepthModel.from_pretrained`
loads (a student folder or hub id, an exported ``.onnx`` / ``.tflite`` / ``.pte`` file, a teacher), or ``constant``
(the baseline). Each is a :class:`DepthModel`, so evaluation runs models through the same path as the Python API.
"""

from __future__ import annotations

import torch

from distill.deploy.model import ACCEPTED_MODELS as LOADABLE_MODELS
from distill.deploy.model import DepthModel, detect_source
from shards.format import RELATIVE_INVERSE_DEPTH, STUDENT_SIZE

__all__ = ["ACCEPTED_MODELS", "CONSTANT_MODEL", "DepthModel", "cpu_or", "detect_model_type", "load_model"]

#: ``--model constant``: the baseline every depth model must beat. Its inverse depth is 1 everywhere, so after the
#: protocol's per-image alignment it becomes the best single depth for each image.
CONSTANT_MODEL = "constant"
ACCEPTED_MODELS = f"{LOADABLE_MODELS}, or '{CONSTANT_MODEL}' (the baseline that predicts one value everywhere)"


def detect_model_type(model: str) -> str:
    """"onnx", "tflite", "pte", "student", "teacher" or "constant", from the model's content (DECISIONS.md);
    anything else is an error."""
    if model == CONSTANT_MODEL:
        return CONSTANT_MODEL
    try:
        return detect_source(model)[0]
    except ValueError as error:
        raise ValueError(f"{error}, or '{CONSTANT_MODEL}'") from None


def _constant_prediction(images: torch.Tensor) -> torch.Tensor:
    return torch.ones(images.shape[0], images.shape[2], images.shape[3], dtype=torch.float32)


def load_model(
    model: str, device: str = "auto", input_size: tuple[int, int] | None = None, kind: str | None = None
) -> DepthModel:
    """The model of ``--model``; ``input_size`` (W, H) overrides a student's default 256x192; ``kind`` states the
    output of an exported file that does not say."""
    if model == CONSTANT_MODEL:
        width, height = input_size or STUDENT_SIZE
        return DepthModel(CONSTANT_MODEL, CONSTANT_MODEL, RELATIVE_INVERSE_DEPTH, width, height, _constant_prediction)
    return DepthModel.from_pretrained(model, device=device, input_size=input_size, kind=kind)


def cpu_or(device: str) -> str:
    return "cpu" if device == "auto" else device
