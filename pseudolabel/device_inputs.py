"""The labelling inputs decoded and shaped on the stage's device: JPEG bytes in, the teacher's 512x384 crops and
their stored JPEGs out, with the same scale and ``crop_box`` as :mod:`pseudolabel.preprocess` computes.

Two halves, on either side of the DataLoader:

- **In a worker** (:func:`plan_device_input`, no pixel decoded, no CUDA): today's header checks and rejects
  (``open_image``: empty, not an image, too large; too small), the scale and the crop box by today's functions, and
  the route. An input takes the CPU path (:class:`TakesCpuPath`, with a reason the summary counts) when the device
  decoder cannot take it as today's path would read it: not a JPEG (``not_jpeg``), an EXIF orientation other than 1
  (``exif_orientation``: it is applied first, docs/decisions.md, "The sample"), a JPEG today's path decodes at 1/2,
  1/4 or 1/8 scale (``jpeg_draft``: libjpeg's scaled decoding gives other pixels than a full decode and a resize,
  up to 15 grey levels on a 1600x1200 scene; such sources are at least twice the crop on both sides), or what
  :func:`shards.tensor_images.device_refusal` names (``progressive``, ``cmyk``, ``incomplete``: no end marker,
  which today's path rejects as truncated, ``unusual_jpeg``).
- **In the main process** (:func:`crops_on_device`): the batch's JPEGs decoded at once on the device, each resized
  by :func:`shards.tensor_images.resize_antialiased` (pixel for pixel today's ``resize_and_crop``: torch's uint8
  bicubic antialiased kernel) and cropped. A picture the decoder fails on, or whose size is not the header's, comes
  back as None: the caller sends it through today's path (``decode_error``), whose rejects are today's.

The same code runs on CPU tensors (``tests/pseudolabel/test_device_inputs.py`` compares it with today's path: on the
CPU the crops are today's, pixel for pixel; nvJPEG's decoding and 4:4:4 encoding differ slightly, measured by
``benchmarks/gpu_suite.py --sections decode_equivalence``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pseudolabel.config import PreprocessConfig
from pseudolabel.preprocess import InputRejected, drafts, image_geometry, open_image, preprocess_image
from shards.format import encode_jpeg
from shards.tensor_images import (
    REFUSE_UNUSUAL,
    crop,
    decode_jpegs_each,
    device_refusal,
    encode_jpegs,
    jpeg_layout,
    resize_antialiased,
)

#: Why an input takes the CPU path, besides :func:`shards.tensor_images.device_refusal`'s names.
FALLBACK_NOT_JPEG = "not_jpeg"
FALLBACK_EXIF_ORIENTATION = "exif_orientation"
FALLBACK_DECODE_ERROR = "decode_error"
FALLBACK_JPEG_DRAFT = "jpeg_draft"

#: Source pixels resized at once per group (a float copy of 4 bytes each): ~1 GB, whatever the batch size.
RESIZE_PIXEL_BUDGET = 256 * 2**20 // 4


class TakesCpuPath(Exception):
    """This input goes through today's path; ``reason`` is counted in the summary."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class DeviceInput:
    """A JPEG to decode on the device and where its crop lies (what a worker sends instead of pixels)."""

    data: bytes
    source_size: tuple[int, int]  # (W, H)
    scale: float
    scaled: tuple[int, int]  # (W, H)
    crop_box: tuple[int, int, int, int]
    extra: dict[str, Any] = field(default_factory=dict)


def plan_device_input(data: bytes, key: str, config: PreprocessConfig) -> DeviceInput:
    """Bytes of one source image -> its :class:`DeviceInput`. Raises ``InputRejected`` (today's header rejects) or
    :class:`TakesCpuPath`."""
    image = open_image(data, config.max_pixels)
    geometry = image_geometry(image, key, config)
    if image.format != "JPEG":  # MPO (several pictures in one file) included: today's path reads its first
        raise TakesCpuPath(FALLBACK_NOT_JPEG)
    if geometry.orientation != 1:
        raise TakesCpuPath(FALLBACK_EXIF_ORIENTATION)
    if config.jpeg_draft and drafts(image, geometry):
        raise TakesCpuPath(FALLBACK_JPEG_DRAFT)
    layout = jpeg_layout(data)
    if layout is None or (layout.width, layout.height) != image.size:
        raise TakesCpuPath(REFUSE_UNUSUAL)
    refusal = device_refusal(layout)
    if refusal is not None:
        raise TakesCpuPath(refusal)
    extra = {"crop": config.crop, "source_mode": image.mode, "exif_orientation": 1}
    return DeviceInput(data, geometry.source_size, geometry.scale, geometry.scaled, geometry.crop_box, extra)


