"""The models ``evaluate`` and ``compare`` score, recognised by content: an ``.onnx`` file or a student folder (run by
:mod:`distill.deploy.runtime`), a transformers depth model folder or hub id (a teacher, built by
``pseudolabel.teachers`` so that its row is measured by the same code that labels; the one module of ``distill`` that
imports ``pseudolabel``, lazily), or ``constant`` (the baseline). Each becomes a :class:`DepthModel`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shards.argv import looks_like_path
from shards.errors import UserError
from shards.format import SAMPLE_SIZE, STUDENT_SIZE

ACCEPTED_MODELS = (
    "a student folder (config.json with our 'architecture' field + model.safetensors), "
    "an exported .onnx file (input 'image', output 'inverse_depth'), "
    "a transformers depth model (a folder whose config.json has model_type dpt / depth_anything, or a hub id "
    "such as Intel/dpt-hybrid-midas), or 'constant' (the baseline that predicts one value everywhere)"
)
#: ``--model constant``: the baseline every depth model must beat. Its inverse depth is 1 everywhere, so after the
#: protocol's per-image alignment it becomes the best single depth for each image.
CONSTANT_MODEL = "constant"
TRANSFORMERS_DEPTH_TYPES = ("dpt", "depth_anything", "glpn", "zoedepth", "depth_pro", "prompt_depth_anything")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")



@dataclass
class DepthModel:
    """A model behind one call: float (B, 3, height, width) RGB in [0, 1] on ``device`` -> float32 (B, h, w)
    tensor, relative inverse depth or metres per ``kind``."""

    name: str
    source: str  # "student" | "onnx" | "teacher"
    kind: str  # "relative_inverse_depth" | "metric_depth"
    width: int
    height: int
    predict: Callable[[torch.Tensor], torch.Tensor]

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "type": self.source, "kind": self.kind, "input_size": [self.width, self.height]}


def detect_model_type(model: str) -> str:
    """"onnx", "student", "teacher" or "constant", from the file's content; anything else is a user error."""
    if model == CONSTANT_MODEL:
        return CONSTANT_MODEL
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise UserError(f"--model {model}: no such ONNX file")
        return "onnx"
    if path.is_dir():
        config_path = path / "config.json"
        try:
            record = json.loads(config_path.read_text()) if config_path.is_file() else {}
        except (ValueError, UnicodeDecodeError) as error:
            raise UserError(f"--model {model}: {config_path} is not JSON ({error})") from error
        if "architecture" in record:
            return "student"
        architectures = record.get("architectures") or []
        if record.get("model_type") in TRANSFORMERS_DEPTH_TYPES or any("DepthEstimation" in a for a in architectures):
            return "teacher"
        raise UserError(f"--model {model} is a folder but not a model this command knows; accepted: {ACCEPTED_MODELS}")
    if not path.exists() and looks_like_path(model):
        raise UserError(f"--model {model}: no such file or folder; accepted: {ACCEPTED_MODELS}")
    if not path.exists() and _HUB_ID.match(model):
        return "teacher"
    raise UserError(f"--model {model} is not a model this command knows; accepted: {ACCEPTED_MODELS}")


def _runner_model(model: str, source: str, width: int | None, height: int | None, device: str) -> DepthModel:
    from distill.deploy.runtime import load_runner

    runner = load_runner(model, width=width, height=height, device=device)

    def predict(images: torch.Tensor) -> torch.Tensor:
        inverse_depth = runner(images.float().cpu().numpy())  # (B, H, W)
        return torch.from_numpy(np.asarray(inverse_depth, dtype=np.float32))

    return DepthModel(runner.name, source, runner.kind, runner.width, runner.height, predict)  # a depth student: metres


def _teacher_model(model: str, device: str) -> DepthModel:
    from pseudolabel.teachers import TeacherNotFoundError, load_teacher  # the one allowed crossing: the teacher
    # row is measured by the code that labels

    try:
        teacher = load_teacher(model, device=device)
    except TeacherNotFoundError as error:
        error.key = "--model"  # this command's name for the teacher
        raise
    kind = "metric_depth" if teacher.kind == "metric_depth" else "relative_inverse_depth"

    def predict(images: torch.Tensor) -> torch.Tensor:
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()  # (B, H, W, 3)
        return torch.as_tensor(teacher(pixels), dtype=torch.float32)

    width, height = SAMPLE_SIZE  # 512x384: the teachers' pseudo-labelling size
    return DepthModel(f"teacher:{model}", "teacher", kind, width, height, predict)


def _constant_prediction(images: torch.Tensor) -> torch.Tensor:
    return torch.ones(images.shape[0], images.shape[2], images.shape[3], dtype=torch.float32)


def load_model(model: str, device: str = "auto", input_size: tuple[int, int] | None = None) -> DepthModel:
    """The model of ``--model``; ``input_size`` (W, H) overrides a student's default 256x192."""
    source = detect_model_type(model)
    if source == CONSTANT_MODEL:
        width, height = input_size or STUDENT_SIZE
        return DepthModel(CONSTANT_MODEL, CONSTANT_MODEL, "relative_inverse_depth", width, height, _constant_prediction)
    if source == "teacher":
        if input_size is not None:
            raise UserError("--size applies to students and constant; teachers run at 512x384")
        return _teacher_model(model, "cuda" if device == "auto" and torch.cuda.is_available() else cpu_or(device))
    width, height = input_size or (None, None)
    return _runner_model(model, source, width, height, device)


def cpu_or(device: str) -> str:
    return "cpu" if device == "auto" else device
