"""What every student shares: the input contract, the output activation, the optional auxiliary outputs, and the
one way to get ImageNet encoder weights from timm (hub cache or a local file, never silently random).

Contract (all architectures): ``forward(image)`` takes RGB float in [0, 1], (B, 3, H, W) with H and W multiples of
32, normalises it inside (a buffer: callers never need mean and std), and returns (B, 1, H, W): inverse depth for
``prediction == "inverse_depth"`` students, metres for ``prediction == "depth"`` ones. ``forward(image,
return_aux=True)`` returns ``(prediction, aux)``, ``aux`` a dict of extra maps some recipes train (e.g. RT-MonoDepth's
coarse map); export and inference never see them.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn
from torch.nn import functional as F

from distill.students.config import StudentConfig, check_input_size

#: Encoders that are a timm model built with other layer options, loading that model's ImageNet weights: our name ->
#: (timm's name, keyword arguments of ``timm.create_model``). timm ships MobileNetV3-Large "minimal" only as the
#: TensorFlow port ``tf_mobilenetv3_large_minimal_100`` (TF "same" padding: an extra Pad before each stride-2
#: convolution in every exported graph); ``mobilenetv3_large_minimal_100`` is that network with PyTorch's
#: symmetric padding and the same weights (the phone recipe, configs/distill/places365_fastdepth_minimal.yaml).
TIMM_ENCODER_VARIANTS: dict[str, tuple[str, dict]] = {
    "mobilenetv3_large_minimal_100": ("tf_mobilenetv3_large_minimal_100", {"pad_type": ""}),
}


def timm_name(encoder: str) -> tuple[str, dict]:
    """timm's model name and extra ``create_model`` options for ``student.encoder`` (see TIMM_ENCODER_VARIANTS)."""
    return TIMM_ENCODER_VARIANTS.get(encoder, (encoder, {}))


def missing_weights_message(encoder: str, detail: str) -> str:
    """What to download and where to put it, for a timm encoder whose ImageNet weights cannot be had."""
    encoder = timm_name(encoder)[0]
    try:
        hub_id = timm.models.get_pretrained_cfg(encoder).hf_hub_id or f"timm/{encoder}"
    except Exception:  # noqa: BLE001 - an unknown name still gets a useful message
        hub_id = f"timm/{encoder}"
    return (
        f"ImageNet weights for the student encoder {encoder!r} are not available ({detail}). Either download them "
        f"into the Hugging Face cache with `huggingface-cli download {hub_id}` (then run with HF_HUB_OFFLINE=1 if "
        f"offline), or download `model.safetensors` from https://huggingface.co/{hub_id} and set "
        f"`--student.pretrained_file /path/to/model.safetensors`, or train from random init on purpose with "
        f"`--student.pretrained false`."
    )


def create_timm_encoder(config: StudentConfig, out_indices: tuple[int, ...] = (0, 1, 2, 3, 4)) -> nn.Module:
    """A timm ``features_only`` encoder, with ImageNet weights from the hub cache or ``pretrained_file`` when
    ``config.pretrained``; a missing weight is an error saying what to download."""
    name, options = timm_name(config.encoder)
    kwargs = dict(features_only=True, exportable=True, out_indices=out_indices, **options)
    if not config.pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if config.pretrained_file is not None:
        path = Path(config.pretrained_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(missing_weights_message(config.encoder, f"no file at {path}"))
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as error:  # hub unreachable, not cached, unreadable file
        raise FileNotFoundError(missing_weights_message(config.encoder, f"{type(error).__name__}: {error}")) from error


def timm_encoder_and_stats(config: StudentConfig) -> tuple[nn.Module, tuple, tuple]:
    """A timm encoder (:func:`create_timm_encoder`, strides 2..32 checked) and the input mean / std its weights were
    trained with (ImageNet's when its config says none)."""
    encoder = create_timm_encoder(config)
    check_strides(encoder, config.encoder, [2, 4, 8, 16, 32])
    pretrained_cfg = getattr(encoder, "pretrained_cfg", None) or {}
    mean = pretrained_cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
    std = pretrained_cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
    return encoder, mean, std


def check_strides(encoder: nn.Module, name: str, expected: list[int]) -> None:
    reductions = list(encoder.feature_info.reduction())
    if reductions != expected:
        raise ValueError(f"encoder {name!r} gives features at strides {reductions}, need {expected}")


def upsample2(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "bilinear":
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Student(nn.Module):
    """Base of every student: input check and normalisation, output activation, ``return_aux``.

    Subclasses implement :meth:`predict` (normalised image -> pre-activation map at input size and an aux dict).
    """

    def __init__(self, config: StudentConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """The configured output activation: softplus (never a dead pixel), relu, sigmoid, or none (a plain
        regression head, as torchvision's DeepLab recipe)."""
        name = self.config.output_activation
        if name == "softplus":
            return F.softplus(x)
        if name == "relu":
            return F.relu(x)
        if name == "sigmoid":
            return torch.sigmoid(x)
        return x

    def forward(
        self, image: torch.Tensor, return_aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        height, width = image.shape[-2:]
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            check_input_size(width, height, "student input")
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        raw, aux = self.predict(x)
        prediction = self.activate(raw)
        if return_aux:
            return prediction, {name: self.activate(value) for name, value in aux.items()}
        return prediction
