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
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, SAMPLE_SIZE, STUDENT_SIZE

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
#: What ``--precision`` accepts: evaluation runs fp32 unless asked otherwise.
EVALUATION_PRECISIONS = ("fp32", "bf16", "fp16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class DepthModel:
    """A model behind one call: float (B, 3, height, width) RGB in [0, 1] on ``device`` -> float32 (B, h, w)
    tensor, relative inverse depth or metres per ``kind``."""

    name: str
    source: str  # "student" | "onnx" | "teacher"
    kind: str  # RELATIVE_INVERSE_DEPTH | METRIC_DEPTH (shards.format)
    width: int
    height: int
    predict: Callable[[torch.Tensor], torch.Tensor]
    precision: str = "fp32"  # what the network runs in: fp32, bf16 / fp16 autocast, or "as exported" (ONNX)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "type": self.source, "kind": self.kind, "input_size": [self.width, self.height]}


def detect_model_type(model: str) -> str:
    """"onnx", "student", "teacher" or "constant", from the file's content (docs/evaluation.md, "The
    model"); anything else is a user error."""
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
        raise UserError(f"--model {model}: no such student folder or model file; accepted: {ACCEPTED_MODELS}")
    if not path.exists() and _HUB_ID.match(model):
        return "teacher"
    raise UserError(f"--model {model} is not a model this command knows; accepted: {ACCEPTED_MODELS}")


def _runner_model(
    model: str, source: str, width: int | None, height: int | None, device: str, precision: str
) -> DepthModel:
    from distill.deploy.runtime import load_runner

    if source == "onnx" and precision != "fp32":
        raise UserError(f"--precision {precision} applies to PyTorch models; an ONNX graph runs as exported")
    runner = load_runner(model, width=width, height=height, device=device, precision=precision)

    def predict(images: torch.Tensor) -> torch.Tensor:
        inverse_depth = runner(images.float().cpu().numpy())  # (B, H, W)
        return torch.from_numpy(np.asarray(inverse_depth, dtype=np.float32))

    run_precision = precision if source == "student" else "as exported"
    return DepthModel(runner.name, source, runner.kind, runner.width, runner.height, predict, run_precision)


def _teacher_model(model: str, device: str, precision: str) -> DepthModel:
    # The one crossing between the stages (docs/decisions.md, "Layout"): the teacher row is measured by the code that
    # labels.
    from pseudolabel.teachers import TeacherNotFoundError, load_teacher

    try:
        teacher = load_teacher(model, device=device, precision=precision)  # the backbone's; its head is always fp32
    except TeacherNotFoundError as error:
        error.key = "--model"  # this command's name for the teacher
        raise
    kind = METRIC_DEPTH if teacher.kind == METRIC_DEPTH else RELATIVE_INVERSE_DEPTH

    def predict(images: torch.Tensor) -> torch.Tensor:
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()  # (B, H, W, 3)
        return torch.as_tensor(teacher(pixels), dtype=torch.float32)

    width, height = SAMPLE_SIZE  # 512x384: the teachers' pseudo-labelling size (docs/decisions.md, "Teachers")
    return DepthModel(f"teacher:{model}", "teacher", kind, width, height, predict, precision)


def _constant_prediction(images: torch.Tensor) -> torch.Tensor:
    return torch.ones(images.shape[0], images.shape[2], images.shape[3], dtype=torch.float32)


def load_model(
    model: str, device: str = "auto", input_size: tuple[int, int] | None = None, precision: str = "fp32"
) -> DepthModel:
    """The model of ``--model``; ``input_size`` (W, H) overrides a student's default 256x192. ``precision``: fp32
    (the default: no autocast on any device), bf16 or fp16 autocast (a teacher's head stays fp32)."""
    if precision not in EVALUATION_PRECISIONS:
        raise ValueError(f"precision must be one of {EVALUATION_PRECISIONS}, got {precision!r}")
    source = detect_model_type(model)
    if source == CONSTANT_MODEL:
        width, height = input_size or STUDENT_SIZE
        return DepthModel(CONSTANT_MODEL, CONSTANT_MODEL, RELATIVE_INVERSE_DEPTH, width, height, _constant_prediction)
    if source == "teacher":
        if input_size is not None:
            raise UserError("--size applies to students and constant; teachers run at 512x384")
        from distill.deploy.runtime import pick_device

        return _teacher_model(model, str(pick_device(device)), precision)
    width, height = input_size or (None, None)
    return _runner_model(model, source, width, height, device, precision)
