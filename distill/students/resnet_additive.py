"""ResNet-18 with a light additive decoder (the "ResNet-18 + MSE on NYU" blog recipe: AbsRel 0.179, delta1 0.73
reported there).

Encoder: a timm ResNet (``features_only``, strides 2..32). Decoder, top-down as in a feature pyramid: a 3x3 conv
reduces each encoder level to the decoder's width at that level (``decoder_widths`` at strides 32, 16, 8, 4, 2);
the coarser map is upsampled x2, passed through a 3x3 conv to the finer level's width, and added to it; a 3x3
one-channel head at stride 2, then a x2 upsample to the input size. Choices that the recipe leaves open (ours):
BN + ReLU after each 3x3 conv, bilinear upsampling, widths 256, 128, 64, 64, 32.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.students.base import Student, timm_encoder_and_stats, upsample2
from distill.students.config import StudentConfig, register_student

DEFAULT_ENCODER = "resnet18"
DEFAULT_DECODER_WIDTHS = [256, 128, 64, 64, 32]  # strides 32, 16, 8, 4, 2


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def check_config(config: StudentConfig) -> None:
    if len(config.decoder_widths) != 5:
        raise ValueError(
            f"student.decoder_widths of resnet_additive needs 5 widths (strides 32, 16, 8, 4, 2), got "
            f"{config.decoder_widths}"
        )


@register_student(
    "resnet_additive", check=check_config, encoder=DEFAULT_ENCODER, imagenet_encoder=True,
    decoder_widths=DEFAULT_DECODER_WIDTHS, upsample="bilinear", output_activation="softplus",
)
class ResNetAdditiveStudent(Student):
    """ResNet features -> per-level 3x3 reductions, upsample x2 and add the next finer level -> 3x3 head."""

    def __init__(self, config: StudentConfig) -> None:
        encoder, mean, std = timm_encoder_and_stats(config)
        super().__init__(config, mean, std)
        self.encoder = encoder
        channels = list(encoder.feature_info.channels())[::-1]  # coarsest first: strides 32, 16, 8, 4, 2
        widths = list(config.decoder_widths)
        self.laterals = nn.ModuleList(_conv_bn_relu(c, w) for c, w in zip(channels, widths))
        self.refines = nn.ModuleList(_conv_bn_relu(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[-1], 1, 3, padding=1)
        nn.init.constant_(self.head.bias, config.head_bias_init)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.encoder(x)[::-1]  # strides 32, 16, 8, 4, 2
        x = self.laterals[0](features[0])
        for lateral, refine, feature in zip(self.laterals[1:], self.refines, features[1:]):
            x = refine(upsample2(x, self.config.upsample)) + lateral(feature)
        return upsample2(self.head(x), self.config.upsample), {}
