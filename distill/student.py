"""The student: FastDepth (an ImageNet encoder from timm + an NNConv5 decoder with additive skips).

``create_student(StudentConfig)`` builds it; ``save_student`` / ``load_student`` move it through a folder holding
``config.json`` (with our own ``"architecture"`` marker) and ``model.safetensors``. The model takes RGB float in
[0, 1], (B, 3, H, W) with H and W multiples of 32, normalises it inside (ImageNet mean / std, a buffer), and returns
(B, 1, H, W) non-negative relative inverse depth. Callers (predict, export, evaluation) never need mean and std.

Decoder: five NNConv5 stages (depthwise 5x5 + BN + ReLU, pointwise 1x1 + BN + ReLU), each followed by a x2
upsample; encoder features at the configured strides are added (not concatenated) after the upsample that reaches
their stride, through a 1x1 projection where the encoder's width differs from the decoder's (DECISIONS.md). The
encoder widths come from timm's ``feature_info``. Skips are plain tensors passed through ``forward``: no hooks, no
module-level state, gradients reach the encoder through every skip.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

#: The value of ``"architecture"`` in a student folder's ``config.json``: how tools tell our students apart from
#: transformers folders (which write ``"architectures"``, plural) and ONNX files.
STUDENT_ARCHITECTURE = "fastdepth"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Extra keys written into config.json for readers; ignored when loading.
_INFO_KEYS = ("format_version", "output", "input")
_FORMAT_VERSION = 1
#: The encoder output stride; inputs must be multiples of it.
INPUT_MULTIPLE = 32
UPSAMPLE_MODES = ("bilinear", "nearest")
OUTPUT_ACTIVATIONS = ("relu", "softplus")


@dataclass
class StudentConfig:
    """How to build a student. Defaults: the reference recipe (MobileNetV3-Large FastDepth, bilinear)."""

    architecture: str = STUDENT_ARCHITECTURE
    encoder: str = "mobilenetv3_large_100"  # a timm model name with features_only support
    pretrained: bool = True  # ImageNet encoder weights: from the hub cache or pretrained_file; never silently random
    pretrained_file: str | None = None  # local .safetensors / .pth of the timm classifier's weights
    decoder_widths: list[int] = field(default_factory=lambda: [512, 256, 128, 64, 32])  # strides 16, 8, 4, 2, 1
    skip_strides: list[int] = field(default_factory=lambda: [2, 4, 8, 16])  # encoder features added to the decoder
    kernel_size: int = 5  # depthwise kernel of each NNConv5 stage
    upsample: str = "bilinear"  # "bilinear" (ours) or "nearest" (original FastDepth)
    output_activation: str = "softplus"  # never a dead pixel (ReLU, as DPT, can die at 0); positive output
    head_bias_init: float = 1.0  # last bias: a positive start (STACK.md: a ReLU head at bias 0 never trains)
    head_before_upsample: bool = True  # 1x1 head before the last upsample: the same function, ~20% faster to train

    def __post_init__(self) -> None:
        if self.architecture != STUDENT_ARCHITECTURE:
            raise ValueError(f"unknown student architecture {self.architecture!r}; known: {STUDENT_ARCHITECTURE!r}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"student.upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"student.output_activation must be one of {OUTPUT_ACTIVATIONS}, got {self.output_activation!r}"
            )
        if len(self.decoder_widths) != 5:
            raise ValueError(
                f"student.decoder_widths needs 5 widths (strides 16, 8, 4, 2, 1), got {self.decoder_widths}"
            )
        bad = [s for s in self.skip_strides if s not in (2, 4, 8, 16)]
        if bad:
            raise ValueError(f"student.skip_strides must be among 2, 4, 8, 16; got {bad}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"student.kernel_size must be odd, got {self.kernel_size}")


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


def missing_weights_message(encoder: str, detail: str) -> str:
    """What to download and where to put it, for an encoder whose ImageNet weights cannot be had."""
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


def _create_encoder(config: StudentConfig) -> nn.Module:
    kwargs = dict(features_only=True, exportable=True, out_indices=(0, 1, 2, 3, 4))
    if not config.pretrained:
        return timm.create_model(config.encoder, pretrained=False, **kwargs)
    if config.pretrained_file is not None:
        path = Path(config.pretrained_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(missing_weights_message(config.encoder, f"no file at {path}"))
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
    try:
        return timm.create_model(config.encoder, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as error:  # hub unreachable, not cached, unreadable file
        raise FileNotFoundError(missing_weights_message(config.encoder, f"{type(error).__name__}: {error}")) from error


class FastDepthStudent(nn.Module):
    """FastDepth: encoder features at strides 2..32 -> five NNConv5 stages with x2 upsampling and additive skips.

    ``forward(image)``: image (B, 3, H, W) RGB in [0, 1], H and W multiples of 32 -> (B, 1, H, W) non-negative
    relative inverse depth.
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _create_encoder(config)
        channels = list(self.encoder.feature_info.channels())  # e.g. [16, 24, 40, 112, 960]
        reductions = list(self.encoder.feature_info.reduction())  # [2, 4, 8, 16, 32]
        if reductions != [2, 4, 8, 16, 32]:
            raise ValueError(f"encoder {config.encoder!r} gives features at strides {reductions}, need 2, 4, 8, 16, 32")
        pretrained_cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        mean = pretrained_cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
        std = pretrained_cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

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

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.upsample == "bilinear":
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
                raise ValueError(f"student input {width}x{height} (W x H): both sides must be multiples of 32")
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        features = self.encoder(x)  # strides 2, 4, 8, 16, 32
        x = features[-1]
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == last and self.config.head_before_upsample:
                x = self.head(x)  # 1x1 conv commutes with the (linear) upsample: same function, fewer pixels
            x = self._upsample(x)
            if index in self._skip_strides:
                stride = self._skip_strides[index]
                skip = features[self._reduction_index[stride]]
                projection = self.skip_projections[str(stride)] if str(stride) in self.skip_projections else None
                x = x + (projection(skip) if projection is not None else skip)
        if not self.config.head_before_upsample:
            x = self.head(x)
        if self.config.output_activation == "softplus":
            return F.softplus(x)
        return F.relu(x)  # (B, 1, H, W) relative inverse depth


