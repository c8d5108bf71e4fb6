"""How to build a student: :class:`StudentConfig` (one config for every family), the table of families, the factory.

Each family registers itself where it is defined, as timm's ``@register_model`` does: its module decorates the network
class with :func:`register_student`, giving the name the configs use and the defaults of the fields a config leaves
``None``. The family modules (torch, timm) are imported the first time a family is looked up, so importing this module
(and the training config built on it) stays light. Fields left ``None`` are written resolved, so a saved config says
exactly what was built.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ARCHITECTURES", "INPUT_MULTIPLE", "OUTPUT_ACTIVATIONS", "PREDICTIONS", "STUDENT_ARCHITECTURE", "STUDENT_SIZE",
    "UPSAMPLE_MODES", "Architecture", "StudentConfig", "architecture", "architectures", "check_input_size",
    "create_student", "register_student", "student_output_kind",
]

#: The student's training resolution, (width, height).
STUDENT_SIZE = (256, 192)

#: Sides of a student's input must be multiples of this: the largest encoder output stride of any student.
INPUT_MULTIPLE = 32


def check_input_size(width: int, height: int, what: str = "model input") -> None:
    """Refuse a student input size whose sides are not positive multiples of :data:`INPUT_MULTIPLE`: the encoder
    halves the picture five times and the decoder adds its skips back at each scale, so the sizes must divide."""
    if width <= 0 or height <= 0 or width % INPUT_MULTIPLE or height % INPUT_MULTIPLE:
        raise ValueError(
            f"{what} {width}x{height} (W x H): both sides must be positive multiples of {INPUT_MULTIPLE}"
        )


# ---------------------------------------------------------------------------------------------------------------
# The families


@dataclass(frozen=True)
class Architecture:
    """How to build one family, and its defaults for the fields left ``None``."""

    build: Callable[[Any], nn.Module]  # StudentConfig (resolved) -> the network
    check: Callable[[Any], None]  # raises ValueError on a config the family cannot build
    encoder: str | None  # None: the architecture has no swappable encoder
    imagenet_encoder: bool  # ImageNet weights exist for the encoder (``pretrained`` defaults to True)
    decoder_widths: list[int]
    upsample: str
    output_activation: str


#: The modules of ``distill/students/`` that define families: a new family is a new module, named here.
FAMILY_MODULES = ("deeplab", "fastdepth", "resnet_additive", "rt_monodepth")

#: name -> family, in registration order; filled by :func:`register_student`; read it through :func:`architectures`.
ARCHITECTURES: dict[str, Architecture] = {}

BuildT = TypeVar("BuildT", bound=Callable[..., "nn.Module"])


def register_student(
    name: str,
    *,
    check: Callable[[Any], None],
    encoder: str | None,
    imagenet_encoder: bool,
    decoder_widths: list[int],
    upsample: str,
    output_activation: str,
) -> Callable[[BuildT], BuildT]:
    """Class (or builder) decorator: make ``name`` buildable by ``create_student`` with these defaults."""

    def decorate(build: BuildT) -> BuildT:
        if name in ARCHITECTURES:
            raise ValueError(f"student architecture {name!r} is registered twice")
        ARCHITECTURES[name] = Architecture(
            build, check, encoder, imagenet_encoder, list(decoder_widths), upsample, output_activation
        )
        return build

    return decorate


def architectures() -> dict[str, Architecture]:
    """Every family, by name: the family modules are imported (and register themselves) on the first call."""
    for module in FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return ARCHITECTURES


def architecture(name: str) -> Architecture:
    """The family called ``name``; an unknown name is an error that lists the known ones."""
    known = architectures()
    if name not in known:
        raise ValueError(f"unknown student architecture {name!r}; known: {sorted(known)}")
    return known[name]


# ---------------------------------------------------------------------------------------------------------------
# The config and the factory


#: The default architecture (the reference recipe).
STUDENT_ARCHITECTURE = "fastdepth"
UpsampleMode = Literal["bilinear", "nearest"]
OutputActivation = Literal["relu", "softplus", "sigmoid", "none"]
Prediction = Literal["inverse_depth", "depth"]
UPSAMPLE_MODES = get_args(UpsampleMode)
OUTPUT_ACTIVATIONS = get_args(OutputActivation)
PREDICTIONS = get_args(Prediction)


@dataclass
class StudentConfig:
    """How to build a student. Defaults: the reference recipe (MobileNetV3-Large FastDepth, bilinear, softplus).

    ``None`` fields take the architecture's default when the student is built (:meth:`resolved`); the config
    itself keeps ``None``, so a recipe that changes only the architecture gets that architecture's defaults.
    """

    architecture: str = STUDENT_ARCHITECTURE
    """a registered family: fastdepth, rt_monodepth, rt_monodepth_s, resnet_additive or deeplabv3"""
    encoder: str | None = None
    """timm name (fastdepth, resnet_additive), resnet50/101 (deeplabv3); rt: none"""
    pretrained: bool | None = None
    """ImageNet encoder weights (hub cache or pretrained_file); never silently random"""
    pretrained_file: str | None = None
    """local weights file of the encoder's ImageNet classifier"""
    decoder_widths: list[int] | None = None
    """fastdepth: strides 16..1; resnet_additive: 32..2; rt: 8..1"""
    skip_strides: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    """fastdepth: encoder features added"""
    kernel_size: int = 5
    """fastdepth: depthwise kernel of each NNConv5 stage"""
    upsample: UpsampleMode | None = None
    """decoder upsampling: bilinear, or nearest (original FastDepth, RT-MonoDepth); null: the family's"""
    output_activation: OutputActivation | None = None
    """softplus (never a dead pixel), relu, sigmoid, none (plain regression)"""
    head_bias_init: float = 1.0
    """last bias: a positive start (a ReLU head at bias 0 may never train)"""
    head_before_upsample: bool = True
    """fastdepth: 1x1 head before the last upsample (same function, faster)"""
    prediction: Prediction = "inverse_depth"
    """what the output means: inverse_depth, or depth (metres; metric recipes)"""
    coarse_head: bool = False
    """rt_monodepth: an extra coarse map from the bottleneck (aux["coarse"])"""

    def __post_init__(self) -> None:
        self._check(self._resolved_values())

    def _resolved_values(self) -> dict:
        """Every field, the ``None`` ones replaced by the architecture's defaults (no instance is made)."""
        spec = architecture(self.architecture)
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
        spec = architecture(values["architecture"])
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


def student_output_kind(config: StudentConfig) -> str:
    """The evaluation's name for what a student predicts: ``relative_inverse_depth`` or ``metric_depth``."""
    return METRIC_DEPTH if config.prediction == "depth" else RELATIVE_INVERSE_DEPTH


def create_student(config: StudentConfig | None = None) -> nn.Module:
    """The student ``config`` describes (a :class:`distill.students.base.Student`), its ``None`` fields resolved to
    the family's defaults."""
    config = (config or StudentConfig()).resolved()
    return architecture(config.architecture).build(config)
