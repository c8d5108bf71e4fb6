"""The one place that colour-maps depth and lays pictures out in grids (reports, TensorBoard, README, predict).

matplotlib does the drawing, so that nothing here re-implements a plotting library: its exact turbo table (Google's
published 256 entries) for depth, the sequential magma map for errors, its colour bars, and text in DejaVu Sans, the
TrueType font that ships with matplotlib (the same on every machine, legible at any size). Object API on the Agg
canvas only (no pyplot global state), so drawing works in any process or thread.

One convention for every picture (docs/evaluation.md, "Pictures"): a metric map is drawn in metres on the reversed
turbo map, a relative map in its own relative units on turbo, so near is warm in both; every colour bar names its
unit (``METRES``, :func:`relative_units`, ``|error| (<unit>)``). Pixels without a value are drawn in
``HOLE_COLOUR``, a grey that neither map produces; pixels that hold a value but lie outside the evaluation crop are
drawn dimmed and hatched; the grid's legend names each (:func:`picture_key`).

``colorize_depth`` and ``error_map`` return a ``ColouredMap``: a plain uint8 (H, W, 3) array that also remembers
its ``ColourScale``, so that ``image_grid`` draws each row's colour bars (with units) without the caller's help.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shards.format import RELATIVE_INVERSE_DEPTH
from shards.public_reader import Sample, samples

#: Colour map of depth and inverse depth (near = warm); metric depth uses its reverse, ``turbo_r``.
DEPTH_COLORMAP = "turbo"
#: Sequential colour map of error panels (0 = black, large = bright), distinct from the depth map.
ERROR_COLORMAP = "magma"
#: Pixels without a value (holes, invalid ground truth): a neutral grey, at least 98 RGB units from every colour of
#: turbo and magma (tests/shards/test_viz.py checks it), so a far surface never reads as missing data.
HOLE_COLOUR = (160, 160, 160)
#: Pixels outside the evaluation crop (a value, not scored): their colour times this, crossed by lines of
#: ``OUTSIDE_HATCH`` about 1/24 of the picture's height apart, so they read neither as data nor as holes.
OUTSIDE_DIM = 0.4
OUTSIDE_HATCH = (235, 235, 235)
HOLE_LEGEND = "no value (hole or invalid pixel)"
OUTSIDE_LEGEND = "outside the evaluation crop (not scored)"
#: The colour bar's label of a metric map (drawn in metres, whatever the model outputs).
METRES = "depth (m)"


def relative_units(source: str) -> str:
    """The colour bar's label of a relative map, in the units of what made it: ``relative_units("teacher")`` ->
    "relative inverse depth (teacher units)". Only its maker knows the scale, so no number goes into the label."""
    return f"relative inverse depth ({source} units)"


def frame_label(name: str) -> str:
    """A frame's name as a row label: the last part of its key or path (``rgbd/rgb/0001`` -> ``0001``); the full
    name stays in the reports' tables."""
    return str(name).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ColourScale:
    """How a panel's colours map back to values: ``low``..``high`` in ``units`` on the matplotlib map ``colormap``.
    Consecutive panels of one row with equal scales share one colour bar; ``holes`` and ``outside`` (the panel has
    pixels without a value, pixels outside the evaluation crop) are for the legend and not compared."""

    low: float
    high: float
    colormap: str
    units: str
    holes: bool = field(default=False, compare=False)
    outside: bool = field(default=False, compare=False)


class ColouredMap(np.ndarray):
    """A uint8 (H, W, 3) RGB array that carries its ``ColourScale`` (``scale``); otherwise a plain array."""

    scale: ColourScale | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.scale = getattr(obj, "scale", None)


def apply_colormap(
    values: np.ndarray, mask: np.ndarray, scale: ColourScale, outside: np.ndarray | None = None
) -> ColouredMap:
    """Values (H, W) -> ``ColouredMap`` on ``scale`` (clipped to its range); pixels outside ``mask`` in HOLE_COLOUR,
    pixels in ``outside`` (bool (H, W): outside the evaluation crop) dimmed and hatched. The returned scale says
    which of the two the panel has, for the legend."""
    from matplotlib import colormaps  # imported here: `python -m shards` commands that draw nothing stay quick

    t = (np.where(mask, values, scale.low) - scale.low) / (scale.high - scale.low)
    rgb = np.ascontiguousarray(colormaps[scale.colormap](np.clip(t, 0.0, 1.0), bytes=True)[..., :3])
    rgb[~mask] = HOLE_COLOUR
    outside = np.zeros_like(mask) if outside is None else np.asarray(outside, dtype=bool)
    if outside.any():
        _hatch(rgb, outside)
    coloured = rgb.view(ColouredMap)
    coloured.scale = dataclasses.replace(scale, holes=bool((~mask & ~outside).any()), outside=bool(outside.any()))
    return coloured


