"""The authors' reference inference of each teacher family, written again from their code for the tests (never by
calling the project's functions): Depth-Anything-V2's ``infer_image`` with OpenCV, transformers' ``DPTImageProcessor``
at the settings MiDaS ran DPT with, and the least-squares aligned error the tests bound labels by."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def aligned_error(label: np.ndarray, reference: np.ndarray) -> float:
    """Median |scale * label + shift - reference| over the reference's range, scale and shift by least squares."""
    design = np.stack([label.ravel(), np.ones(label.size)], axis=1).astype(np.float64)
    (scale, shift), *_ = np.linalg.lstsq(design, reference.ravel().astype(np.float64), rcond=None)
    return float(np.median(np.abs(scale * label.ravel() + shift - reference.ravel())) / np.ptp(reference))


# --------------------------------------------------------------------- Depth-Anything-V2's infer_image, written again


def depth_anything_size(height: int, width: int, input_size: int = 518, multiple: int = 14) -> tuple[int, int]:
    """``Resize(keep_aspect_ratio=True, ensure_multiple_of=14, resize_method="lower_bound").get_size``."""
    scale_height, scale_width = input_size / height, input_size / width
    if scale_width > scale_height:
        scale_height = scale_width
    else:
        scale_width = scale_height

    def constrain_to_multiple_of(x: float, min_val: int) -> int:
        y = int(np.round(x / multiple) * multiple)
        return int(np.ceil(x / multiple) * multiple) if y < min_val else y

    return constrain_to_multiple_of(scale_height * height, input_size), constrain_to_multiple_of(
        scale_width * width, input_size
    )


def depth_anything_input(image: np.ndarray) -> np.ndarray:
    """``image2tensor``: RGB / 255, cv2 cubic to the lower-bound size, ImageNet normalisation -> (1, 3, h, w)."""
    height, width = depth_anything_size(*image.shape[:2])
    resized = cv2.resize(image / 255.0, (width, height), interpolation=cv2.INTER_CUBIC)
    normalised = (resized - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))[None].astype(np.float32)


def depth_anything_reference(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """``infer_image``: the network on that input, its map resized bilinearly (align_corners=True), no clamp."""
    with torch.no_grad():
        depth = model(pixel_values=torch.from_numpy(depth_anything_input(image))).predicted_depth
    return F.interpolate(depth[:, None], image.shape[:2], mode="bilinear", align_corners=True)[0, 0].numpy()


# ------------------------------------------------------------------------------------ transformers' DPT processor


def dpt_processor():
    """The authors' processor at the settings MiDaS ran DPT with (keep aspect ratio, 384, multiple of 32, bicubic)."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(
        size={"height": 384, "width": 384}, keep_aspect_ratio=True, ensure_multiple_of=32, resample=3,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
