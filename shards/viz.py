"""The one place that colour-maps depth and lays pictures out in grids (reports, TensorBoard, README, predict).

No plotting library: a turbo colour map from its published polynomial fit, and PIL for text.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Polynomial fit of Google's Turbo colour map (Mikhailov 2019, Apache-2.0 reference shader), per channel,
# coefficients of t^0..t^5.
_TURBO_COEFFS = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def turbo(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) on the turbo colour map."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    powers = np.stack([t**k for k in range(6)], axis=-1)  # (..., 6)
    rgb = powers @ _TURBO_COEFFS.T
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize_depth(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
    inverse: bool = True,
) -> np.ndarray:
    """A (H, W) depth or inverse-depth map -> uint8 (H, W, 3); invalid pixels black.

    ``inverse=True``: the values are inverse depth (near = large = warm). For metric depth pass
    ``inverse=False`` so that near is warm as well. ``value_range`` fixes the scale (one scale for a whole
    row of pictures); by default the 2nd-98th percentiles of the valid pixels.
    """
    depth = np.asarray(depth, dtype=np.float64)
    mask = np.isfinite(depth) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(depth))
    if value_range is None:
        if mask.any():
            low, high = np.percentile(depth[mask], [2, 98])
        else:
            low, high = 0.0, 1.0
    else:
        low, high = value_range
    span = high - low if high > low else 1.0
    t = (np.where(mask, depth, low) - low) / span
    if not inverse:
        t = 1.0 - t
    rgb = turbo(t)
    rgb[~mask] = 0
    return rgb


def error_map(error: np.ndarray, valid: np.ndarray, max_error: float | None = None) -> np.ndarray:
    """Absolute error (H, W) -> uint8 RGB, black where invalid; scale 0..max_error (default 98th percentile)."""
    error = np.abs(np.asarray(error, dtype=np.float64))
    if max_error is None:
        max_error = float(np.percentile(error[valid], 98)) if valid.any() else 1.0
    return colorize_depth(error, valid, (0.0, max(max_error, 1e-12)), inverse=True)


def _fit(picture: np.ndarray, height: int) -> np.ndarray:
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    if picture.shape[0] == height:
        return picture
    width = max(1, round(picture.shape[1] * height / picture.shape[0]))
    return np.asarray(Image.fromarray(picture).resize((width, height), Image.BILINEAR))


def image_grid(
    rows: list[list[np.ndarray]],
    titles: list[str] | None = None,
    row_labels: list[str] | None = None,
    cell_height: int = 192,
    gap: int = 4,
) -> np.ndarray:
    """Lay out uint8 RGB pictures in rows (each resized to ``cell_height``), with optional column titles and
    row labels drawn in the margins. Returns one uint8 (H, W, 3) picture."""
    fitted = [[_fit(picture, cell_height) for picture in row] for row in rows]
    columns = max(len(row) for row in fitted)
    widths = [max(row[c].shape[1] for row in fitted if c < len(row)) for c in range(columns)]
    title_height = 16 if titles else 0
    label_width = 8 * max((len(label) for label in row_labels), default=0) + 8 if row_labels else 0
    height = title_height + len(fitted) * (cell_height + gap)
    width = label_width + sum(widths) + gap * columns
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x_starts = [label_width + sum(widths[:c]) + gap * c for c in range(columns)]
    if titles:
        for c, title in enumerate(titles[:columns]):
            draw.text((x_starts[c] + 2, 2), title, fill=(0, 0, 0))
    for r, row in enumerate(fitted):
        y = title_height + r * (cell_height + gap)
        if row_labels and r < len(row_labels):
            draw.text((2, y + cell_height // 2 - 6), row_labels[r], fill=(0, 0, 0))
        for c, picture in enumerate(row):
            canvas.paste(Image.fromarray(picture), (x_starts[c], y))
    return np.asarray(canvas)


def save_picture(picture: np.ndarray, path: str) -> None:
    Image.fromarray(picture).save(path)