def _hatch(rgb: np.ndarray, outside: np.ndarray) -> None:
    """Dim the pixels of ``outside`` in place and cross them with diagonal lines, spaced for the picture's height
    (they stay visible when a grid shrinks a 480-row frame to 192 rows)."""
    period = max(6, rgb.shape[0] // 24)
    rows, columns = np.indices(outside.shape)
    lines = outside & ((rows + columns) % period < max(1, period // 4))
    rgb[outside] = (rgb[outside] * OUTSIDE_DIM).astype(np.uint8)
    rgb[lines] = OUTSIDE_HATCH


def turbo(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) on matplotlib's turbo table."""
    from matplotlib import colormaps

    return colormaps[DEPTH_COLORMAP](np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0), bytes=True)[..., :3]


def _value_range(values: np.ndarray, mask: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """The given range, or the 2nd-98th percentiles of the values in ``mask``; widened to a span of 1 when empty."""
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
    outside: np.ndarray | None = None,
) -> ColouredMap:
    """A (H, W) depth or inverse-depth map -> uint8 (H, W, 3) on turbo; invalid and non-finite pixels in HOLE_COLOUR.

    ``inverse=True``: the values are relative inverse depth (near = large = warm). For metric depth (metres) pass
    ``inverse=False`` so that near is warm as well (the reversed map). ``value_range`` fixes the scale (one scale
    for a whole row of pictures); by default the 2nd-98th percentiles of the valid pixels inside the crop.
    ``units`` labels the colour bar that ``image_grid`` draws: by default ``METRES`` or "relative inverse depth"
    (:func:`relative_units` names whose units). ``outside`` (bool (H, W)): pixels outside the evaluation crop,
    drawn dimmed and hatched.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth takes one (H, W) map, got shape {depth.shape}")
    mask = np.isfinite(depth) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(depth))
    scored = mask if outside is None else mask & ~np.asarray(outside, dtype=bool)
    low, high = _value_range(depth, scored if scored.any() else mask, value_range)
    if units is None:
        units = "relative inverse depth" if inverse else METRES
    colormap = DEPTH_COLORMAP if inverse else f"{DEPTH_COLORMAP}_r"
    return apply_colormap(depth, mask, ColourScale(low, high, colormap, units), outside)


def error_map(
    error: np.ndarray,
    valid: np.ndarray,
    units: str,
    max_error: float | None = None,
    outside: np.ndarray | None = None,
) -> ColouredMap:
    """Absolute error (H, W) -> uint8 RGB on the sequential ERROR_COLORMAP, HOLE_COLOUR where invalid, dimmed and
    hatched in ``outside``. ``units`` is the unit of what is compared ("m"): the colour bar reads "|error| (m)".
    Scale 0..max_error (default the 98th percentile of the valid pixels inside the crop)."""
    error = np.abs(np.asarray(error, dtype=np.float64))
    mask = np.asarray(valid, dtype=bool) & np.isfinite(error)
    scored = mask if outside is None else mask & ~np.asarray(outside, dtype=bool)
    if max_error is None:
        max_error = float(np.percentile(error[scored], 98)) if scored.any() else 1.0
    scale = ColourScale(0.0, max(float(max_error), 1e-12), ERROR_COLORMAP, f"|error| ({units})")
    return apply_colormap(error, mask, scale, outside)


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
    row labels (rotated, so they take one text line of width each; a line break in a label starts a new line) on
    the left. With ``colour_bars``, each run of panels of one row that share a ``ColourScale`` (``colorize_depth``,
    ``error_map``) gets a colour bar with its units after it; a legend under the grid names the hole colour and
    the hatching outside the crop when a panel has them (:func:`picture_key` lists both). Returns one uint8
    (H, W, 3) picture."""
    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one picture")
    scales = [[getattr(picture, "scale", None) for picture in row] for row in rows]
    fitted = [[_fit(picture, cell_height) for picture in row] for row in rows]
    return draw_grid(fitted, scales, titles, row_labels, cell_height, gap, HOLE_COLOUR, colour_bars)


def picture_key(rows: list[list[np.ndarray]]) -> dict[str, list[str]]:
    """What a grid of these rows says beside its pictures: ``colour_bars``, the label of each bar (row by row),
    and ``legend``, the legend's entries. Reports record it, so a test or a reader can check units without pixels."""
    scales = [[getattr(picture, "scale", None) for picture in row] for row in rows]
    return {"colour_bars": [bar.scale.units for bar in _bars(scales)], "legend": _legend_entries(scales)}


def _legend_entries(scales: list[list[object | None]]) -> list[str]:
    panels = [scale for row in scales for scale in row if scale is not None]
    entries = [HOLE_LEGEND] if any(scale.holes for scale in panels) else []
    return entries + ([OUTSIDE_LEGEND] if any(scale.outside for scale in panels) else [])


def save_picture(picture: np.ndarray, path: str) -> None:
    Image.fromarray(np.asarray(picture)).save(path)


DPI = 72
LINE_SPACING = 1.25  # of the font size, between lines of wrapped text
#: Where a word wider than a line may break: after these characters of keys, paths and file names.
_WORD_BREAK = re.compile(r"[^_/.\-]*[_/.\-]|[^_/.\-]+")
_GROUP = re.compile(r"\([^)]*\)\S*|\S+")


@functools.cache
def _renderer():
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, DPI)


@functools.cache
def _font(size: float):
    from matplotlib.font_manager import FontProperties

    return FontProperties(family="DejaVu Sans", size=size)


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: float) -> float:
    """Width in pixels of one line of ``text`` in DejaVu Sans at ``size`` pixels."""
    return _renderer().get_text_width_height_descent(text, _font(size), ismath=False)[0]


