"""DeepLabv3-ResNet50 as a depth regressor (a recipe trained on DIODE with L1 + edge + SSIM).

torchvision's ``deeplabv3_resnet50`` (dilated ResNet-50, output stride 8, ASPP head) with its classifier's last
1x1 conv giving one channel instead of the class scores: a regression head, no activation by default
(``output_activation: none``), upsampled bilinearly to the input size as torchvision does. The backbone's
ImageNet weights come from torchvision (the torch hub cache) or ``pretrained_file`` (a torchvision ResNet state
dict); a missing weight is an error saying what to download, never a silent random init.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from distill.students.base import Student
from distill.students.config import StudentConfig, register_student

DEFAULT_ENCODER = "resnet50"
#: encoder name -> (torchvision segmentation builder, backbone ImageNet weights enum member)
BACKBONES = {
    "resnet50": ("deeplabv3_resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": ("deeplabv3_resnet101", torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
}


def check_config(config: StudentConfig) -> None:
    if config.decoder_widths:
        raise ValueError("student.decoder_widths does not apply to deeplabv3 (its ASPP head is fixed); unset it")
    if config.encoder not in BACKBONES:
        raise ValueError(f"student.encoder of deeplabv3 must be one of {sorted(BACKBONES)}, got {config.encoder!r}")


def missing_backbone_message(encoder: str, detail: str) -> str:
    weights = BACKBONES[encoder][1]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return (
        f"ImageNet weights for the DeepLabv3 backbone {encoder!r} are not available ({detail}). Download "
        f"{weights.url} to {cache} (torchvision's cache), or set `--student.pretrained_file /path/to/{cache.name}`, "
        f"or train from random init on purpose with `--student.pretrained false`."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_backbone_weights(backbone: nn.Module, config: StudentConfig) -> None:
    """ImageNet ResNet weights into the (dilated) backbone; the classifier ``fc`` is not part of it."""
    if config.pretrained_file is not None:
        path = Path(config.pretrained_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(missing_backbone_message(config.encoder, f"no file at {path}"))
        state = _read_state_dict(path)
    else:
        try:
            state = BACKBONES[config.encoder][1].get_state_dict(progress=False)
        except (OSError, RuntimeError, ValueError) as error:  # no network, not cached, unreadable
            raise FileNotFoundError(
                missing_backbone_message(config.encoder, f"{type(error).__name__}: {error}")
            ) from error
    state = {name: value for name, value in state.items() if not name.startswith("fc.")}
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(n for n in set(state) & set(expected) if tuple(state[n].shape) != tuple(expected[n].shape))
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{config.pretrained_file or 'torchvision weights'} is not a {config.encoder} state dict: missing "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, wrong shape "
            f"{wrong_shape[:5]}"
        )
    backbone.load_state_dict(state, strict=True)


@register_student(
    "deeplabv3", check=check_config, encoder=DEFAULT_ENCODER, imagenet_encoder=True, decoder_widths=[],
    upsample="bilinear", output_activation="none",
)
class DeepLabV3Student(Student):
    """Dilated ResNet backbone (output stride 8) -> ASPP head -> one-channel 1x1 -> bilinear to input size."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config, timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD)
        builder = getattr(torchvision.models.segmentation, BACKBONES[config.encoder][0])
        model = builder(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
        self.backbone = model.backbone
        self.classifier = model.classifier  # ASPP ... Conv2d(256, 1, 1): the regression head
        nn.init.constant_(self.classifier[-1].bias, config.head_bias_init)
        if config.pretrained:
            load_backbone_weights(self.backbone, config)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        size = x.shape[-2:]
        y = self.classifier(self.backbone(x)["out"])
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False), {}
