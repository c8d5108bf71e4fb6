"""Any picture -> 8-bit RGB, by one rule wherever a picture is read: the teacher's input (``pseudolabel``), an
RGB-D frame (``import-rgbd``, the evaluation sources) and a picture to predict on (``distill.deploy``).

- 16-bit (and 32-bit integer) greyscale is divided by 257 and rounded to the nearest integer (``np.rint``), so
  65535 -> 255 and ``257 * k`` -> ``k``: the full 16-bit range maps onto the full 8-bit range. PIL's own
  ``convert`` clips such an image at 255 and turns it white. A tie cannot happen (257 is odd), so round-half-to-even
  and round-half-up agree.
- Alpha (RGBA, LA, PA, premultiplied modes, palettes or greyscale with a transparent colour) is composited onto
  white, the colour a viewer shows behind a transparent picture.
- CMYK, palette and greyscale convert to RGB with PIL.
- Floating-point greyscale (mode ``F``) is refused: it has no defined 8-bit scale.

EXIF orientation is the caller's choice (a photo is shown upright; an RGB-D frame must stay aligned with its depth
map), so it is not applied here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: PIL modes of 16-bit (and 32-bit integer) greyscale pictures, scaled by :func:`sixteen_to_eight_bit`.
SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Steps of 16-bit grey per step of 8-bit grey: 65535 / 255.
SIXTEEN_TO_EIGHT_BIT = 257.0
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def sixteen_to_eight_bit(values: np.ndarray) -> np.ndarray:
    """16-bit grey values -> uint8: divided by 257, rounded to the nearest integer, clipped to 0..255."""
    scaled = np.asarray(values, dtype=np.float64) / SIXTEEN_TO_EIGHT_BIT
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def has_alpha(picture: Image.Image) -> bool:
    """True for a picture with an alpha channel or a transparent palette / grey / RGB colour."""
    return picture.mode in _ALPHA_MODES or (picture.mode in ("P", "L", "RGB") and "transparency" in picture.info)


def to_rgb(picture: Image.Image) -> Image.Image:
    """Any PIL picture -> an 8-bit RGB picture by the module's rules. Raises ``ValueError`` for mode ``F`` and for a
    mode PIL cannot convert."""
    mode = picture.mode
    if mode in SIXTEEN_BIT_GREY_MODES:
        return Image.fromarray(sixteen_to_eight_bit(np.asarray(picture))).convert("RGB")
    if mode == "F":
        raise ValueError("floating-point image (mode F): no defined 8-bit scale")
    if has_alpha(picture):
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return picture
    try:
        return picture.convert("RGB")
    except (ValueError, OSError) as error:
        raise ValueError(f"cannot convert mode {mode} to RGB: {error}") from None
