"""Where ``shards.viz.image_grid`` puts each picture, title, label and colour bar, and the drawing with matplotlib.

All positions are in pixels from the top-left corner; the figure is drawn at 72 dpi so that one point is one pixel.
Pictures are pasted into the drawn canvas unresampled, text is measured with the Agg renderer before it is placed
(titles wrap to their column, row labels to the row's height), and the text size follows the picture's size, so
titles stay legible when a wide grid is shown scaled down.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DPI = 72
LINE_SPACING = 1.25  # of the font size, between lines of wrapped text
HOLE_LEGEND = "no value (hole or invalid pixel)"


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


def wrap(text: str, width: float, size: float, max_lines: int = 3) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide; the last line ends in "…" when the
    text needs more than ``max_lines`` lines, and a word wider than a line is cut the same way."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", size) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
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
    """A tick label of at most about seven characters: 0.25, 3.5, 1200, 2.5e-05."""
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 1e-3):
        return f"{value:.1e}"
    return f"{value:.4g}"


@dataclass
class _Bar:
    """One colour bar: after column ``column`` of row ``row``, showing ``scale``."""

    row: int
    column: int
    scale: object  # shards.viz.ColourScale


def _bars(scales: list[list[object | None]]) -> list[_Bar]:
    """A bar after each run of consecutive panels of one row that share a scale."""
    bars = []
    for r, row in enumerate(scales):
        for c, scale in enumerate(row):
            if scale is not None and (c + 1 == len(row) or row[c + 1] != scale):
                bars.append(_Bar(r, c, scale))
    return bars


def _colour_bar(figure, axes, scale, size: float, cell_height: int) -> None:
    """matplotlib's colour bar of ``scale`` (a ``shards.viz.ColourScale``) in ``axes``: round ticks, its units."""
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
    """Pictures already ``cell_height`` high -> one uint8 (H, W, 3) grid (see ``shards.viz.image_grid``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.transforms import IdentityTransform

    columns = max(len(row) for row in pictures)
    widths = [max(row[c].shape[1] for row in pictures if c < len(row)) for c in range(columns)]
    font = float(np.clip(max(cell_height / 13, (sum(widths) + gap * columns) / 110), 11, 36))
    small = round(font * 0.85, 1)
    line, small_line = font * LINE_SPACING, small * LINE_SPACING

    title_lines = [wrap(t, widths[c] - 4, font) for c, t in enumerate((titles or [])[:columns])]
    title_height = round(max(len(lines) for lines in title_lines) * line + gap) if title_lines else 0
    label_lines = [wrap(label, cell_height - 4, font, max_lines=2) for label in (row_labels or [])]
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
    has_holes = any(scale is not None and scale.holes for row in scales for scale in row)
    legend_height = round(line + 2 * gap) if has_holes else 0
    legend_width = label_width + 2.4 * font + text_width(HOLE_LEGEND, font) + 2 * gap if has_holes else 0
    width, height = max(x, round(legend_width)), title_height + len(pictures) * (cell_height + gap) + legend_height

    # 0.01 px more than the size: Agg truncates the figure's size in pixels.
    figure = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    pixels = IdentityTransform()  # text positions in display pixels, from the bottom-left corner

    def text(x: float, y_top: float, lines: list[str], **kwargs) -> None:
        figure.text(x, height - y_top, "\n".join(lines), transform=pixels, fontsize=font, family="DejaVu Sans",
                    linespacing=LINE_SPACING, **kwargs)

    for c, lines in enumerate(title_lines):
        text(x_starts[c] + widths[c] / 2, title_height / 2, lines, ha="center", va="center")
    for r, lines in enumerate(label_lines[: len(pictures)]):
        y = title_height + r * (cell_height + gap)
        text(label_width / 2, y + cell_height / 2, lines, ha="center", va="center", rotation=90)
    for bar in bars:
        top = title_height + bar.row * (cell_height + gap)
        left = x_starts[bar.column] + widths[bar.column] + gap
        box = (left / width, (height - top - cell_height) / height, bar_width / width, cell_height / height)
        _colour_bar(figure, figure.add_axes(box), bar.scale, small, cell_height)
    if has_holes:
        swatch = Patch(facecolor=np.asarray(hole_colour) / 255, edgecolor="black", linewidth=0.5, label=HOLE_LEGEND)
        figure.legend(handles=[swatch], loc="lower left", bbox_to_anchor=(label_width / width, 0), frameon=False,
                      prop=_font(font), borderaxespad=0.2, handlelength=1.2)
    canvas.draw()
    grid = np.array(np.asarray(canvas.buffer_rgba())[..., :3])
    for r, row in enumerate(pictures):  # pasted, not drawn by matplotlib: exact pixels, and 3x faster
        y = title_height + r * (cell_height + gap)
        for c, picture in enumerate(row):
            grid[y : y + picture.shape[0], x_starts[c] : x_starts[c] + picture.shape[1]] = picture
    return grid
