"""Generated RGB-D scenes: deterministic, exact metric depth in range, depth cues in the image, holes, folders."""

from __future__ import annotations

import numpy as np
import pytest

from shards.cli import main
from shards.scenes import MAX_DEPTH, MIN_DEPTH, render_scene, scaled_intrinsics, write_scene_folder
from tests.shards.conftest import read_png


@pytest.mark.parametrize("size", [(640, 480), (256, 192), (97, 61)])
def test_scene_shapes_types_and_depth_range(size):
    width, height = size
    scene = render_scene(3, width=width, height=height)
    assert scene.image.shape == (height, width, 3) and scene.image.dtype == np.uint8
    assert scene.depth.shape == (height, width) and scene.depth.dtype == np.float32
    assert scene.valid.shape == (height, width) and scene.valid.dtype == bool and scene.valid.all()
    assert MIN_DEPTH <= scene.depth.min() and scene.depth.max() <= MAX_DEPTH
    assert scene.intrinsics == pytest.approx(scaled_intrinsics(width, height))


def test_same_seed_same_scene_other_seed_other_scene():
    first, again, other = render_scene(7, 160, 120), render_scene(7, 160, 120), render_scene(8, 160, 120)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.depth, again.depth)
    assert not np.array_equal(first.depth, other.depth)


def test_intrinsics_are_nyu_scaled():
    assert scaled_intrinsics(640, 480) == pytest.approx((518.8579, 519.4696, 325.5824, 253.7362))
    fx, fy, cx, cy = scaled_intrinsics(320, 240)
    assert (fx, cx) == pytest.approx((518.8579 / 2, 325.5824 / 2))


def test_depth_is_exact_z_depth_of_the_floor():
    """Where a pixel sees the floor, z-depth follows from the camera geometry alone: the floor's depth grows
    towards the horizon, so rows nearer the image bottom are nearer (a check of the ray parametrisation)."""
    scene = render_scene(4, 320, 240)
    column = scene.depth[:, 160]
    bottom = column[-40:]
    assert np.all(np.diff(bottom) <= 1e-4) or np.all(np.diff(bottom) >= -1e-4)  # monotone along one surface
    assert 0.5 <= bottom.min() < 4.0


def test_image_carries_depth_cues():
    """A constant predictor must be beatable from the image alone: a least-squares fit of log depth on simple
    image features (brightness, local contrast, row) over 40 scenes explains far more than the constant does."""
    features, targets = [], []
    for seed in range(40):
        scene = render_scene(seed, 64, 48)
        grey = scene.image.astype(np.float64).mean(axis=2) / 255.0
        contrast = np.abs(np.diff(grey, axis=1, prepend=grey[:, :1])) + np.abs(np.diff(grey, axis=0, prepend=grey[:1]))
        rows = np.broadcast_to(np.linspace(0, 1, 48)[:, None], grey.shape)
        saturation = scene.image.max(axis=2).astype(np.float64) - scene.image.min(axis=2)
        features.append(np.stack([grey, contrast, rows, saturation / 255.0, np.ones_like(grey)], -1).reshape(-1, 5))
        targets.append(np.log(scene.depth).reshape(-1))
    x, y = np.concatenate(features), np.concatenate(targets)
    train, test = slice(0, len(y) // 2), slice(len(y) // 2, None)
    coefficients, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
    fitted_error = np.mean((x[test] @ coefficients - y[test]) ** 2)
    constant_error = np.mean((y[train].mean() - y[test]) ** 2)
    assert fitted_error < 0.8 * constant_error


def test_holes_are_invalid_zero_depth_and_deterministic():
    scene = render_scene(5, 320, 240, holes=True)
    assert 0.0 < (~scene.valid).mean() < 0.5
    assert np.all(scene.depth[~scene.valid] == 0.0)
    assert np.all(scene.depth[scene.valid] >= MIN_DEPTH)
    clean = render_scene(5, 320, 240)
    np.testing.assert_array_equal(scene.depth[scene.valid], clean.depth[scene.valid])
    np.testing.assert_array_equal(render_scene(5, 320, 240, holes=True).valid, scene.valid)


def test_scene_folder_round_trips_depth_in_units(tmp_path):
    paths = write_scene_folder(tmp_path, 2, seed=3, width=80, height=60, depth_scale=1000.0, holes=True)
    assert [p.split("/")[-1] for p in paths] == ["scene_000003.png", "scene_000004.png"]
    image, depth = read_png(tmp_path / "rgb" / "scene_000004.png"), read_png(tmp_path / "depth" / "scene_000004.png")
    scene = render_scene(4, 80, 60, holes=True)
    assert image.dtype == np.uint8 and np.array_equal(image, scene.image)
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth == 0, ~scene.valid)
    np.testing.assert_allclose(depth[scene.valid] / 1000.0, scene.depth[scene.valid], atol=0.5e-3 + 1e-6)


def test_scene_folder_refuses_a_scale_that_overflows_16_bits(tmp_path):
    with pytest.raises(ValueError, match="depth_scale"):
        write_scene_folder(tmp_path, 1, depth_scale=10000.0)


def test_scenes_command(tmp_path, capsys):
    code = main(["scenes", "--n", "3", "--out", str(tmp_path), "--seed", "2", "--width", "64", "--height", "48",
                 "--depth-scale", "5000", "--holes"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "rgb").iterdir()) == [f"scene_00000{i}.png" for i in (2, 3, 4)]
    depth = read_png(tmp_path / "depth" / "scene_000002.png")
    scene = render_scene(2, 64, 48, holes=True)
    np.testing.assert_allclose(depth[scene.valid] / 5000.0, scene.depth[scene.valid], atol=1e-4 + 1e-6)
    assert "wrote 3 scenes" in capsys.readouterr().out