def _chunks(members: list[int], pixels_each: int) -> list[list[int]]:
    """``members`` cut so that each chunk holds at most :data:`RESIZE_PIXEL_BUDGET` source pixels (at least one)."""
    step = max(1, RESIZE_PIXEL_BUDGET // max(1, pixels_each))
    return [members[start : start + step] for start in range(0, len(members), step)]


def crops_on_device(inputs: Sequence[DeviceInput], device: torch.device | str) -> list[torch.Tensor | None]:
    """Decode the inputs as one batch on ``device``, resize each to its scaled size and cut its crop box: uint8
    (3, h, w) per input, None where the decoder failed or disagreed with the header (the caller's CPU path)."""
    pictures = decode_jpegs_each([item.data for item in inputs], device)
    crops: list[torch.Tensor | None] = [None] * len(inputs)
    groups: dict[tuple[tuple[int, ...], tuple[int, int]], list[int]] = {}
    for index, (item, picture) in enumerate(zip(inputs, pictures)):
        if picture is None or (picture.shape[2], picture.shape[1]) != tuple(item.source_size):
            continue
        groups.setdefault((tuple(picture.shape), tuple(item.scaled)), []).append(index)
    for (shape, scaled), members in groups.items():
        for chunk in _chunks(members, shape[1] * shape[2]):
            stack = torch.stack([pictures[index] for index in chunk])  # (n, 3, H, W) uint8
            if (shape[2], shape[1]) != scaled:
                stack = resize_antialiased(stack, (scaled[1], scaled[0]), "bicubic")
            for position, index in enumerate(chunk):
                crops[index] = crop(stack[position], inputs[index].crop_box)
    return crops


#: The field of a worker's record that holds its :class:`DeviceInput` (the record has no pixels then).
DEVICE_INPUT = "device_input"
#: The field naming why a record took today's path (a ``FALLBACK_*`` or ``REFUSE_*`` name); absent on the device path.
FALLBACK = "fallback"


def _todays_path(record: dict[str, Any], item: DeviceInput, config: PreprocessConfig, quality: int,
                 device: torch.device) -> torch.Tensor | None:
    """A record the device decoder failed on, through today's path here: its crop (3, h, w) on ``device``, or None
    with today's reject on the record."""
    record[FALLBACK] = FALLBACK_DECODE_ERROR
    try:
        today = preprocess_image(item.data, record["key"], config)
    except InputRejected as rejected:
        record.update(reject=rejected.reason, message=str(rejected))
        return None
    record.update(jpg=encode_jpeg(today.image, quality), source_size=today.source_size, scale=today.scale,
                  crop_box=today.crop_box, extra=today.extra)
    return torch.from_numpy(today.image).to(device).permute(2, 0, 1)


def teacher_batch(records: list[dict[str, Any]], cpu_crops: torch.Tensor | None, device: torch.device,
                  config: PreprocessConfig, quality: int) -> torch.Tensor | None:
    """One batch of worker records -> the teacher's uint8 (B', h, w, 3) on ``device``, one row per accepted record
    in order: the device records decoded here (their JPEG, scale, box and extra filled in; one the decoder fails on
    goes through today's path, its reject recorded), the others' crops (``cpu_crops``, stacked by the workers in
    record order) moved over."""
    items = {index: record.pop(DEVICE_INPUT) for index, record in enumerate(records)
             if record.get(DEVICE_INPUT) is not None}
    crops = dict(zip(items, crops_on_device(list(items.values()), device)))
    decoded = [index for index, crop in crops.items() if crop is not None]
    for index, jpg in zip(decoded, encode_jpegs([crops[index] for index in decoded], quality)):
        item = items[index]
        records[index].update(jpg=jpg, source_size=item.source_size, scale=item.scale, crop_box=item.crop_box,
                              extra=item.extra)
    for index, item in items.items():
        if crops[index] is None:
            crops[index] = _todays_path(records[index], item, config, quality, device)
    rows = iter(cpu_crops.to(device, non_blocking=True)) if cpu_crops is not None else iter(())
    pictures = []
    for index, record in enumerate(records):
        if record["reject"] is None and not record.get("empty_job"):
            pictures.append(crops[index] if index in crops else next(rows).permute(2, 0, 1))
    return torch.stack(pictures).permute(0, 2, 3, 1).contiguous() if pictures else None
