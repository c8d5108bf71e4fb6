"""The training augmentation applied on the training device to a batch of undecoded samples: the same crop box,
flip and colour jitter that :class:`distill.training.data.TrainTransform` draws, applied where the student runs.

A DataLoader worker draws the parameters with today's code and sends them with the sample's JPEG bytes and its
label, already cropped and flipped on the CPU (no GPU decoder reads the label codecs without a new dependency); the
main process decodes the batch's JPEGs at once (:func:`shards.tensor_images.decode_jpegs`), resizes every crop box
as PIL's bilinear ``Image.resize(box=...)`` does (:func:`shards.tensor_images.resample_boxes`, within 1 grey level of
PIL), flips, and jitters the colours by :func:`jitter_colours`, the formula of today's ``colour_jitter`` in torch.
The same code runs on CPU tensors (``tests/distill/test_device_augment.py`` compares it with today's transform).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shards.tensor_images import decode_jpegs, resample_boxes

#: ITU-R 601 luma weights, as in ``TrainTransform.colour_jitter``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def jitter_colours(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """float32 (B, 3, H, W) in [0, 255], in place -> [0, 1]: per sample, ``factors`` (B, 3) = (brightness, contrast,
    saturation): brightness, contrast about the mean grey, saturation about each pixel's grey; the operations and
    their order are ``TrainTransform.colour_jitter``'s."""
    factors = factors.to(device=images.device, dtype=torch.float32)
    brightness, contrast, saturation = (factors[:, index, None, None, None] for index in range(3))
    images *= brightness / 255.0
    grey = (LUMA_WEIGHTS[0] * images[:, 0] + LUMA_WEIGHTS[1] * images[:, 1] + LUMA_WEIGHTS[2] * images[:, 2])[:, None]
    mean = grey.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    images -= mean
    images *= contrast
    images += mean
    grey = (grey - mean) * contrast + mean  # the grey of the contrast-adjusted image
    images *= saturation
    images += (1 - saturation) * grey
    return images.clamp_(0.0, 1.0)


def augment_on_device(
    jpegs: Sequence[bytes | torch.Tensor],
    crop_boxes: torch.Tensor,
    flips: torch.Tensor,
    jitter: torch.Tensor,
    size: tuple[int, int],
    device: torch.device | str,
) -> torch.Tensor:
    """A batch's JPEGs and drawn parameters -> float32 (B, 3, h, w) in [0, 1] on ``device``, ``size`` = (w, h).

    ``crop_boxes`` (B, 4) (left, top, right, bottom) in source pixels, fractional; ``flips`` (B,) bool; ``jitter``
    (B, 3) the colour factors. Pictures of different sizes are resampled in groups of one size."""
    pictures = decode_jpegs(jpegs, device)  # (3, H, W) uint8 each
    width, height = size
    resized = torch.empty((len(pictures), 3, height, width), dtype=torch.uint8, device=torch.device(device))
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, picture in enumerate(pictures):
        groups.setdefault(tuple(picture.shape), []).append(index)
    for members in groups.values():
        chosen = torch.tensor(members, device=resized.device)
        stack = torch.stack([pictures[index] for index in members])
        resized[chosen] = resample_boxes(stack, crop_boxes[members], size)
    flips = flips.to(resized.device).view(-1, 1, 1, 1)
    resized = torch.where(flips, resized.flip(-1), resized)
    return jitter_colours(resized.float(), jitter)
