"""The one place that colour-maps depth and lays pictures out in grids (reports, TensorBoard, README, predict).

matplotlib does the drawing, so that nothing here re-implements a plotting library: its exact turbo table (Google's
published 256 entries) for depth, the sequential magma map for errors, its colour bars, and text in DejaVu Sans, the
TrueType font that ships with matplotlib (the same on every machine, legible at any size). Pixels without a value
are drawn in ``HOLE_COLOUR``, a grey that neither map produces, and the grid's legend says so. Only matplotlib's
object API on the Agg canvas is used (no pyplot global state), so drawing works in any process or thread.

``colorize_depth`` and ``error_map`` return a ``ColouredMap``: a plain uint8 (H, W, 3) array that also remembers
its ``ColourScale``, so that ``image_grid`` draws each row's colour bars (with units) without the caller's help.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from shards.viz_layout import draw_grid

#: Colour map of depth and inverse depth (near = warm); metric depth uses its reverse, ``turbo_r``.
DEPTH_COLORMAP = "turbo"
#: Sequential colour map of error panels (0 = black, large = bright), distinct from the depth map.
ERROR_COLORMAP = "magma"
#: Pixels without a value (holes, invalid ground truth): a neutral grey, at least 98 RGB units from every colour of
#: turbo and magma (tests/shards/test_viz.py checks it), so a far surface never reads as missing data.
HOLE_COLOUR = (160, 160, 160)


@dataclass(frozen=True)
class ColourScale:
    """How a panel's colours map back to values: ``low``..``high`` in ``units`` on the matplotlib map ``colormap``.
    Consecutive panels of one row with equal scales share one colour bar (``holes`` is not compared)."""

    low: float
    high: float
    colormap: str
    units: str
    holes: bool = field(default=False, compare=False)


class ColouredMap(np.ndarray):
    """A uint8 (H, W, 3) RGB array that carries its ``ColourScale`` (``scale``); otherwise a plain array."""

    scale: ColourScale | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.scale = getattr(obj, "scale", None)


def apply_colormap(values: np.ndarray, mask: np.ndarray, scale: ColourScale) -> ColouredMap:
    """Values (H, W) -> ``ColouredMap`` on ``scale`` (clipped to its range); pixels outside ``mask`` in HOLE_COLOUR."""
    from matplotlib import colormaps  # imported here: `python -m shards` commands that draw nothing stay quick

    t = (np.where(mask, values, scale.low) - scale.low) / (scale.high - scale.low)
    rgb = colormaps[scale.colormap](np.clip(t, 0.0, 1.0), bytes=True)[..., :3]
    rgb[~mask] = HOLE_COLOUR
    coloured = np.ascontiguousarray(rgb).view(ColouredMap)
    coloured.scale = scale
    return coloured


def turbo(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) on matplotlib's turbo table."""
    from matplotlib import colormaps

    return colormaps[DEPTH_COLORMAP](np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0), bytes=True)[..., :3]


def _value_range(values: np.ndarray, mask: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """The given range, or the 2nd-98th percentiles of the valid values; widened to a span of 1 when empty."""
    if value_range is None:
        low, high = np.percentile(values[mask], [2, 98]) if mask.any() else (0.0, 1.0)
    else:
        low, high = value_range
    low, high = float(low), float(high)
    return (low, high) if high > low else (low, low + 1.0)


def colorize_depth(
    depth: np.ndarray,
    valid: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
    inverse: bool = True,
    units: str | None = None,
) -> ColouredMap:
    """A (H, W) depth or inverse-depth map -> uint8 (H, W, 3) on turbo; invalid and non-finite pixels in HOLE_COLOUR.

    ``inverse=True``: the values are inverse depth (near = large = warm). For metric depth pass ``inverse=False``
    so that near is warm as well (the reversed map). ``value_range`` fixes the scale (one scale for a whole row of
    pictures); by default the 2nd-98th percentiles of the valid pixels. ``units`` labels the colour bar that
    ``image_grid`` draws: by default "depth (m)", or "inverse depth" (pass "relative inverse depth" or
    "inverse depth (1/m)" when known).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth takes one (H, W) map, got shape {depth.shape}")
    mask = np.isfinite(depth) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(depth))
    low, high = _value_range(depth, mask, value_range)
    if units is None:
        units = "inverse depth" if inverse else "depth (m)"
    colormap = DEPTH_COLORMAP if inverse else f"{DEPTH_COLORMAP}_r"
    return apply_colormap(depth, mask, ColourScale(low, high, colormap, units, holes=not mask.all()))


def error_map(
    error: np.ndarray, valid: np.ndarray, max_error: float | None = None, units: str = "|error|"
) -> ColouredMap:
    """Absolute error (H, W) -> uint8 RGB on the sequential ERROR_COLORMAP, HOLE_COLOUR where invalid; scale
    0..max_error (default the 98th percentile of the valid pixels). ``units`` labels the colour bar ("|error| (m)")."""
    error = np.abs(np.asarray(error, dtype=np.float64))
    mask = np.asarray(valid, dtype=bool) & np.isfinite(error)
    if max_error is None:
        max_error = float(np.percentile(error[mask], 98)) if mask.any() else 1.0
    scale = ColourScale(0.0, max(float(max_error), 1e-12), ERROR_COLORMAP, units, holes=not mask.all())
    return apply_colormap(error, mask, scale)


def _fit(picture: np.ndarray, height: int) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=2)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"image_grid draws uint8 (H, W, 3) RGB pictures, got {picture.dtype} {picture.shape}")
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
    colour_bars: bool = True,
) -> np.ndarray:
    """Lay out uint8 RGB pictures in rows (each resized to ``cell_height``), with optional column titles above and
    row labels (rotated, so they take one text line of width) on the left. With ``colour_bars``, each run of
    panels of one row that share a ``ColourScale`` (``colorize_depth``, ``error_map``) gets a colour bar with its
    units after it; a legend under the grid names the hole colour when a panel has holes. Returns one uint8
    (H, W, 3) picture."""
    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one picture")
    scales = [[getattr(picture, "scale", None) for picture in row] for row in rows]
    fitted = [[_fit(picture, cell_height) for picture in row] for row in rows]
    return draw_grid(fitted, scales, titles, row_labels, cell_height, gap, HOLE_COLOUR, colour_bars)


def save_picture(picture: np.ndarray, path: str) -> None:
    Image.fromarray(np.asarray(picture)).save(path)
