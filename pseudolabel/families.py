"""The transformers depth families a teacher may be, and how the three metric ones run as their processors do.

:data:`TEACHER_FAMILIES` is the one table of accepted ``model_type`` s (``pseudolabel.teachers`` loads by it,
``distill.deploy.model`` recognises a teacher folder by it): what each predicts and which modules stay in float32.
DPT and Depth Anything run by their authors' code (``pseudolabel.teachers.RECIPES``); ZoeDepth, Depth Pro and GLPN
by their own transformers image processor, the reference here: :class:`ZoeDepthSteps`, :class:`DepthProSteps` and
:class:`GLPNSteps` read its settings (size, resampling, normalisation, padding) and do its ``preprocess`` and its
``post_process_depth_estimation`` in torch on the batch, on the teacher's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH


@dataclass(frozen=True)
class Family:
    """A teacher family: ``kind`` is what its map is after its own post-processing (a Depth Anything checkpoint
    with ``depth_estimation_type: metric`` is metric); ``heads`` are the modules kept in float32 under autocast;
    ``processor`` is the transformers image processor that is its reference (None: its authors' recipe,
    ``pseudolabel.teachers.RECIPES``); ``example`` a checkpoint of it."""

    kind: str
    heads: tuple[str, ...]
    processor: str | None
    example: str


#: Every accepted transformers ``model_type``; any other is refused by name (:func:`family_refusal`).
TEACHER_FAMILIES: dict[str, Family] = {
    "dpt": Family(RELATIVE_INVERSE_DEPTH, ("head",), None, "Intel/dpt-hybrid-midas"),
    "depth_anything": Family(RELATIVE_INVERSE_DEPTH, ("head",), None, "depth-anything/Depth-Anything-V2-Small-hf"),
    "zoedepth": Family(METRIC_DEPTH, ("relative_head", "metric_head"), "ZoeDepthImageProcessor", "Intel/zoedepth-nyu"),
    "depth_pro": Family(METRIC_DEPTH, ("head", "fov_model.head"), "DepthProImageProcessor", "apple/DepthPro-hf"),
    "glpn": Family(METRIC_DEPTH, ("head",), "GLPNImageProcessor", "vinvino02/glpn-nyu"),
}

#: The families run by their own image processor (the others by ``pseudolabel.teachers.RECIPES``).
PROCESSOR_FAMILIES = tuple(name for name, family in TEACHER_FAMILIES.items() if family.processor)

#: transformers depth families that cannot label images alone, with the reason.
REFUSED_FAMILIES = {
    "prompt_depth_anything": "needs a LiDAR depth map as a prompt beside each image, which images to label do not "
    "have",
}


def family_refusal(model: str, model_type: str) -> str | None:
    """None for an accepted ``model_type``; else the one-line reason (``{key}`` stands for the setting's name)."""
    if model_type in TEACHER_FAMILIES:
        return None
    accepted = ", ".join(TEACHER_FAMILIES)
    if model_type in REFUSED_FAMILIES:
        reason = REFUSED_FAMILIES[model_type]
        return f"{{key}} {model} is a {model_type} model: it {reason}; a teacher is one of {accepted}"
    return f"{{key}} {model} is a {model_type!r} model; a teacher is a transformers depth model of one of {accepted}"


def _pixels(images: torch.Tensor, device: torch.device, rescale: float) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) times the processor's rescale factor, on ``device``."""
    return images.to(device, non_blocking=True).permute(0, 3, 1, 2).float() * rescale


def _normalise(pixels: torch.Tensor, mean: tuple | None, std: tuple | None) -> torch.Tensor:
    if mean is None:
        return pixels
    shape = (1, 3, 1, 1)
    mean_tensor = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(shape)
    return (pixels - mean_tensor) / torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(shape)


