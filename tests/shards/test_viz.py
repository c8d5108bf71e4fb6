"""Pictures: the exact turbo table, holes in a colour no map produces, pixels outside the crop dimmed and hatched, a
sequential error map, units on every colour bar, and grids with colour bars, TrueType titles, narrow row labels and a
legend that names what the grid shows."""

from __future__ import annotations

import numpy as np
import pytest

from shards.tools.pictures import (
    HOLE_COLOUR,
    HOLE_LEGEND,
    METRES,
    OUTSIDE_LEGEND,
    ColourScale,
    colorize_depth,
    error_map,
    frame_label,
    image_grid,
    picture_key,
    relative_units,
    tick_text,
    wrap,
)
from shards.tools.scenes import render_scene
from tests.shards.conftest import locate

# Google's published Turbo table (Mikhailov 2019, turbo_colormap_data), entries 0, 64, 128, 192 and 255 of 256.
PUBLISHED_TURBO = {
    0: (0.18995, 0.07176, 0.23217),
    64: (0.15844, 0.73551, 0.92305),
    128: (0.64362, 0.98999, 0.23356),
    192: (0.98360, 0.49291, 0.12849),
    255: (0.47960, 0.01583, 0.01055),
}


def _sweep(inverse: bool = True) -> np.ndarray:
    """Every colour the depth map draws: 4096 values across the range (and beyond it, clipped)."""
    values = np.linspace(-0.1, 1.1, 4096).reshape(64, 64)
    return colorize_depth(values, None, (0.0, 1.0), inverse=inverse).reshape(-1, 3).astype(int)


def test_colours_are_the_published_turbo_table() -> None:
    index = np.array(list(PUBLISHED_TURBO))
    rgb = colorize_depth((index / 255).reshape(1, -1), None, (0.0, 1.0)).reshape(-1, 3).astype(int)
    expected = np.array(list(PUBLISHED_TURBO.values())) * 255
    assert np.abs(rgb - expected).max() <= 1  # the table's floats, to 8 bits
    # Metric depth uses the reversed table, so that near is warm in both kinds.
    metric = colorize_depth(np.array([[0.0, 1.0]]), None, (0.0, 1.0), inverse=False).reshape(-1, 3).astype(int)
    assert np.abs(metric - expected[[-1, 0]]).max() <= 1


def test_holes_are_drawn_in_a_colour_no_map_produces() -> None:
    depth = np.linspace(1.0, 5.0, 48 * 64).reshape(48, 64)
    valid = np.ones_like(depth, dtype=bool)
    valid[10:20, 10:30] = False
    depth[0, 0] = np.nan  # non-finite is a hole too
    rgb = colorize_depth(depth, valid, inverse=False)
    holes = (rgb == HOLE_COLOUR).all(axis=2)
    assert holes[10:20, 10:30].all() and holes[0, 0] and holes.sum() == 10 * 20 + 1
    assert rgb.scale is not None and rgb.scale.holes and rgb.scale.units == "depth (m)"
    for colours in (_sweep(True), _sweep(False), error_map(np.linspace(0, 2, 4096).reshape(64, 64),
                                                           np.ones((64, 64), bool), "m").reshape(-1, 3).astype(int)):
        distance = np.sqrt(((colours - np.array(HOLE_COLOUR)) ** 2).sum(axis=1))
        assert distance.min() > 90, "the hole colour must stand apart from every colour of the map"


def test_error_map_is_sequential_and_not_the_depth_map() -> None:
    error = np.linspace(0.0, 1.0, 256).reshape(1, -1)
    rgb = error_map(error, np.ones_like(error, dtype=bool), "m", max_error=1.0).astype(float)
    luminance = (rgb[0] * [0.2126, 0.7152, 0.0722]).sum(axis=1)
    assert np.all(np.diff(luminance) >= -1.0) and luminance[-1] - luminance[0] > 200  # dark to bright, monotone
    depth = colorize_depth(error, None, (0.0, 1.0)).astype(float)
    assert np.abs(depth - rgb).mean() > 30
    assert error_map(error, np.ones_like(error, dtype=bool), "m").scale.units == "|error| (m)"  # the unit, always


