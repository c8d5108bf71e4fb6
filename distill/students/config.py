"""How to build a student: :class:`StudentConfig`, one config for every registered family.

Fields left ``None`` take the family's default (registered with it, :mod:`distill.students._registry`) and are
written resolved, so a saved config says exactly what was built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Literal, get_args

from distill.students._registry import architecture
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH

__all__ = ["OUTPUT_ACTIVATIONS", "PREDICTIONS", "STUDENT_ARCHITECTURE", "UPSAMPLE_MODES", "StudentConfig",
           "student_output_kind"]

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
