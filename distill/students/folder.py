"""Student folders: ``config.json`` (whose ``"architecture"`` names a registered family: that is how the tools tell
a student from a transformers folder or an ONNX file) and ``model.safetensors``. The format has not changed since
version 1, so every student folder ever saved loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distill.students.base import Student
from distill.students.config import StudentConfig, architectures, create_student, student_output_kind

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "is_student_folder", "load_student", "read_student_config", "save_student"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Extra keys written into config.json for readers; ignored when loading.
_INFO_KEYS = ("format_version", "output", "input")
_FORMAT_VERSION = 1


def save_student(model: nn.Module, config: StudentConfig, folder: str | os.PathLike) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors``; returns the folder.

    Files go through temporary names and are renamed, so a reader never sees half a student.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = dataclasses.asdict(config.resolved())
    record.update(format_version=_FORMAT_VERSION, output=student_output_kind(config), input="rgb_float_0_1")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    weights_tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(weights_tmp), metadata={"architecture": config.architecture})
    os.replace(weights_tmp, folder / WEIGHTS_NAME)
    config_tmp = folder / (CONFIG_NAME + ".tmp")
    config_tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(config_tmp, folder / CONFIG_NAME)
    return folder


def read_student_config(folder: str | os.PathLike) -> StudentConfig:
    """The :class:`StudentConfig` of a saved student; raises if the folder is not one."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a student folder: no {CONFIG_NAME}")
    record = json.loads(path.read_text())
    if record.get("architecture") not in architectures():
        raise ValueError(
            f"{path} is not a student config (its 'architecture' is {record.get('architecture')!r}, "
            f"expected one of {sorted(architectures())})"
        )
    known = {f.name for f in dataclasses.fields(StudentConfig)}
    unknown = sorted(set(record) - known - set(_INFO_KEYS))
    if unknown:
        raise ValueError(f"{path} has keys this version does not know: {unknown}")
    return StudentConfig(**{k: v for k, v in record.items() if k in known})


def is_student_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder/config.json`` names one of our architectures (no weights are read)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("architecture") in architectures()
    except (json.JSONDecodeError, AttributeError, TypeError):
        return False


def load_student(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Student, StudentConfig]:
    """A saved student, in eval mode, and its config. Needs no training config and no download: the encoder is
    built without ImageNet weights and every weight comes from ``model.safetensors``."""
    config = read_student_config(folder)
    model = create_student(dataclasses.replace(config, pretrained=False, pretrained_file=None))
    state = load_file(str(Path(folder) / WEIGHTS_NAME), device="cpu")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), config
