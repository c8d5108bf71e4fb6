"""RT-MonoDepth and RT-MonoDepth-S (Feng et al., "Real-time Monocular Depth Estimation on Embedded Systems",
ICIP 2024, arXiv 2308.10569), built from the paper's description; no ImageNet encoder (trained from scratch).

From the paper: a four-level pyramid encoder of plain 3x3 convolutions with LeakyReLU(0.1) (a stride-2 stem, then
three levels each opening with a stride-2 conv), widths 64, 64, 128, 256 (S: 64, 64, 128, 192, a 7x7 stem and
one conv fewer per level); a decoder of four stages from stride 16 to full resolution, each a 3x3 conv + ELU,
nearest x2 upsampling, fusion with the encoder feature of the same stride (addition at strides 8 and 4,
concatenation at stride 2; S fuses none), and another 3x3 conv + ELU; decoder widths 128, 64, 32, 16 (S: 96, 64,
32, 16); the prediction head at full resolution is three 3x3 convs (64, 32, 1) with LeakyReLU (S: one 3x3 conv).
Reflection padding in the decoder, input normalised by (x - 0.45) / 0.225, as in the paper's Monodepth2 lineage.

Our choices: the output activation is the pipeline's (softplus by default; the paper's sigmoid disparity is
``output_activation: sigmoid``); only the full-resolution head is kept (the paper's extra heads at strides 2-8
served its self-supervised multi-scale loss); the recipe's coarse depth map from the bottleneck is a 3x3 conv on
the stride-16 feature (``coarse_head: true``), returned as ``aux["coarse"]`` for its RMSE term.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.students.base import Student, upsample2
from distill.students.config import StudentConfig, register_student

#: variant -> encoder widths (strides 2, 4, 8, 16), convs per level, stem kernel, decoder widths, head widths, fusion
VARIANTS = {
    "rt_monodepth": dict(
        encoder=[64, 64, 128, 256], convs=3, stem=3, decoder=[128, 64, 32, 16], head=[64, 32], fuse=True
    ),
    "rt_monodepth_s": dict(
        encoder=[64, 64, 128, 192], convs=2, stem=7, decoder=[96, 64, 32, 16], head=[], fuse=False
    ),
}
_MEAN, _STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def check_config(config: StudentConfig) -> None:
    if len(config.decoder_widths) != 4:
        raise ValueError(
            f"student.decoder_widths of {config.architecture} needs 4 widths (strides 8, 4, 2, 1), got "
            f"{config.decoder_widths}"
        )


def _leaky(in_channels: int, out_channels: int, stride: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2), nn.LeakyReLU(0.1, inplace=True)]


def _conv_elu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3), nn.ELU(inplace=True))


@register_student(
    "rt_monodepth_s", check=check_config, encoder=None, imagenet_encoder=False,
    decoder_widths=VARIANTS["rt_monodepth_s"]["decoder"], upsample="nearest", output_activation="softplus",
)
@register_student(
    "rt_monodepth", check=check_config, encoder=None, imagenet_encoder=False,
    decoder_widths=VARIANTS["rt_monodepth"]["decoder"], upsample="nearest", output_activation="softplus",
)
class RTMonoDepthStudent(Student):
    """Pyramid encoder (strides 2, 4, 8, 16) -> four fuse-and-upsample stages -> full-resolution head."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config, _MEAN, _STD)
        spec = VARIANTS[config.architecture]
        enc = spec["encoder"]
        self.stem = nn.Sequential(
            nn.Conv2d(3, enc[0], spec["stem"], 2, spec["stem"] // 2, bias=False), nn.ReLU(inplace=True)
        )
        self.levels = nn.ModuleList()
        for cin, cout in zip(enc[:-1], enc[1:]):
            layers = _leaky(cin, cout, stride=2)
            for _ in range(spec["convs"] - 1):
                layers += _leaky(cout, cout)
            self.levels.append(nn.Sequential(*layers))
        self.fuse = spec["fuse"]
        dec = list(config.decoder_widths)
        inputs = [enc[-1]] + dec[:-1]
        self.reduce = nn.ModuleList(_conv_elu(cin, cout) for cin, cout in zip(inputs, dec))
        # the encoder feature fused after each upsample is at stride 8, 4, 2 (none at full resolution); only the
        # concatenation at stride 2 widens the refine conv's input
        refine_inputs = [
            d + skip if self.fuse and index == 2 else d
            for index, (d, skip) in enumerate(zip(dec, [enc[2], enc[1], enc[0], 0]))
        ]
        self.refine = nn.ModuleList(_conv_elu(cin, cout) for cin, cout in zip(refine_inputs, dec))
        if self.fuse:
            for index in (0, 1):
                if enc[2 - index] != dec[index]:
                    raise ValueError(
                        f"{config.architecture}: additive fusion needs decoder width {dec[index]} to equal the "
                        f"encoder's {enc[2 - index]} at stride {8 // 2**index}"
                    )
        head: list[nn.Module] = []
        width = dec[-1]
        for hidden in spec["head"]:
            head += _leaky(width, hidden)
            width = hidden
        head.append(nn.Conv2d(width, 1, 3, padding=1))
        self.head = nn.Sequential(*head)
        nn.init.constant_(self.head[-1].bias, config.head_bias_init)
        self.coarse = nn.Conv2d(enc[-1], 1, 3, padding=1) if config.coarse_head else None
        if self.coarse is not None:
            nn.init.constant_(self.coarse.bias, config.head_bias_init)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = [self.stem(x)]  # strides 2, 4, 8, 16
        for level in self.levels:
            features.append(level(features[-1]))
        x = features[-1]
        skips = [features[2], features[1], features[0], None]  # after the upsample to strides 8, 4, 2, 1
        for index, (reduce, refine, skip) in enumerate(zip(self.reduce, self.refine, skips)):
            x = upsample2(reduce(x), self.config.upsample)
            if self.fuse and skip is not None:
                x = torch.cat([x, skip], dim=1) if index == 2 else x + skip
            x = refine(x)
        aux = {"coarse": self.coarse(features[-1])} if self.coarse is not None else {}
        return self.head(x), aux
