"""Image bytes -> the uint8 RGB crop a teacher sees, or a named reject.

EXIF orientation is applied first; then the picture becomes 8-bit RGB by :mod:`shards.images`'s rule (16-bit
greyscale divided by 257 and rounded, since PIL's ``convert`` would clip it to white; alpha composited onto white;
CMYK, palette and greyscale converted; see docs/decisions.md, "The sample"); the image is
scaled by ``max(width / W, height / H)`` (bicubic, antialiased: a 512x512 source becomes 512x512, not 384x384) and a
``width`` x ``height`` box is cropped (centre, or random drawn per key from a seed). The scale and the ``crop_box``
(left, top, right, bottom) in scaled pixels, PIL's ``Image.crop`` convention, are recorded, so every label can be
traced to its source pixels.

The resampling is torch's uint8 bicubic antialiased kernel (``F.interpolate(..., antialias=True)``): the same
filter as PIL's bicubic (within 2 grey levels on fewer than 1% of pixels) at about a tenth of PIL's cost, which
matters because resizing was the largest CPU cost per image. Big JPEGs are first decoded at 1/2, 1/4 or 1/8 scale by
libjpeg (``draft``) when the result still covers the scaled size, which keeps decoding a 4000x3000 photo cheap.
"""

from __future__ import annotations

import io
import random
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from pseudolabel.config import PreprocessConfig
from shards.images import to_rgb

#: Reject reasons for inputs (labels add theirs from ``shards.format``).
REJECT_EMPTY_FILE = "empty_file"
REJECT_NOT_AN_IMAGE = "not_an_image"
REJECT_TRUNCATED = "truncated"
REJECT_UNREADABLE = "unreadable"
REJECT_TOO_SMALL = "too_small"
REJECT_TOO_LARGE = "too_large"
REJECT_UNSUPPORTED_MODE = "unsupported_mode"
REJECT_READ_ERROR = "read_error"
REJECT_DUPLICATE_KEY = "duplicate_key"
REJECT_NO_IMAGE_MEMBER = "no_image_member"

_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 or 270 degrees: width and height trade places


class InputRejected(Exception):
    """An input that yields no sample; ``reason`` is one of the ``REJECT_*`` names."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Preprocessed:
    """The teacher's input: ``image`` uint8 (height, width, 3) RGB, and where it came from in the source."""

    image: np.ndarray
    source_size: tuple[int, int]  # (W, H) after EXIF orientation
    scale: float  # max(width / W, height / H)
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) in the scaled image
    extra: dict[str, Any] = field(default_factory=dict)


def scaled_size(source_size: tuple[int, int], width: int, height: int) -> tuple[float, tuple[int, int]]:
    """The scale ``max(width / W, height / H)`` and the scaled image size (at least ``width`` x ``height``)."""
    source_width, source_height = source_size
    scale = max(width / source_width, height / source_height)
    return scale, (max(width, round(source_width * scale)), max(height, round(source_height * scale)))


def choose_crop_box(
    scaled: tuple[int, int], width: int, height: int, mode: str = "center", seed: int = 0, key: str = ""
) -> tuple[int, int, int, int]:
    """The ``crop_box`` (left, top, right, bottom) in scaled pixels: centred, or drawn from ``(seed, key)`` so a rerun
    or another process agrees."""
    spare_x, spare_y = scaled[0] - width, scaled[1] - height
    if mode == "center":
        left, top = spare_x // 2, spare_y // 2
    elif mode == "random":
        draw = random.Random(f"{seed}/{key}")  # str seeds hash with sha512: the same in every process
        left, top = draw.randint(0, spare_x), draw.randint(0, spare_y)
    else:
        raise ValueError(f"unknown crop mode {mode!r}; expected center or random")
    return left, top, left + width, top + height