def test_colour_scale_follows_copies_and_defaults_to_the_range_of_valid_pixels() -> None:
    depth = np.arange(100, dtype=float).reshape(10, 10)
    rgb = colorize_depth(depth)
    assert rgb.scale == ColourScale(float(np.percentile(depth, 2)), float(np.percentile(depth, 98)), "turbo",
                                    "relative inverse depth")
    assert rgb.copy().scale == rgb.scale and rgb.dtype == np.uint8 and rgb.shape == (10, 10, 3)
    flat = colorize_depth(np.full((4, 4), 2.0), units="relative inverse depth").scale
    assert (flat.low, flat.high, flat.units) == (2.0, 3.0, "relative inverse depth")  # a constant map still draws


def _row(seed: int, cell: tuple[int, int] = (128, 96), shared: bool = True) -> list[np.ndarray]:
    scene = render_scene(seed, *cell, holes=True)
    low, high = np.percentile(scene.depth[scene.valid], [2, 98])
    other = (low, high) if shared else (low, high + 1.0)
    return [scene.image, colorize_depth(scene.depth, scene.valid, (low, high), inverse=False),
            colorize_depth(scene.depth * 1.1, None, other, inverse=False)]


def test_grid_has_a_colour_bar_per_shared_scale_and_keeps_pictures_exact() -> None:
    rows = [_row(0), _row(1)]
    grid = image_grid(rows, titles=["RGB", "ground truth (m)", "prediction (m)"], cell_height=96)
    plain = image_grid(rows, titles=["RGB", "ground truth (m)", "prediction (m)"], cell_height=96, colour_bars=False)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] == plain.shape[0] and 2 * 96 < grid.shape[0] < 4 * 96
    assert 3 * 128 < plain.shape[1] < grid.shape[1] < 4 * 128  # bars widen the grid by less than a cell
    for row in rows:  # every panel pasted unresampled
        for picture in row:
            top, left, _ = locate(grid, picture, step=12)
            assert np.array_equal(grid[top : top + 96, left : left + 128], picture)
    # Two scales in a row (ground truth and prediction on different ranges) get two bars: a wider grid.
    split = image_grid([_row(0, shared=False)], cell_height=96)
    assert split.shape[1] > image_grid([_row(0)], cell_height=96).shape[1]


def test_titles_are_drawn_in_a_font_that_grows_with_the_picture() -> None:
    def title_height(cell_height: int) -> int:
        rows = [_row(0)]
        titled = image_grid(rows, titles=["RGB", "Ground", "Pred"], cell_height=cell_height).astype(int)
        blank = image_grid(rows, titles=["", "", ""], cell_height=cell_height).astype(int)
        assert titled.shape == blank.shape
        ink = np.flatnonzero((np.abs(titled - blank).sum(axis=2) > 0).any(axis=1))  # rows the titles changed
        first_panel_top = int(np.flatnonzero((titled[:, 2] != 255).any(axis=1))[0])  # no row labels: x = 0 is RGB
        assert ink.size and ink.max() < first_panel_top
        return int(ink.max() - ink.min() + 1)

    small, large = title_height(96), title_height(384)
    assert small >= 8  # capital letters at least 8 px tall: legible
    assert large > 1.8 * small


def test_row_labels_take_one_line_of_width_however_long() -> None:
    rows = [_row(0), _row(1)]
    bare = image_grid(rows, cell_height=96)
    short = image_grid(rows, row_labels=["a", "b"], cell_height=96)
    long = image_grid(rows, row_labels=["best nyu_00012 AbsRel 0.123 " * 3, "worst"], cell_height=96)
    assert 0 < short.shape[1] - bare.shape[1] <= 24
    assert long.shape[1] - bare.shape[1] <= 2 * 24  # wrapped onto at most two rotated lines, then cut with "…"


def test_a_legend_names_the_hole_colour_only_when_there_are_holes() -> None:
    scene = render_scene(0, 128, 96, holes=False)
    without = image_grid([[scene.image, colorize_depth(scene.depth, None, inverse=False)]], cell_height=96)
    assert not (without == HOLE_COLOUR).all(axis=2).any()
    holes = image_grid([_row(0)], cell_height=96)
    below = holes[96:]  # under the panels (no titles): the legend's swatch
    assert (below == HOLE_COLOUR).all(axis=2).sum() > 20
    assert holes.shape[0] > without.shape[0]


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"one \(H, W\) map"):
        colorize_depth(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="uint8"):
        image_grid([[np.zeros((8, 8, 3), dtype=np.float32)]])
    with pytest.raises(ValueError, match="at least one picture"):
        image_grid([])


