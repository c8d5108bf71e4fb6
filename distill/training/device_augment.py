"""The training augmentation applied on the training device: DataLoader workers read and check each sample, decode
its label (no GPU decoder reads the label codecs without a new dependency) and draw the crop box, flip and colour
jitter with today's code (:class:`distill.training.data.TrainTransform`), and send the undecoded JPEG with them; the
main process decodes the batch's JPEGs at once and applies the parameters there.

- In a worker: :func:`decode_without_image` (the reader's decoder: the labels and the json, the JPEG kept as bytes,
  its size read from its header and checked against the label's), and :func:`collate_device_samples`. A JPEG the
  device decoder should not take (:func:`shards.tensor_images.device_refusal`; never one this project wrote) is
  decoded and cropped by the worker as today, and only jittered on the device.
- In the main process: :func:`batch_on_device`: the JPEGs decoded (:func:`shards.tensor_images.decode_jpegs_each`;
  one the device decoder fails on is decoded by PIL there), each crop box resized as PIL's bilinear
  ``Image.resize(box=...)`` does (:func:`shards.tensor_images.resample_boxes`, within 1 grey level of PIL), flipped,
  and jittered by :func:`jitter_colours`, the formula of ``TrainTransform.colour_jitter`` in torch.

The same code runs on CPU tensors (``tests/distill/test_device_augment.py`` compares it with today's transform).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.utils import send_to_device

from shards.format import DecodedLabel, SampleMeta, decode_jpeg, decode_label, decode_labels
from shards.tensor_images import decode_jpegs_each, device_refusal, jpeg_layout, resample_boxes

#: ITU-R 601 luma weights, as in ``TrainTransform.colour_jitter``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Batch fields that stay on the host until :func:`batch_on_device` uses them.
HOST_FIELDS = ("jpeg", "crop", "crop_box", "flip", "jitter")


@dataclass
class UndecodedSample:
    """A training sample whose image is still its JPEG: what :class:`~shards.format.DepthSample` holds, with
    ``jpeg`` (the member's bytes as uint8) and its ``size`` (W, H) instead of the pixels."""

    key: str
    jpeg: np.ndarray
    size: tuple[int, int]
    depth: np.ndarray
    valid: np.ndarray
    meta: SampleMeta
    labels: list[DecodedLabel] = field(default_factory=list)


def decode_without_image(raw: Mapping[str, Any], all_labels: bool = True) -> UndecodedSample:
    """Raw members -> :class:`UndecodedSample` (every label, or the first alone). Raises, as ``decode_sample`` does,
    where the JPEG's header cannot be read or its size is not the label's: the reader counts the sample as damaged."""
    if all_labels:
        labels = decode_labels(raw)
        depth, valid, meta = labels[0].depth, labels[0].valid, SampleMeta.from_json(raw["json"])
    else:
        (depth, valid, meta), labels = decode_label(raw), []
    data = bytes(raw["jpg"])
    layout = jpeg_layout(data)
    if layout is None:
        size = decode_jpeg(data).shape[1::-1]  # not a JPEG stream we can walk: PIL reads it, or it is damaged
    else:
        size = (layout.width, layout.height)
    if (size[1], size[0]) != depth.shape:
        raise ValueError(f"image {size[1]}x{size[0]} and label {depth.shape} differ for {raw.get('__key__')!r}")
    jpeg = np.frombuffer(bytearray(data), dtype=np.uint8)  # writable: torch takes it without a copy
    return UndecodedSample(raw["__key__"], jpeg, (int(size[0]), int(size[1])), depth, valid, meta, labels)


def takes_device_path(sample: UndecodedSample) -> bool:
    """Whether the device decoder takes this sample's JPEG (else its worker decodes it, as today)."""
    layout = jpeg_layout(sample.jpeg.tobytes())
    return layout is not None and device_refusal(layout) is None


def collate_device_samples(samples: list[dict]) -> dict:
    """Worker sample dicts -> a batch: ``jpeg`` and ``crop`` lists (one of them None per sample), ``crop_box``
    (B, 4) float64, ``flip`` (B,) bool, ``jitter`` (B, 3) float32; target, valid, is_metric and key as
    ``collate_samples`` gives them."""
    return {
        "key": [s["key"] for s in samples],
        "jpeg": [s["jpeg"] for s in samples],
        "crop": [s["crop"] for s in samples],
        "crop_box": torch.tensor([s["crop_box"] for s in samples], dtype=torch.float64),
        "flip": torch.tensor([s["flip"] for s in samples], dtype=torch.bool),
        "jitter": torch.tensor([s["jitter"] for s in samples], dtype=torch.float32),
        "target": torch.stack([s["target"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "is_metric": torch.tensor([bool(s["is_metric"]) for s in samples]),
    }


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


def crops_on_device(jpegs: Sequence[bytes | np.ndarray | torch.Tensor], crop_boxes: torch.Tensor,
                    flips: torch.Tensor, size: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """JPEGs and their drawn boxes and flips -> uint8 (B, 3, h, w) on ``device``, ``size`` = (w, h). Pictures of
    different sizes are resampled in groups of one size; one the device decoder fails on is decoded by PIL."""
    device = torch.device(device)
    pictures = decode_jpegs_each(jpegs, device)  # (3, H, W) uint8 each
    for index, picture in enumerate(pictures):
        if picture is None:
            data = jpegs[index].numpy() if isinstance(jpegs[index], torch.Tensor) else jpegs[index]
            pictures[index] = torch.from_numpy(decode_jpeg(bytes(data)).copy()).permute(2, 0, 1).to(device)
    width, height = size
    resized = torch.empty((len(pictures), 3, height, width), dtype=torch.uint8, device=device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, picture in enumerate(pictures):
        groups.setdefault(tuple(picture.shape), []).append(index)
    for members in groups.values():
        stack = torch.stack([pictures[index] for index in members])
        resized[torch.tensor(members, device=device)] = resample_boxes(stack, crop_boxes[members], size)
    flips = flips.to(device).view(-1, 1, 1, 1)
    return torch.where(flips, resized.flip(-1), resized)


def augment_on_device(jpegs: Sequence[bytes | np.ndarray | torch.Tensor], crop_boxes: torch.Tensor,
                      flips: torch.Tensor, jitter: torch.Tensor, size: tuple[int, int],
                      device: torch.device | str) -> torch.Tensor:
    """A batch's JPEGs and drawn parameters -> float32 (B, 3, h, w) in [0, 1] on ``device`` (``crop_boxes`` (B, 4)
    (left, top, right, bottom) in source pixels, fractional; ``flips`` (B,) bool; ``jitter`` (B, 3))."""
    return jitter_colours(crops_on_device(jpegs, crop_boxes, flips, size, device).float(), jitter)


def batch_on_device(batch: dict, device: torch.device) -> dict:
    """A worker batch of :func:`collate_device_samples` -> the training batch on ``device``, ``image`` float32
    (B, 3, h, w) in [0, 1]: the JPEGs decoded, cropped and flipped here, the worker-decoded crops moved over, all
    jittered here."""
    host = {name: batch.pop(name) for name in HOST_FIELDS}
    moved = send_to_device(batch, device)
    height, width = moved["target"].shape[-2:]
    taken = [index for index, jpeg in enumerate(host["jpeg"]) if jpeg is not None]
    images = torch.empty((len(host["jpeg"]), 3, height, width), dtype=torch.uint8, device=device)
    if taken:
        crops = crops_on_device([host["jpeg"][index] for index in taken], host["crop_box"][taken],
                                host["flip"][taken], (width, height), device)
        images[torch.tensor(taken, device=device)] = crops
    for index, crop in enumerate(host["crop"]):
        if crop is not None:
            images[index] = crop.to(device, non_blocking=True)
    moved["image"] = jitter_colours(images.float(), host["jitter"])
    return moved