def resize_and_crop(rgb: np.ndarray, scaled: tuple[int, int], crop_box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> resized to ``scaled`` (W, H) with bicubic antialiasing, then cropped to ``crop_box``
    (left, top, right, bottom)."""
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    if tuple(pixels.shape[-2:]) != (scaled[1], scaled[0]):
        pixels = F.interpolate(pixels, (scaled[1], scaled[0]), mode="bicubic", antialias=True, align_corners=False)
    left, top, right, bottom = crop_box
    return pixels[0, :, top:bottom, left:right].permute(1, 2, 0).contiguous().numpy()


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the image without decoding its pixels."""
    if not data:
        raise InputRejected(REJECT_EMPTY_FILE, "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, corrupt EXIF: handled below or harmless
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputRejected(REJECT_NOT_AN_IMAGE, "not an image PIL can identify") from None
    except Image.DecompressionBombError as error:
        raise InputRejected(REJECT_TOO_LARGE, str(error)) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputRejected(REJECT_UNREADABLE, f"{type(error).__name__}: {error}") from None
    if image.width * image.height > max_pixels:
        raise InputRejected(REJECT_TOO_LARGE, f"{image.width}x{image.height} is more than {max_pixels} pixels")
    return image


def decode_pixels(image: Image.Image) -> None:
    """Decode in place; truncated and corrupt files become named rejects (never ``LOAD_TRUNCATED_IMAGES``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except OSError as error:
        text = str(error)
        reason = REJECT_TRUNCATED if "truncated" in text or "broken data stream" in text else REJECT_UNREADABLE
        raise InputRejected(reason, f"{type(error).__name__}: {text}") from None
    except (SyntaxError, ValueError, EOFError, MemoryError, IndexError) as error:
        raise InputRejected(REJECT_UNREADABLE, f"{type(error).__name__}: {error}") from None


@dataclass(frozen=True)
class Geometry:
    """Where the crop comes from, read from the header alone: the EXIF orientation, the (W, H) after it, the scale,
    the scaled (W, H) and the ``crop_box``."""

    orientation: int
    source_size: tuple[int, int]
    scale: float
    scaled: tuple[int, int]
    crop_box: tuple[int, int, int, int]


def image_geometry(image: Image.Image, key: str, config: PreprocessConfig) -> Geometry:
    """The geometry of an opened, not yet decoded, picture (the device path reads it too); raises ``too_small``."""
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if hasattr(image, "getexif") else 1
    orientation = orientation if orientation in range(1, 9) else 1
    swapped = orientation in _SWAPPING_ORIENTATIONS
    source_size = (image.size[1], image.size[0]) if swapped else image.size
    if min(source_size) < config.min_short_side:
        raise InputRejected(
            REJECT_TOO_SMALL, f"{source_size[0]}x{source_size[1]}: shorter side below {config.min_short_side} px"
        )
    scale, scaled = scaled_size(source_size, config.width, config.height)
    crop_box = choose_crop_box(scaled, config.width, config.height, config.crop, config.crop_seed, key)
    return Geometry(orientation, source_size, scale, scaled, crop_box)


def drafts(image: Image.Image, geometry: Geometry) -> bool:
    """Let libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale where every side stays at least the scaled size
    (``draft``, set from the header, nothing decoded); True where it will."""
    stored = image.size
    swapped = geometry.orientation in _SWAPPING_ORIENTATIONS
    image.draft(None, (geometry.scaled[1], geometry.scaled[0]) if swapped else geometry.scaled)
    return image.size != stored


def preprocess_image(data: bytes, key: str, config: PreprocessConfig) -> Preprocessed:
    """Bytes of one source image -> the ``config.width`` x ``config.height`` crop. Raises :class:`InputRejected`."""
    width, height = config.width, config.height
    image = open_image(data, config.max_pixels)
    stored_size = image.size
    geometry = image_geometry(image, key, config)
    orientation, source_size, scale, crop_box = (geometry.orientation, geometry.source_size, geometry.scale,
                                                 geometry.crop_box)
    if config.jpeg_draft and image.format in ("JPEG", "MPO"):
        drafts(image, geometry)
    decode_pixels(image)
    source_mode = image.mode
    decoded_size = image.size
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    try:
        rgb = to_rgb(image)  # 16-bit grey / 257 rounded, alpha over white
    except ValueError as error:  # a mode without an 8-bit meaning
        raise InputRejected(REJECT_UNSUPPORTED_MODE, str(error)) from None
    pixels = resize_and_crop(np.array(rgb, dtype=np.uint8), geometry.scaled, crop_box)  # a writable copy for torch
    if pixels.shape != (height, width, 3):
        raise InputRejected(REJECT_UNREADABLE, f"decoded to an unexpected shape {pixels.shape}")
    extra = {"crop": config.crop, "source_mode": source_mode, "exif_orientation": orientation}
    if decoded_size != stored_size:
        extra["jpeg_draft_size"] = list(decoded_size)
    return Preprocessed(image=pixels, source_size=source_size, scale=scale, crop_box=crop_box, extra=extra)