def test_metres_and_relative_units_are_the_two_conventions() -> None:
    """A metric map: metres on the reversed map; a relative map: its maker's units on turbo, no number in the label;
    near is warm in both (the nearest pixel gets the same colour)."""
    depth = np.linspace(1.0, 5.0, 64).reshape(8, 8)
    metric = colorize_depth(depth, inverse=False)
    relative = colorize_depth(1.0 / depth, units=relative_units("teacher"))
    assert (metric.scale.units, metric.scale.colormap) == (METRES, "turbo_r") == ("depth (m)", "turbo_r")
    assert (relative.scale.units, relative.scale.colormap) == ("relative inverse depth (teacher units)", "turbo")
    assert np.abs(metric[0, 0].astype(int) - relative[0, 0].astype(int)).max() <= 1  # the nearest pixel: warm
    assert tick_text(24160.0) == "24160" and tick_text(0.25) == "0.25" and tick_text(2.5e-5) == "2.5e-05"


def test_outside_the_crop_is_dimmed_and_hatched_not_grey() -> None:
    depth = np.linspace(1.0, 5.0, 96 * 128).reshape(96, 128)
    valid = np.ones_like(depth, dtype=bool)
    valid[40:50, 40:50] = False  # a hole inside the crop
    outside = np.ones_like(valid)
    outside[10:86, 10:118] = False
    plain = colorize_depth(depth, valid, (1.0, 5.0), inverse=False)
    drawn = colorize_depth(depth, valid, (1.0, 5.0), inverse=False, outside=outside)
    assert np.array_equal(drawn[~outside], plain[~outside])  # inside the crop: unchanged, holes grey
    assert (drawn[40:50, 40:50] == HOLE_COLOUR).all()
    assert not (drawn[outside] == HOLE_COLOUR).all(axis=1).any()  # outside: never the hole colour
    dimmed = drawn[outside].astype(int).sum(axis=1) < plain[outside].astype(int).sum(axis=1)
    assert 0.5 < dimmed.mean() < 1.0  # mostly darker, crossed by light lines
    assert drawn.scale.holes and drawn.scale.outside
    error = error_map(depth - 3.0, valid & ~outside, "m", outside=outside)
    assert error.scale.outside and not (error[outside] == HOLE_COLOUR).all(axis=1).any()


def test_picture_key_lists_every_bar_with_its_unit_and_the_legend() -> None:
    scene = render_scene(0, 128, 96, holes=True)
    outside = np.zeros_like(scene.valid)
    outside[:8] = True
    truth = colorize_depth(scene.depth, scene.valid, (1.0, 5.0), inverse=False, outside=outside)
    prediction = colorize_depth(scene.depth * 1.1, None, (1.0, 5.0), inverse=False, outside=outside)
    error = error_map(scene.depth * 0.1, scene.valid & ~outside, "m", outside=outside)
    rows = [[scene.image, truth, prediction, error]]
    assert picture_key(rows) == {"colour_bars": ["depth (m)", "|error| (m)"], "legend": [HOLE_LEGEND, OUTSIDE_LEGEND]}
    plain = [[scene.image, colorize_depth(render_scene(0, 128, 96).depth, inverse=False)]]
    assert picture_key(plain) == {"colour_bars": ["depth (m)"], "legend": []}
    grid = image_grid(rows, cell_height=96)
    top = locate(grid, np.asarray(truth), step=4)[0]
    below = grid[top + 96 :]  # the legend's row: the hole swatch and the hatched one side by side
    assert (below == HOLE_COLOUR).all(axis=2).sum() > 20 and (below.std(axis=2) < 2).mean() > 0.5


def test_row_labels_are_names_broken_at_separators_not_cut() -> None:
    assert frame_label("tmp/abc/rgbd/rgb/0001") == "0001" and frame_label("nyu_0001") == "nyu_0001"
    lines = wrap("00019_00183_indoors_000_010\nbest, AbsRel 0.123", 150, 14)
    assert "".join(lines[:-1]) == "00019_00183_indoors_000_010" and lines[-1] == "best, AbsRel 0.123"
    assert not any(line.endswith("…") for line in lines)
    assert wrap("relative inverse depth (teacher units)", 170, 12) == ["relative inverse depth", "(teacher units)"]
