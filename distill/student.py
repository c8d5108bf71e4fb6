"""Students: one config, one factory, one folder format, for every architecture.

``create_student(StudentConfig)`` builds any architecture of :data:`ARCHITECTURES` (as timm's ``create_model``);
``save_student`` / ``load_student`` move it through a folder holding ``config.json`` (whose ``"architecture"``
names one of ours: that is how the tools tell a student from a transformers folder or an ONNX file) and
``model.safetensors``. Every student keeps one contract (:mod:`distill.students.base`): RGB float in [0, 1],
(B, 3, H, W) with H and W multiples of 32, normalised inside, -> (B, 1, H, W) inverse depth, or metres for a
``prediction: depth`` student (the metric recipes).

- ``fastdepth`` (default): MobileNetV3-Large FastDepth, the reference recipe (:mod:`distill.students.fastdepth`).
- ``resnet_additive``: ResNet-18 with a light additive decoder (:mod:`distill.students.resnet_additive`).
- ``deeplabv3``: torchvision's DeepLabv3-ResNet50 as a regressor (:mod:`distill.students.deeplab`).
- ``rt_monodepth`` / ``rt_monodepth_s``: RT-MonoDepth and its small variant (:mod:`distill.students.rt_monodepth`).

Fields left ``None`` take the architecture's default (:data:`ARCHITECTURES`) and are written resolved, so a
saved config says exactly what was built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distill.students import deeplab, fastdepth, resnet_additive, rt_monodepth
from distill.students.base import INPUT_MULTIPLE, Student, missing_weights_message

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHITECTURES", "CONFIG_NAME", "INPUT_MULTIPLE", "STUDENT_ARCHITECTURE", "WEIGHTS_NAME", "StudentConfig",
    "create_student", "is_student_folder", "load_student", "missing_weights_message", "read_student_config",
    "save_student", "student_output_kind",
]

#: The default architecture (the reference recipe).
STUDENT_ARCHITECTURE = "fastdepth"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Extra keys written into config.json for readers; ignored when loading.
_INFO_KEYS = ("format_version", "output", "input")
_FORMAT_VERSION = 1
UPSAMPLE_MODES = ("bilinear", "nearest")
OUTPUT_ACTIVATIONS = ("relu", "softplus", "sigmoid", "none")
PREDICTIONS = ("inverse_depth", "depth")


@dataclass(frozen=True)
class Architecture:
    """How to build one family, and its defaults for the fields left ``None``."""

    build: Callable[[StudentConfig], Student]
    check: Callable[[StudentConfig], None]
    encoder: str | None  # None: the architecture has no swappable encoder
    imagenet_encoder: bool  # ImageNet weights exist for the encoder (``pretrained`` defaults to True)
    decoder_widths: list[int]
    upsample: str
    output_activation: str


ARCHITECTURES: dict[str, Architecture] = {
    "fastdepth": Architecture(
        fastdepth.FastDepthStudent, fastdepth.check_config, fastdepth.DEFAULT_ENCODER, True,
        fastdepth.DEFAULT_DECODER_WIDTHS, "bilinear", "softplus",
    ),
    "resnet_additive": Architecture(
        resnet_additive.ResNetAdditiveStudent, resnet_additive.check_config, resnet_additive.DEFAULT_ENCODER, True,
        resnet_additive.DEFAULT_DECODER_WIDTHS, "bilinear", "softplus",
    ),
    "deeplabv3": Architecture(
        deeplab.DeepLabV3Student, deeplab.check_config, deeplab.DEFAULT_ENCODER, True,
        [], "bilinear", "none",
    ),
    **{
        name: Architecture(
            rt_monodepth.RTMonoDepthStudent, rt_monodepth.check_config, None, False, spec["decoder"], "nearest",
            "softplus",
        )
        for name, spec in rt_monodepth.VARIANTS.items()
    },
}


@dataclass
class StudentConfig:
    """How to build a student. Defaults: the reference recipe (MobileNetV3-Large FastDepth, bilinear, softplus).

    ``None`` fields take the architecture's default when the student is built (:meth:`resolved`); the config
    itself keeps ``None``, so a recipe that changes only the architecture gets that architecture's defaults.
    """

    architecture: str = STUDENT_ARCHITECTURE  # one of ARCHITECTURES
    encoder: str | None = None  # timm name (fastdepth, resnet_additive), resnet50/101 (deeplabv3); rt: none
    pretrained: bool | None = None  # ImageNet encoder weights (hub cache or pretrained_file); never silently random
    pretrained_file: str | None = None  # local weights file of the encoder's ImageNet classifier
    decoder_widths: list[int] | None = None  # fastdepth: strides 16..1; resnet_additive: 32..2; rt: 8..1
    skip_strides: list[int] = field(default_factory=lambda: [2, 4, 8, 16])  # fastdepth: encoder features added
    kernel_size: int = 5  # fastdepth: depthwise kernel of each NNConv5 stage
    upsample: str | None = None  # "bilinear" or "nearest" (original FastDepth, RT-MonoDepth)
    output_activation: str | None = None  # softplus (never a dead pixel), relu, sigmoid, none (plain regression)
    head_bias_init: float = 1.0  # last bias: a positive start (STACK.md: a ReLU head at bias 0 never trains)
    head_before_upsample: bool = True  # fastdepth: 1x1 head before the last upsample (same function, faster)
    prediction: str = "inverse_depth"  # what the output means: inverse_depth, or depth (metres; metric recipes)
    coarse_head: bool = False  # rt_monodepth: an extra coarse map from the bottleneck (aux["coarse"])

    def __post_init__(self) -> None:
        self._check(self._resolved_values())

    def _resolved_values(self) -> dict:
        """Every field, the ``None`` ones replaced by the architecture's defaults (no instance is made)."""
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown student architecture {self.architecture!r}; known: {sorted(ARCHITECTURES)}")
        spec = ARCHITECTURES[self.architecture]
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        defaults = dict(
            encoder=spec.encoder, pretrained=spec.imagenet_encoder, decoder_widths=list(spec.decoder_widths),
            upsample=spec.upsample, output_activation=spec.output_activation,
        )
        for name, default in defaults.items():
            if values[name] is None:
                values[name] = default
        return values

    def _check(self, values: dict) -> None:
        spec = ARCHITECTURES[values["architecture"]]
        if spec.encoder is None and self.encoder is not None:
            raise ValueError(f"student.encoder does not apply to {self.architecture} (its encoder is fixed); unset it")
        if values["pretrained"] and not spec.imagenet_encoder:
            raise ValueError(f"{self.architecture} has no ImageNet encoder weights: set student.pretrained false")
        if values["upsample"] not in UPSAMPLE_MODES:
            raise ValueError(f"student.upsample must be one of {UPSAMPLE_MODES}, got {values['upsample']!r}")
        if values["output_activation"] not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"student.output_activation must be one of {OUTPUT_ACTIVATIONS}, got {values['output_activation']!r}"
            )
        if values["prediction"] not in PREDICTIONS:
            raise ValueError(f"student.prediction must be one of {PREDICTIONS}, got {values['prediction']!r}")
        if values["coarse_head"] and not values["architecture"].startswith("rt_monodepth"):
            raise ValueError("student.coarse_head is RT-MonoDepth's option; other architectures have no coarse map")
        spec.check(SimpleNamespace(**values))

    def resolved(self) -> StudentConfig:
        """This config with the architecture's defaults filled in: what is built, and what a saved student records."""
        return StudentConfig(**self._resolved_values())


def create_student(config: StudentConfig | None = None) -> Student:
    """The one factory for students (as timm's ``create_model``)."""
    config = (config or StudentConfig()).resolved()
    return ARCHITECTURES[config.architecture].build(config)


def student_output_kind(config: StudentConfig) -> str:
    """The evaluation's name for what a student predicts: ``relative_inverse_depth`` or ``metric_depth``."""
    return "metric_depth" if config.prediction == "depth" else "relative_inverse_depth"


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
    if record.get("architecture") not in ARCHITECTURES:
        raise ValueError(
            f"{path} is not a student config (its 'architecture' is {record.get('architecture')!r}, "
            f"expected one of {sorted(ARCHITECTURES)})"
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
        return json.loads(path.read_text()).get("architecture") in ARCHITECTURES
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