def _shorten(text: str, width: float, size: float) -> str:
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text + "…"


def _words(paragraph: str, width: float, size: float) -> list[str]:
    """The paragraph's words, a group in parentheses as one word when it fits a line: "(teacher units)"."""
    words: list[str] = []
    for token in _GROUP.findall(paragraph):
        words.extend([token] if " " not in token or text_width(token, size) <= width else token.split())
    return words


def wrap(text: str, width: float, size: float, max_lines: int = 3) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide; a line break in ``text`` starts a new
    line, a group in parentheses stays on one line when it fits one, and a word wider than a line breaks after
    ``_``, ``-``, ``/`` or ``.``. Only past ``max_lines`` lines (or a piece still too wide) is the text cut, its last
    line ending in "…"."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        first = len(lines)
        for word in _words(paragraph, width, size):
            pieces = [word] if text_width(word, size) <= width else _WORD_BREAK.findall(word)
            for number, piece in enumerate(pieces):
                joined = f"{lines[-1]}{' ' if number == 0 else ''}{piece}" if len(lines) > first else piece
                if len(lines) > first and text_width(joined, size) <= width:
                    lines[-1] = joined
                else:
                    lines.append(piece)
        if len(lines) == first:
            lines.append("")
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [_shorten(line, width, size) for line in lines] or [""]


def tick_values(low: float, high: float) -> list[float]:
    """About four round values within [low, high] for a colour bar (both ends when no round value fits)."""
    from matplotlib.ticker import MaxNLocator

    slack = 1e-9 * (high - low)
    ticks = [float(t) for t in MaxNLocator(nbins=4).tick_values(low, high) if low - slack <= t <= high + slack]
    return ticks if len(ticks) >= 2 else [low, high]


def tick_text(value: float) -> str:
    """A tick label of at most about seven characters: 0.25, 3.5, 1200, 24160 (a teacher's relative units), 2.5e-05."""
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 1e-3):
        return f"{value:.1e}"
    return f"{value:.6g}" if magnitude >= 1e3 else f"{value:.4g}"


@dataclass
class _Bar:
    """One colour bar: after column ``column`` of row ``row``, showing ``scale``."""

    row: int
    column: int
    scale: object  # shards.tools.pictures.ColourScale


