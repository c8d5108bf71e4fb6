"""Images as tensors on any device: JPEG decoding and encoding (every call to an image codec on tensors is here),
the antialiased resize and the box resample, so both stages can do their per-pixel work where the model runs.

- **Codecs.** torchvision's ``decode_jpeg`` / ``encode_jpeg``: on a CUDA device nvJPEG (batched; the hardware decoder
  where the GPU has one), on the CPU libjpeg-turbo, whose output equals PIL's (decoded pixels identical, encoded
  bytes identical at the same quality: ``tests/test_tensor_images.py``). torchvision deprecated these calls in 0.29
  in favour of TorchCodec; this module is the one place that moves when that happens, and it silences that
  deprecation warning alone. nvJPEG encodes with 4:4:4 chroma (torchvision fixes it), PIL and libjpeg with 4:2:0:
  a GPU-encoded crop is closer to the pixels it encodes and about 14% larger (docs/pseudolabel.md, "Decode device").
- **What nvJPEG takes.** :func:`jpeg_layout` walks a JPEG's marker segments (no pixel decoded, microseconds) and
  :func:`device_refusal` names why the device decoder should not take a file: progressive or other non-baseline
  frames, CMYK / YCCK or other than 1 or 3 components, not 8-bit, or no end-of-image marker after the scan (a cut
  file, which libjpeg calls truncated). The caller sends those through its CPU path.
- **Resampling, exactly as the CPU path does it.** Antialiased resampling as separable weight matrices applied by
  two batched matrix products, width first, rounded to uint8 in between, with the windows and the fixed-point
  weights of the CPU kernels: :func:`resize_antialiased` gives what torch's CPU uint8 ``F.interpolate(...,
  antialias=True)`` gives (pixel for pixel: its weights have 15 significant bits, so float32 sums are exact), where a
  float ``F.interpolate`` on the GPU misses it by up to 7 grey levels next to sharp edges (the first pass's
  overshoot, clipped by the uint8 kernel); :func:`resample_boxes` is PIL's ``Image.resize(size, BILINEAR, box=...)``
  for a batch of fractional boxes (the training crop; within 1 grey level, equal on all but ~0.03% of pixels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.io import ImageReadMode
from torchvision.io import decode_jpeg as _decode_jpeg
from torchvision.io import encode_jpeg as _encode_jpeg

warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
)

# ------------------------------------------------------------------------------------------------- what nvJPEG takes

#: Why a JPEG goes to the CPU path instead of the device decoder (:func:`device_refusal`).
REFUSE_PROGRESSIVE = "progressive"
REFUSE_CMYK = "cmyk"
REFUSE_INCOMPLETE = "incomplete"
REFUSE_UNUSUAL = "unusual_jpeg"

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_BASELINE_FRAMES = (0xC0, 0xC1)  # sequential, Huffman: what nvJPEG's batched decoder is built for
_PROGRESSIVE_FRAMES = (0xC2, 0xC6, 0xCA)
_OTHER_FRAMES = (0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCD, 0xCE, 0xCF)  # lossless, hierarchical, arithmetic
_STANDALONE = (0x01, *range(0xD0, 0xD8))  # TEM and RSTn carry no length


@dataclass(frozen=True)
class JpegLayout:
    """A JPEG's frame as its markers state it: ``frame`` is the SOF marker (0xC0 baseline, 0xC2 progressive, ...);
    ``adobe_transform`` the APP14 colour transform (None without an Adobe segment); ``complete``: an end-of-image
    marker follows the first scan."""

    width: int
    height: int
    components: int
    precision: int
    frame: int
    adobe_transform: int | None
    complete: bool


def jpeg_layout(data: bytes) -> JpegLayout | None:
    """Walk the marker segments up to the first scan; None where ``data`` is not a JPEG stream that can be walked.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so an end-of-image marker
    after the scan's start can only be the image's end; an embedded EXIF thumbnail's markers sit inside the APP1
    segment, before the scan."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != _SOI:
        return None
    position, frame, adobe = 2, None, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if marker in (*_BASELINE_FRAMES, *_PROGRESSIVE_FRAMES, *_OTHER_FRAMES) and len(segment) >= 6:
            frame = (marker, segment[0], int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"),
                     segment[5])
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        elif marker == _SOS:
            if frame is None:
                return None
            kind, precision, height, width, components = frame
            complete = data.rfind(b"\xff\xd9") >= position + 2 + length  # searched from the end: quick
            return JpegLayout(width, height, components, precision, kind, adobe, complete)
        elif marker == _EOI:
            return None
        position += 2 + length
    return None