@dataclass(frozen=True)
class ZoeDepthSteps:
    """``ZoeDepthImageProcessor``: rescale, reflect-pad each side by ``int(sqrt(side / 2) * 3)``, resize (keep
    aspect ratio, scaled as little as possible, sides rounded to ``multiple``; ``align_corners=True``), normalise;
    its post-processing resizes the map bicubically to the padded input size and cuts the padding off."""

    size: tuple[int, int]
    keep_aspect_ratio: bool
    multiple: float
    mode: str
    pad: bool
    resize: bool
    rescale: float
    mean: tuple | None
    std: tuple | None

    def recipe(self) -> dict[str, Any]:
        return {"size": f"{self.size[0]}x{self.size[1]}", "size_fit": "reflect-padded, then minimal",
                "size_multiple": self.multiple, "input_resize": f"{self.mode}_align_corners",
                "output_resize": "bicubic, padding cut off"}

    def padding(self, height: int, width: int) -> tuple[int, int]:
        if not self.pad:
            return 0, 0
        return int(math.sqrt(height / 2) * 3), int(math.sqrt(width / 2) * 3)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        pad_height, pad_width = self.padding(height, width)
        height, width = height + 2 * pad_height, width + 2 * pad_width
        if not self.resize:
            return height, width
        scale_height, scale_width = self.size[0] / height, self.size[1] / width
        if self.keep_aspect_ratio:  # scale as little as possible
            scale_height = scale_width = scale_width if abs(1 - scale_width) < abs(1 - scale_height) else scale_height
        return _round_to(scale_height * height, self.multiple), _round_to(scale_width * width, self.multiple)

    def prepare(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        pixels = _pixels(images, device, self.rescale)
        pad_height, pad_width = self.padding(*images.shape[1:3])
        if pad_height or pad_width:
            pixels = F.pad(pixels, (pad_width, pad_width, pad_height, pad_height), mode="reflect")
        if self.resize:
            size = self.network_size(*images.shape[1:3])
            pixels = F.interpolate(pixels, size, mode=self.mode, align_corners=True)
        return _normalise(pixels, self.mean, self.std)

    def restore(self, prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
        pad_height, pad_width = self.padding(height, width)
        padded = (height + 2 * pad_height, width + 2 * pad_width)
        if tuple(prediction.shape[-2:]) != padded:
            prediction = F.interpolate(prediction[:, None], padded, mode="bicubic", align_corners=False)[:, 0]
        return prediction[:, pad_height : pad_height + height, pad_width : pad_width + width]


def _round_to(value: float, multiple: float) -> int:
    """ZoeDepth's ``constrain_to_multiple_of`` (``min_val`` 0): rounded half to even, to a multiple."""
    return int(round(value / multiple) * multiple)


@dataclass(frozen=True)
class DepthProSteps:
    """``DepthProImageProcessor``: rescale and normalise, then resize to ``size`` (square for the real model, not
    keeping the aspect ratio, no antialiasing). Its post-processing: the canonical inverse depth times
    ``width / focal length`` of the predicted field of view (:func:`depth_pro_inverse_depth` does that on the
    network side), resized to the input size, then ``1 / clamp(., 1e-4, 1e4)``: metres. Flip TTA (which transformers
    does not offer for Depth Pro) averages the inverse depth, before the inversion."""

    size: tuple[int, int]
    mode: str
    resize: bool
    rescale: float
    mean: tuple | None
    std: tuple | None

    def recipe(self) -> dict[str, Any]:
        return {"size": f"{self.size[0]}x{self.size[1]}", "size_fit": "stretched", "size_multiple": 1,
                "input_resize": f"{self.mode} (normalised first)", "output_resize": f"{self.mode}, then 1 / x"}

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size if self.resize else (height, width)

    def prepare(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        pixels = _normalise(_pixels(images, device, self.rescale), self.mean, self.std)
        size = self.network_size(*images.shape[1:3])
        if tuple(pixels.shape[-2:]) == size:
            return pixels
        return F.interpolate(pixels, size, mode=self.mode, align_corners=_corners(self.mode), antialias=False)

    def restore(self, prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if tuple(prediction.shape[-2:]) != (height, width):
            prediction = F.interpolate(prediction[:, None], (height, width), mode=self.mode)[:, 0]
        return 1.0 / prediction.clamp(min=1e-4, max=1e4)


def _corners(mode: str) -> bool | None:
    return False if mode in ("bilinear", "bicubic") else None


def depth_pro_inverse_depth(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Depth Pro's canonical inverse depth scaled by ``width / focal length`` = ``2 tan(fov / 2)`` of its own
    predicted field of view, per image: the inverse of metres, before the resize."""
    output = model(pixel_values=pixel_values)
    fov = output.field_of_view.float().reshape(-1)  # degrees, one per image
    return output.predicted_depth * (2 * torch.tan(torch.deg2rad(fov) / 2)).view(-1, 1, 1)


@dataclass(frozen=True)
class GLPNSteps:
    """``GLPNImageProcessor``: each side floored to a multiple of ``divisor`` (the uint8 image resized, antialiased),
    rescaled (and normalised only if its config says so); the map resized bicubically back to the input size."""

    divisor: int
    mode: str
    resize: bool
    rescale: float
    mean: tuple | None
    std: tuple | None

    def recipe(self) -> dict[str, Any]:
        return {"size": 0, "size_fit": "floored", "size_multiple": self.divisor,
                "input_resize": f"{self.mode}_antialias (uint8)", "output_resize": "bicubic"}

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.resize:
            return height, width
        return height // self.divisor * self.divisor, width // self.divisor * self.divisor

    def prepare(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        size = self.network_size(*images.shape[1:3])
        if size == tuple(images.shape[1:3]):
            return _normalise(_pixels(images, device, self.rescale), self.mean, self.std)
        channels_first = images.cpu().permute(0, 3, 1, 2)  # torchvision resizes the uint8 image: torch's uint8 kernel
        resized = F.interpolate(channels_first, size, mode=self.mode, align_corners=_corners(self.mode), antialias=True)
        return _normalise(resized.to(device, non_blocking=True).float() * self.rescale, self.mean, self.std)

    def restore(self, prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if tuple(prediction.shape[-2:]) == (height, width):
            return prediction
        return F.interpolate(prediction[:, None], (height, width), mode="bicubic", align_corners=False)[:, 0]


ProcessorSteps = ZoeDepthSteps | DepthProSteps | GLPNSteps


def processor_steps(model_type: str, processor: Any) -> ProcessorSteps:
    """The steps of ``processor`` (a transformers image processor of ``model_type``), read from its settings."""
    from transformers.image_utils import pil_torch_interpolation_mapping

    mode = pil_torch_interpolation_mapping[processor.resample].value
    rescale = processor.rescale_factor if processor.do_rescale else 1.0
    mean, std = (processor.image_mean, processor.image_std) if processor.do_normalize else (None, None)
    mean, std = _three(mean), _three(std)
    if model_type == "zoedepth":
        return ZoeDepthSteps(
            size=(processor.size.height, processor.size.width), keep_aspect_ratio=bool(processor.keep_aspect_ratio),
            multiple=processor.ensure_multiple_of, mode=mode, pad=bool(processor.do_pad),
            resize=bool(processor.do_resize), rescale=rescale, mean=mean, std=std,
        )
    if model_type == "depth_pro":
        size = (processor.size.height, processor.size.width)
        return DepthProSteps(size=size, mode=mode, resize=bool(processor.do_resize), rescale=rescale, mean=mean,
                             std=std)
    if model_type == "glpn":
        return GLPNSteps(divisor=processor.size_divisor, mode=mode, resize=bool(processor.do_resize),
                         rescale=rescale, mean=mean, std=std)
    raise ValueError(f"{model_type} runs by its authors' recipe, not by its image processor")


def _three(value: Any) -> tuple | None:
    if value is None:
        return None
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3


def steps_settings(steps: ProcessorSteps) -> dict[str, Any]:
    """What ran, for the manifest: the steps' class (named after the processor) and its settings."""
    settings = {name: getattr(steps, name) for name in steps.__dataclass_fields__}
    settings = {name: list(value) if isinstance(value, tuple) else value for name, value in settings.items()}
    return {"processor": type(steps).__name__.replace("Steps", "ImageProcessor"), **settings}
