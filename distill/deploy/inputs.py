"""What ``DepthModel.predict`` accepts, turned into float RGB at the model's input size.

Accepted forms: a picture file path, a PIL image, a uint8 (H, W, 3) RGB array (or (H, W) greyscale), a float
tensor (3, H, W) or (N, 3, H, W) RGB in [0, 1], or a list of them. Each becomes an :class:`InputImage` that
remembers its own size, so that every prediction is resized back to the size it came in at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from distill.deploy.runtime import images_to_batch, load_picture, picture_to_rgb

#: What ``predict`` takes; a list of these gives a list of predictions.
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

ACCEPTED_INPUTS = (
    "a picture file path, a PIL image, a uint8 (H, W, 3) RGB array, a float tensor (3, H, W) or (N, 3, H, W) RGB "
    "in [0, 1], or a list of them"
)


@dataclass
class InputImage:
    """One input: ``pixels`` uint8 (H, W, 3) RGB, or ``tensor`` float (3, H, W) in [0, 1] (exactly one is set)."""

    pixels: np.ndarray | None = None
    tensor: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the input: the size its prediction is returned at."""
        if self.pixels is not None:
            return int(self.pixels.shape[0]), int(self.pixels.shape[1])
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


def as_inputs(image: Any) -> tuple[list[InputImage], bool]:
    """The inputs of one ``predict`` call, and whether the caller gets a list back (a list or an (N, 3, H, W)
    tensor) rather than one prediction."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("predict got an empty list")
        items = [_one(item) for item in image]
        return [single for group in items for single in group], True
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        return _one(image), True
    return _one(image), False


def _one(image: Any) -> list[InputImage]:
    if isinstance(image, (str, os.PathLike)):
        return [InputImage(pixels=load_picture(image))]
    if isinstance(image, Image.Image):
        return [InputImage(pixels=picture_to_rgb(image))]
    if isinstance(image, np.ndarray):
        return [InputImage(pixels=_rgb_array(image))]
    if isinstance(image, torch.Tensor):
        return [InputImage(tensor=single) for single in _float_tensor(image)]
    raise TypeError(f"predict takes {ACCEPTED_INPUTS}; got {type(image).__name__}")


def _rgb_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise TypeError(
            f"an image array must be uint8 RGB (H, W, 3), got {array.dtype} {array.shape}; for floats in [0, 1] "
            "pass a torch tensor (3, H, W)"
        )
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image array must be (H, W, 3) RGB or (H, W) greyscale, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _float_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    if not tensor.is_floating_point():
        raise TypeError(f"an image tensor must be float RGB in [0, 1], got {tensor.dtype}")
    batch = tensor[None] if tensor.dim() == 3 else tensor
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"an image tensor must be (3, H, W) or (N, 3, H, W) RGB, got shape {tuple(tensor.shape)}")
    return list(batch.detach().float().cpu())


def to_model_batch(inputs: list[InputImage], width: int, height: int) -> torch.Tensor:
    """float32 (B, 3, height, width) in [0, 1]: pictures resized as ``images_to_batch`` does (PIL bicubic, the
    export's parity and the predict command's path), float tensors by torch's bicubic (antialiased when shrinking)."""
    batch = torch.empty(len(inputs), 3, height, width, dtype=torch.float32)
    for index, item in enumerate(inputs):
        if item.pixels is not None:
            batch[index] = torch.from_numpy(images_to_batch([item.pixels], width, height)[0])
        elif tuple(item.tensor.shape[1:]) == (height, width):
            batch[index] = item.tensor.clamp(0.0, 1.0)
        else:
            shrinking = height < item.tensor.shape[1] or width < item.tensor.shape[2]
            resized = F.interpolate(
                item.tensor[None], size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking
            )
            batch[index] = resized[0].clamp(0.0, 1.0)
    return batch
