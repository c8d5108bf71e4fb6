"""The TensorBoard example grid follows the pictures' one convention: metric rows in metres, relative rows in the
teacher's units, near = warm in both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.training import train
from shards.tools.pictures import METRES, picture_key, relative_units


@pytest.fixture
def grid_rows(monkeypatch: pytest.MonkeyPatch) -> list[list[np.ndarray]]:
    """The rows `_example_grid` lays out for one metric and one relative sample (the layout itself is tested with
    the pictures module)."""
    captured: list[list[np.ndarray]] = []
    monkeypatch.setattr(train, "image_grid", lambda rows, titles: captured.extend(rows) or np.zeros((1, 1, 3)))
    depth = torch.linspace(1.0, 5.0, 48 * 64).view(1, 1, 48, 64)  # metres, far at the bottom
    target = torch.cat([1 / depth, 3 * (1 / depth) + 0.5])  # inverse depth: exact, and a relative label
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[0, 0, :4] = False  # holes in the metric label
    prediction = 2 * target + 1  # right up to scale and shift
    image = torch.rand(2, 3, 48, 64)
    train._example_grid(image, target, valid, prediction, torch.tensor([True, False]), count=2)
    return captured


def test_metric_rows_are_drawn_in_metres_and_relative_rows_in_teacher_units(grid_rows) -> None:
    key = picture_key(grid_rows)
    assert key["colour_bars"] == [METRES, relative_units("teacher")]
    assert "no value (hole or invalid pixel)" in key["legend"]


def test_the_metric_label_is_its_depth_with_near_warm(grid_rows) -> None:
    metric_label, aligned = grid_rows[0][1], grid_rows[0][2]
    scale = metric_label.scale
    assert scale.colormap == "turbo_r"  # metres: small = near = warm
    assert 1.0 <= scale.low < scale.high <= 5.0  # the label's own range in metres, not in 1/m
    # the prediction is exact after alignment, so it is drawn with the label's colours
    np.testing.assert_array_equal(aligned[8:], metric_label[8:])
    assert grid_rows[1][1].scale.colormap == "turbo"