def device_refusal(layout: JpegLayout) -> str | None:
    """Why the device decoder should not take this JPEG (a ``REFUSE_*`` name), or None."""
    if layout.frame in _PROGRESSIVE_FRAMES:
        return REFUSE_PROGRESSIVE
    if layout.components == 4:
        return REFUSE_CMYK
    if not layout.complete:
        return REFUSE_INCOMPLETE
    rgb_coded = layout.components == 3 and layout.adobe_transform == 0  # RGB stored without YCbCr conversion
    if layout.frame not in _BASELINE_FRAMES or layout.components not in (1, 3) or layout.precision != 8 or rgb_coded:
        return REFUSE_UNUSUAL
    if layout.width < 1 or layout.height < 1:
        return REFUSE_UNUSUAL
    return None


# ------------------------------------------------------------------------------------------------------ the codecs


def byte_tensor(data: bytes | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Encoded bytes -> a 1-D uint8 CPU tensor (a copy of ``bytes``; tensors and arrays as they are)."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        return torch.from_numpy(data if data.flags.writeable else data.copy())
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpegs(data: Sequence[bytes | np.ndarray | torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """JPEGs -> uint8 (3, H, W) RGB tensors on ``device`` (greyscale repeated), decoded as one batch on a GPU.
    Raises ``RuntimeError`` when any of them fails (nvJPEG returns nothing for the batch then)."""
    device = torch.device(device)
    encoded = [byte_tensor(item) for item in data]
    if not encoded:
        return []
    return _decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def decode_jpegs_each(
    data: Sequence[bytes | np.ndarray | torch.Tensor], device: torch.device | str
) -> list[torch.Tensor | None]:
    """As :func:`decode_jpegs`, but a batch that fails is decoded again one by one and only the failing ones are
    None."""
    try:
        return list(decode_jpegs(data, device))
    except RuntimeError:
        pictures: list[torch.Tensor | None] = []
        for item in data:
            try:
                pictures.append(decode_jpegs([item], device)[0])
            except RuntimeError:
                pictures.append(None)
        return pictures


def encode_jpegs(images: torch.Tensor | Sequence[torch.Tensor], quality: int) -> list[bytes]:
    """uint8 (B, 3, H, W) (or a list of (3, H, W)) on any device -> JPEG bytes, encoded on that device."""
    pictures = [image.contiguous() for image in images]
    if not pictures:
        return []
    encoded = _encode_jpeg(pictures, quality=quality)
    if encoded[0].is_cuda:  # one copy to the host, not one per picture
        sizes = [int(item.numel()) for item in encoded]
        joined = torch.cat(list(encoded)).cpu().numpy()
        ends = np.cumsum(sizes)
        return [joined[end - size : end].tobytes() for size, end in zip(sizes, ends)]
    return [item.numpy().tobytes() for item in encoded]


# ------------------------------------------------------------------------------------------------------ resampling

#: Filter support in source pixels at scale 1: PIL's and torch's triangle and Keys' bicubic with a = -0.5.
SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}
PIL_WEIGHT_BITS = 22  # fractional bits of PIL's 8-bit resampling weights (32 - 8 - 2)
_TORCH_WEIGHT_LIMIT = 1 << 15  # torch's uint8 kernel keeps its weights in int16


def _filter(kernel: str, distance: torch.Tensor) -> torch.Tensor:
    x = distance.abs()
    if kernel == "bilinear":
        return (1.0 - x).clamp(min=0.0)
    a = -0.5  # Keys' cubic, written in the order of PIL's and torch's C code (the same float64 rounding)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _torch_weight_bits(largest: torch.Tensor) -> torch.Tensor:
    """torch's uint8 kernel's fractional bits for weights whose largest is ``largest``: the most that keep it in
    int16 (``_compute_index_ranges_int16_weights``)."""
    bits = torch.zeros_like(largest)
    for candidate in range(22):
        fits = torch.trunc(0.5 + largest * float(1 << (candidate + 1))) < _TORCH_WEIGHT_LIMIT
        bits = torch.where(fits, float(candidate + 1), bits)
    return bits


def resampling_weights(
    start: torch.Tensor, stop: torch.Tensor, source: int, count: int, kernel: str, bits: int | None = PIL_WEIGHT_BITS
) -> torch.Tensor:
    """Antialiased resampling weights along one axis for a batch of spans [start, stop) (B,) of a ``source``-pixel
    axis onto ``count`` output pixels: float32 (B, count, source), each row the filter over its window, normalised,
    and rounded to ``bits`` fractional bits (PIL: 22; None: torch's uint8 kernel's rule). Pillow's
    ``precompute_coeffs`` / ``normalize_coeffs_8bpc`` and torch's ``_compute_indices_min_size_weights_aa`` compute
    the same windows: the filter widened by the scale when shrinking, the window's ends rounded by C's truncation."""
    start, stop = start.to(torch.float32), stop.to(torch.float32)  # PIL passes the box as C floats
    scale = (stop - start).double() / count  # (B,); the difference taken in float32, as in PIL
    start = start.double()
    filter_scale = scale.clamp(min=1.0)
    support = SUPPORT[kernel] * filter_scale
    index = torch.arange(count, dtype=torch.float64, device=start.device)
    centre = start[:, None] + (index[None] + 0.5) * scale[:, None]  # (B, count)
    first = torch.trunc(centre - support[:, None] + 0.5).clamp(min=0)  # C's (int) cast truncates
    end = torch.trunc(centre + support[:, None] + 0.5).clamp(max=source)
    pixel = torch.arange(source, dtype=torch.float64, device=start.device)[None, None]  # (1, 1, source)
    inside = (pixel >= first[..., None]) & (pixel < end[..., None])
    weights = _filter(kernel, (pixel - centre[..., None] + 0.5) / filter_scale[:, None, None]) * inside
    total = weights.sum(-1, keepdim=True)
    weights = torch.where(total != 0, weights / torch.where(total != 0, total, 1.0), weights)
    if bits is None:
        unit = torch.exp2(_torch_weight_bits(weights.flatten(1).amax(1)))[:, None, None]
    else:
        unit = torch.tensor(float(1 << bits), dtype=torch.float64, device=start.device)
    fixed = torch.trunc(weights * unit + torch.where(weights < 0, -0.5, 0.5))
    return (fixed / unit).to(torch.float32)


def _round_to_uint8(values: torch.Tensor) -> torch.Tensor:
    """The fixed-point kernels' rounding: add a half, floor, clip to 0..255 (kept in float)."""
    return values.add_(0.5).floor_().clamp_(0, 255)


def _resample(images: torch.Tensor, across: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) with weights ``across`` (B or 1, w, W) and ``down`` (B or 1, h, H) -> uint8 (B, C, h, w):
    width first, rounded to uint8, then height (the order and rounding of PIL's and torch's uint8 kernels). Shared
    weights (a first dimension of 1) make one large matrix product; per-picture weights a batched one, neither
    copying the weights per channel."""
    batch, channels, height, width = images.shape
    rows = images.float().reshape(batch, channels * height, width)
    if across.shape[0] == 1:
        wide = rows @ across[0].T  # (B, C * H, w)
    else:
        wide = torch.bmm(rows, across.transpose(1, 2))
    wide = _round_to_uint8(wide)
    out_width = wide.shape[-1]
    columns = wide.reshape(batch, channels, height, out_width).transpose(1, 2).reshape(batch, height, -1)
    tall = down[0] @ columns if down.shape[0] == 1 else torch.bmm(down, columns)  # (B, h, C * w)
    tall = _round_to_uint8(tall).reshape(batch, -1, channels, out_width).transpose(1, 2)
    return tall.to(torch.uint8).contiguous()


def resize_antialiased(images: torch.Tensor, size: tuple[int, int], kernel: str = "bicubic") -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, h, w), ``size`` = (h, w): what ``F.interpolate(images, size, mode=kernel,
    antialias=True)`` gives on a CPU uint8 tensor (torch's fixed-point weights, width first, uint8 in between), on
    any device. The weights have at most 15 significant bits, so the float32 products and sums are exact unless
    TF32 matrix products are switched on (``torch.backends.cuda.matmul.allow_tf32``; off by default)."""
    height, width = images.shape[-2:]
    zero = torch.zeros(1, dtype=torch.float64, device=images.device)
    across = resampling_weights(zero, zero + width, width, size[1], kernel, bits=None)
    down = resampling_weights(zero, zero + height, height, size[0], kernel, bits=None)
    return _resample(images, across, down)


def resample_boxes(images: torch.Tensor, crop_boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, C, H, W) and ``crop_boxes`` (B, 4) (left, top, right, bottom), fractional source pixels -> uint8
    (B, C, h, w), ``size`` = (w, h): each box resized as PIL's ``Image.resize(size, BILINEAR, box=crop_box)`` does it,
    all in two batched matrix products on the images' device. PIL's 22-bit weights make float32 products inexact:
    within 1 grey level of PIL, equal on all but about 0.03% of pixels (float64: equal everywhere)."""
    width, height = size
    boxes = crop_boxes.to(device=images.device, dtype=torch.float64)
    across = resampling_weights(boxes[:, 0], boxes[:, 2], images.shape[-1], width, "bilinear")  # (B, w, W)
    down = resampling_weights(boxes[:, 1], boxes[:, 3], images.shape[-2], height, "bilinear")  # (B, h, H)
    return _resample(images, across, down)


def crop(images: torch.Tensor, crop_box: tuple[int, int, int, int]) -> torch.Tensor:
    """(..., H, W) -> the integer ``crop_box`` (left, top, right, bottom), a view."""
    left, top, right, bottom = crop_box
    if left < 0 or top < 0 or right > images.shape[-1] or bottom > images.shape[-2]:
        raise ValueError(f"crop_box {crop_box} outside a {images.shape[-1]}x{images.shape[-2]} picture")
    return images[..., top:bottom, left:right]
