"""FastDepth (Wofk et al., ICRA 2019): an ImageNet encoder from timm + an NNConv5 decoder with additive skips.

Decoder: five NNConv5 stages (depthwise k x k + BN + ReLU, pointwise 1x1 + BN + ReLU), each followed by a x2
upsample; encoder features at the configured strides are added (not concatenated) after the upsample that reaches
their stride, through a 1x1 projection where the encoder's width differs from the decoder's (docs/decisions.md,
"Students"). The encoder widths come from timm's ``feature_info``. Skips are plain tensors passed through
``forward``: no hooks, no module-level state, gradients reach the encoder through every skip.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.students.base import Student, timm_encoder_and_stats, upsample2
from distill.students.config import StudentConfig, register_student

DEFAULT_ENCODER = "mobilenetv3_large_100"
DEFAULT_DECODER_WIDTHS = [512, 256, 128, 64, 32]  # strides 16, 8, 4, 2, 1


def _nnconv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """NNConv5 stage body: depthwise k x k + BN + ReLU, pointwise 1x1 + BN + ReLU (FastDepth)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def check_config(config: StudentConfig) -> None:
    if len(config.decoder_widths) != 5:
        raise ValueError(f"student.decoder_widths needs 5 widths (strides 16, 8, 4, 2, 1), got {config.decoder_widths}")
    bad = [s for s in config.skip_strides if s not in (2, 4, 8, 16)]
    if bad:
        raise ValueError(f"student.skip_strides must be among 2, 4, 8, 16; got {bad}")
    if config.kernel_size % 2 != 1:
        raise ValueError(f"student.kernel_size must be odd, got {config.kernel_size}")


@register_student(
    "fastdepth", check=check_config, encoder=DEFAULT_ENCODER, imagenet_encoder=True,
    decoder_widths=DEFAULT_DECODER_WIDTHS, upsample="bilinear", output_activation="softplus",
)
class FastDepthStudent(Student):
    """Encoder features at strides 2..32 -> five NNConv5 stages with x2 upsampling and additive skips."""

    def __init__(self, config: StudentConfig) -> None:
        encoder, mean, std = timm_encoder_and_stats(config)
        super().__init__(config, mean, std)
        self.encoder = encoder
        channels = list(encoder.feature_info.channels())  # e.g. [16, 24, 40, 112, 960]
        reductions = list(encoder.feature_info.reduction())
        widths = list(config.decoder_widths)
        stage_inputs = [channels[-1]] + widths[:-1]
        self.stages = nn.ModuleList(_nnconv(cin, cout, config.kernel_size) for cin, cout in zip(stage_inputs, widths))
        # Decoder stage i ends at stride 16 / 2**i; a skip from the encoder feature of that stride is added there.
        stage_strides = [16, 8, 4, 2, 1]
        encoder_width = dict(zip(reductions, channels))
        self.skip_stages = sorted(stage_strides.index(s) for s in set(config.skip_strides))
        self.skip_projections = nn.ModuleDict()
        for index in self.skip_stages:
            stride, width = stage_strides[index], widths[index]
            if encoder_width[stride] != width:
                self.skip_projections[str(stride)] = nn.Conv2d(encoder_width[stride], width, 1, bias=False)
        self._skip_strides = {index: stage_strides[index] for index in self.skip_stages}
        self._reduction_index = {stride: i for i, stride in enumerate(reductions)}
        self.head = nn.Conv2d(widths[-1], 1, 1)
        nn.init.constant_(self.head.bias, config.head_bias_init)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.encoder(x)  # strides 2, 4, 8, 16, 32
        x = features[-1]
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == last and self.config.head_before_upsample:
                x = self.head(x)  # 1x1 conv commutes with the (linear) upsample: same function, fewer pixels
            x = upsample2(x, self.config.upsample)
            if index in self._skip_strides:
                stride = self._skip_strides[index]
                skip = features[self._reduction_index[stride]]
                projection = self.skip_projections[str(stride)] if str(stride) in self.skip_projections else None
                x = x + (projection(skip) if projection is not None else skip)
        if not self.config.head_before_upsample:
            x = self.head(x)
        return x, {}