def _bars(scales: list[list[object | None]]) -> list[_Bar]:
    """A bar after each run of consecutive panels of one row that share a scale."""
    bars = []
    for r, row in enumerate(scales):
        for c, scale in enumerate(row):
            if scale is not None and (c + 1 == len(row) or row[c + 1] != scale):
                bars.append(_Bar(r, c, scale))
    return bars


def _colour_bar(figure, axes, scale, size: float, cell_height: int) -> None:
    """matplotlib's colour bar of ``scale`` (a :class:`ColourScale`) in ``axes``: round ticks, its units."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FuncFormatter

    mappable = ScalarMappable(Normalize(scale.low, scale.high), scale.colormap)
    bar = figure.colorbar(mappable, cax=axes, ticks=tick_values(scale.low, scale.high),
                          format=FuncFormatter(lambda value, _: tick_text(value)))
    bar.ax.tick_params(labelsize=size, length=3, pad=2)
    bar.outline.set_linewidth(0.5)
    bar.set_label("\n".join(wrap(scale.units, cell_height - 4, size)), fontsize=size, family="DejaVu Sans",
                  labelpad=2, linespacing=LINE_SPACING)


@dataclass
class _GridLayout:
    """Where :func:`draw_grid` puts everything, in pixels from the top-left corner."""

    font: float
    small: float
    widths: list[int]
    x_starts: list[int]
    title_lines: list[list[str]]
    title_height: int
    label_lines: list[list[str]]
    label_width: int
    bars: list
    bar_width: int
    legend: list[str]
    width: int
    height: int


def _grid_layout(pictures: list[list[np.ndarray]], scales: list[list[object | None]], titles: Sequence[str] | None,
                 row_labels: Sequence[str] | None, cell_height: int, gap: int, colour_bars: bool) -> _GridLayout:
    """Text sizes, wrapped titles and row labels, colour-bar slots and the canvas size of a grid."""
    columns = max(len(row) for row in pictures)
    widths = [max(row[c].shape[1] for row in pictures if c < len(row)) for c in range(columns)]
    font = float(np.clip(max(cell_height / 13, (sum(widths) + gap * columns) / 110), 11, 36))
    small = round(font * 0.85, 1)
    line, small_line = font * LINE_SPACING, small * LINE_SPACING

    title_lines = [wrap(t, widths[c] - 4, font) for c, t in enumerate((titles or [])[:columns])]
    title_height = round(max(len(lines) for lines in title_lines) * line + gap) if title_lines else 0
    label_lines = [wrap(label, cell_height - 4, font) for label in (row_labels or [])]
    label_width = round(max(len(lines) for lines in label_lines) * line + gap) if label_lines else 0

    bars = _bars(scales) if colour_bars else []
    bar_width = max(8, round(font * 0.8))
    slot = dict.fromkeys(sorted({bar.column for bar in bars}), 0)
    for bar in bars:
        ticks = max(text_width(tick_text(t), small) for t in tick_values(bar.scale.low, bar.scale.high))
        units = len(wrap(bar.scale.units, cell_height - 4, small))
        slot[bar.column] = max(slot[bar.column], round(bar_width + 6 + ticks + 4 + units * small_line + gap))
    x_starts, x = [], label_width
    for c in range(columns):
        x_starts.append(x)
        x += widths[c] + gap + slot.get(c, 0)
    legend = _legend_entries(scales)
    edge = round(small * 0.6) if bars else 0  # the end ticks' labels stand half a line past their bar
    title_height = max(title_height, edge)
    legend_height = round(line + 2 * gap) if legend else edge
    legend_width = label_width + sum(3.4 * font + text_width(entry, font) for entry in legend)
    width, height = max(x, round(legend_width)), title_height + len(pictures) * (cell_height + gap) + legend_height
    return _GridLayout(font, small, widths, x_starts, title_lines, title_height, label_lines, label_width, bars,
                       bar_width, legend, width, height)


def draw_grid(
    pictures: list[list[np.ndarray]],
    scales: list[list[object | None]],
    titles: Sequence[str] | None,
    row_labels: Sequence[str] | None,
    cell_height: int,
    gap: int,
    hole_colour: tuple[int, int, int],
    colour_bars: bool = True,
) -> np.ndarray:
    """Pictures already ``cell_height`` high -> one uint8 (H, W, 3) grid (see :func:`image_grid`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.transforms import IdentityTransform

    layout = _grid_layout(pictures, scales, titles, row_labels, cell_height, gap, colour_bars)
    width, height, font = layout.width, layout.height, layout.font
    # 0.01 px more than the size: Agg truncates the figure's size in pixels.
    figure = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    pixels = IdentityTransform()  # text positions in display pixels, from the bottom-left corner

    def text(x: float, y_top: float, lines: list[str], **kwargs) -> None:
        figure.text(x, height - y_top, "\n".join(lines), transform=pixels, fontsize=font, family="DejaVu Sans",
                    linespacing=LINE_SPACING, **kwargs)

    for c, lines in enumerate(layout.title_lines):
        text(layout.x_starts[c] + layout.widths[c] / 2, layout.title_height / 2, lines, ha="center", va="center")
    for r, lines in enumerate(layout.label_lines[: len(pictures)]):
        y = layout.title_height + r * (cell_height + gap)
        text(layout.label_width / 2, y + cell_height / 2, lines, ha="center", va="center", rotation=90)
    for bar in layout.bars:
        top = layout.title_height + bar.row * (cell_height + gap)
        left = layout.x_starts[bar.column] + layout.widths[bar.column] + gap
        box = (left / width, (height - top - cell_height) / height, layout.bar_width / width, cell_height / height)
        _colour_bar(figure, figure.add_axes(box), bar.scale, layout.small, cell_height)
    if layout.legend:
        swatches = {
            HOLE_LEGEND: Patch(facecolor=np.asarray(hole_colour) / 255, edgecolor="black", linewidth=0.5),
            OUTSIDE_LEGEND: Patch(facecolor=np.full(3, OUTSIDE_DIM / 2), edgecolor=np.asarray(OUTSIDE_HATCH) / 255,
                                  hatch="////", linewidth=0.5),
        }
        figure.legend(handles=[swatches[entry] for entry in layout.legend], labels=layout.legend, loc="lower left",
                      bbox_to_anchor=(layout.label_width / width, 0), ncols=len(layout.legend), frameon=False,
                      prop=_font(font), borderaxespad=0.2, handlelength=1.2, columnspacing=1.0)
    canvas.draw()
    grid = np.array(np.asarray(canvas.buffer_rgba())[..., :3])
    for r, row in enumerate(pictures):  # pasted, not drawn by matplotlib: exact pixels, and 3x faster
        y = layout.title_height + r * (cell_height + gap)
        for c, picture in enumerate(row):
            grid[y : y + picture.shape[0], layout.x_starts[c] : layout.x_starts[c] + picture.shape[1]] = picture
    return grid


def sample_row(sample: Sample) -> list[np.ndarray]:
    """[image, one colour-mapped label per teacher] of one sample, all uint8 (H, W, 3); each label's colour bar names
    its unit: metres for metric depth, the teacher's own units for relative inverse depth."""
    row = [sample.image]
    for name, values in sample.labels.items():
        inverse = sample.kinds[name] == RELATIVE_INVERSE_DEPTH
        units = relative_units("teacher") if inverse else METRES
        row.append(colorize_depth(values, sample.masks[name], inverse=inverse, units=units))
    return row


def label_titles(samples: Sequence[Sample]) -> list[str]:
    """Column titles: "image", then "label" for one label, or each teacher's name when every sample has the same
    teachers (else "label 1", "label 2", ...)."""
    names = list(samples[0].labels)
    most = max(len(sample.labels) for sample in samples)
    if most == 1:
        return ["image", "label"]
    if all(list(sample.labels) == names for sample in samples):
        return ["image", *names]
    return ["image", *(f"label {index}" for index in range(1, most + 1))]


def show_samples(
    spec: str | Sequence[str], count: int = 16, out: str | Path = "grid.png", cell_height: int = 192
) -> Path:
    """Draw the first ``count`` samples of the shard set ``spec`` (in shard order) into ``out`` (a PNG): a row per
    sample, a column per teacher."""
    if count < 1:
        raise ValueError(f"--n must be at least 1, got {count}")
    drawn = list(itertools.islice(iter(samples(spec)), count))
    if not drawn:
        raise ValueError(f"no readable sample in {spec!r}")
    grid = image_grid(
        [sample_row(sample) for sample in drawn],
        titles=label_titles(drawn),
        row_labels=[frame_label(sample.key) for sample in drawn],
        cell_height=cell_height,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_picture(grid, str(out))
    return out