def create_student(config: StudentConfig | None = None) -> FastDepthStudent:
    """The one factory for students (as timm's ``create_model``)."""
    return FastDepthStudent(config or StudentConfig())


def save_student(model: nn.Module, config: StudentConfig, folder: str | os.PathLike) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors``; returns the folder.

    Files go through temporary names and are renamed, so a reader never sees half a student.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = dataclasses.asdict(config)
    record.update(format_version=_FORMAT_VERSION, output="relative_inverse_depth", input="rgb_float_0_1")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    weights_tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(weights_tmp), metadata={"architecture": STUDENT_ARCHITECTURE})
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
    if record.get("architecture") != STUDENT_ARCHITECTURE:
        raise ValueError(
            f"{path} is not a student config (its 'architecture' is {record.get('architecture')!r}, "
            f"expected {STUDENT_ARCHITECTURE!r})"
        )
    known = {f.name for f in dataclasses.fields(StudentConfig)}
    unknown = sorted(set(record) - known - set(_INFO_KEYS))
    if unknown:
        raise ValueError(f"{path} has keys this version does not know: {unknown}")
    return StudentConfig(**{k: v for k, v in record.items() if k in known})


def is_student_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder/config.json`` carries our ``"architecture"`` marker (no weights are read)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("architecture") == STUDENT_ARCHITECTURE
    except (json.JSONDecodeError, AttributeError):
        return False


def load_student(
    folder: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[FastDepthStudent, StudentConfig]:
    """A saved student, in eval mode, and its config. Needs no training config and no download: the encoder is
    built without ImageNet weights and every weight comes from ``model.safetensors``."""
    config = read_student_config(folder)
    model = create_student(dataclasses.replace(config, pretrained=False, pretrained_file=None))
    state = load_file(str(Path(folder) / WEIGHTS_NAME), device="cpu")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), config
