"""Protocol presets as data: masks (range, crop), alignment, caps, and their command-line overrides."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from distill.align import aligned_depth
from distill.evaluation.protocols import (
    EIGEN_CROP,
    GARG_CROP,
    PRESETS,
    Protocol,
    get_protocol,
    predicted_depth,
    valid_mask,
)
from distill.metrics import batch_depth_metrics
from shards.format import inverse_depth
from shards.tools.rgbd import DIODE_SCENES


def test_reference_preset_is_the_reference_recipe() -> None:
    reference = PRESETS["reference"]
    assert reference == Protocol()  # the default
    assert (reference.depth_source, reference.depth_min, reference.depth_max) == ("raw", 0.0, 10.0)
    assert not reference.min_inclusive and not reference.max_inclusive
    assert reference.crop == (45, 471, 41, 601)
    assert (reference.input_resize, reference.output_resize) == ("bicubic", "bicubic")
    assert (reference.alignment, reference.depth_cap, reference.min_prediction) == ("lsq_inverse", 10.0, None)


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("common", {"depth_source": "inpainted", "depth_min": 1e-3, "crop": EIGEN_CROP, "alignment": "lsq_inverse"}),
        ("midas", {"depth_source": "inpainted", "depth_min": 1e-3, "crop": None, "alignment": "lsq_inverse"}),
        ("median", {"depth_source": "inpainted", "alignment": "median_depth", "min_prediction": 1e-3}),
        ("metric", {"depth_source": "inpainted", "alignment": "none", "min_prediction": 1e-3}),
    ],
)
def test_other_presets(name: str, fields: dict) -> None:
    preset = PRESETS[name]
    assert preset.name == name
    for field, value in fields.items():
        assert getattr(preset, field) == value, field


def test_eigen_crop_is_end_exclusive() -> None:
    depth = torch.full((1, 480, 640), 3.0)
    mask = valid_mask(PRESETS["reference"], depth)[0]
    assert mask[45, 41] and mask[470, 600]
    assert not mask[44, 300] and not mask[471, 300] and not mask[200, 40] and not mask[200, 601]
    assert int(mask.sum()) == (471 - 45) * (601 - 41)
    assert bool(valid_mask(PRESETS["midas"], depth).all())


@pytest.mark.parametrize(
    ("inclusive", "expected"),
    [(False, [False, False, True, True, False, False]), (True, [False, True, True, True, True, False])],
)
def test_depth_range_bounds_and_holes(inclusive: bool, expected: list[bool]) -> None:
    protocol = Protocol(crop=None, depth_min=0.5, min_inclusive=inclusive, max_inclusive=inclusive)
    depth = torch.tensor([[[0.0, 0.5, 0.6, 9.99, 10.0, float("nan")]]])
    assert valid_mask(protocol, depth)[0, 0].tolist() == expected


def test_crop_on_another_frame_size_is_refused() -> None:
    with pytest.raises(ValueError, match="Eigen crop is defined on 480x640"):
        valid_mask(PRESETS["reference"], torch.ones(1, 240, 320))


def _scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    depth = torch.rand(2, 480, 640, generator=generator, dtype=torch.float64) * 8 + 0.5
    return depth, valid_mask(PRESETS["reference"], depth)


def test_lsq_alignment_recovers_a_known_scale_and_shift_exactly() -> None:
    depth, valid = _scene()
    scale, shift = torch.tensor([2.0, 0.25], dtype=torch.float64), torch.tensor([0.1, -0.3], dtype=torch.float64)
    prediction = (1.0 / depth - shift.view(-1, 1, 1)) / scale.view(-1, 1, 1)  # 1/depth = scale * pred + shift
    predicted, got_scale, got_shift, negative = predicted_depth(
        PRESETS["reference"], prediction, "relative_inverse_depth", depth, valid
    )
    torch.testing.assert_close(got_scale, scale)
    torch.testing.assert_close(got_shift, shift)
    torch.testing.assert_close(predicted[valid], depth[valid])
    assert not negative.any()


def test_depth_read_as_inverse_depth_scores_as_a_constant_and_a_right_frame_is_unchanged() -> None:
    """Issue 24: metres read as relative inverse depth fit a negative scale; evaluation holds the scale at >= 0, so
    that frame scores as the best constant (1 / mean(1/d)) and is marked; the frame beside it, the right way round,
    keeps the free fit's figures exactly, and the shared free fit (losses, validation) still turns the first round."""
    depth, valid = _scene(3)
    prediction = torch.stack([depth[0], 0.5 / depth[1] + 2.0])  # frame 0: metres; frame 1: inverse depth
    predicted, scale, shift, negative = predicted_depth(
        PRESETS["reference"], prediction, "relative_inverse_depth", depth, valid
    )
    assert negative.tolist() == [True, False]
    d = depth[0][valid[0]].numpy()
    assert float(scale[0]) == 0.0 and float(shift[0]) == pytest.approx(np.mean(1.0 / d), rel=1e-12)
    constant, _, _, _ = predicted_depth(
        PRESETS["reference"], torch.ones_like(depth), "relative_inverse_depth", depth, valid
    )
    torch.testing.assert_close(predicted[0], constant[0])
    free, free_scale, _ = aligned_depth(prediction, inverse_depth(depth, valid), valid, 10.0)
    assert float(free_scale[0]) < 0 and float(free_scale[1]) == pytest.approx(2.0)
    torch.testing.assert_close(predicted[1], free[1])
    got = batch_depth_metrics(predicted, depth, valid)
    turned = batch_depth_metrics(free, depth, valid)
    assert float(got["abs_rel"][0]) > float(turned["abs_rel"][0])  # no better than a constant, worse than turned


def test_aligned_inverse_depth_is_capped_at_ten_metres() -> None:
    depth = torch.tensor([[[2.0, 4.0, 20.0, 1.0]]], dtype=torch.float64)
    valid = torch.ones_like(depth, dtype=torch.bool)
    predicted, _, _, _ = predicted_depth(Protocol(crop=None), 1.0 / depth, "relative_inverse_depth", depth, valid)
    assert predicted[0, 0].tolist() == pytest.approx([2.0, 4.0, 10.0, 1.0])


def test_constant_prediction_under_the_reference_protocol() -> None:
    depth, valid = _scene(1)
    prediction = torch.full_like(depth, 0.7)
    predicted, scale, _, negative = predicted_depth(
        PRESETS["reference"], prediction, "relative_inverse_depth", depth, valid
    )
    got = batch_depth_metrics(predicted, depth, valid)
    assert not negative.any()  # a constant's zero scale is not a negative one
    for image in range(2):
        # Independently: the best constant inverse depth is the mean of 1/d, so the prediction is its inverse.
        d = depth[image][valid[image]].numpy()
        c = min(1.0 / np.mean(1.0 / d), 10.0)
        assert float(scale[image]) == 0.0
        assert float(got["abs_rel"][image]) == pytest.approx(np.mean(np.abs(c - d) / d), rel=1e-9)
        assert float(got["rmse"][image]) == pytest.approx(np.sqrt(np.mean((c - d) ** 2)), rel=1e-9)
        assert float(got["delta1"][image]) == pytest.approx(np.mean(np.maximum(c / d, d / c) < 1.25))


def test_median_scaling_in_depth() -> None:
    depth = torch.tensor([[[1.0, 2.0, 3.0, 40.0]]], dtype=torch.float64)
    valid = torch.tensor([[[True, True, True, False]]])
    prediction = torch.tensor([[[0.5, 0.25, 0.2, 0.01]]], dtype=torch.float64)  # inverse: depths 2, 4, 5, 100
    predicted, scale, _, _ = predicted_depth(PRESETS["median"], prediction, "relative_inverse_depth", depth, valid)
    assert float(scale[0]) == pytest.approx(2.0 / 4.0)  # median(gt) / median(pred) over the valid pixels
    assert predicted[0, 0].tolist() == pytest.approx([1.0, 2.0, 2.5, 10.0])  # 100 * .5 capped at 10


def test_metric_predictions_are_only_clamped() -> None:
    depth = torch.ones(1, 1, 3, dtype=torch.float64)
    prediction = torch.tensor([[[0.0, 3.0, 12.0]]], dtype=torch.float64)
    predicted, scale, shift, _ = predicted_depth(
        PRESETS["metric"], prediction, "metric_depth", depth, torch.ones_like(depth, dtype=torch.bool)
    )
    assert predicted[0, 0].tolist() == pytest.approx([1e-3, 3.0, 10.0])
    assert (float(scale[0]), float(shift[0])) == (1.0, 0.0)


def test_lsq_on_a_metric_prediction_aligns_its_inverse() -> None:
    depth, valid = _scene(2)
    predicted, _, _, _ = predicted_depth(PRESETS["reference"], 3.0 * depth, "metric_depth", depth, valid)
    torch.testing.assert_close(predicted[valid], depth[valid])


def test_overrides_keep_the_preset_and_say_so() -> None:
    assert get_protocol("reference") is PRESETS["reference"]
    custom = get_protocol("reference", crop=None, depth_cap=80.0)
    assert custom.name == "reference+custom" and custom.crop is None and custom.depth_cap == 80.0
    assert dataclasses.replace(custom, name="reference", crop=EIGEN_CROP, depth_cap=10.0) == PRESETS["reference"]
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("kitti")
    with pytest.raises(ValueError, match="alignment"):
        get_protocol("reference", alignment="affine")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {}),
        (["--crop", "none"], {"crop": None}),
        (["--crop", "10,20,30,40", "--alignment", "none"], {"crop": (10, 20, 30, 40), "alignment": "none"}),
        (["--depth_source", "inpainted", "--depth_min", "0.001"], {"depth_source": "inpainted", "depth_min": 0.001}),
        (["--max_inclusive", "true", "--min_prediction", "none"], {"max_inclusive": True, "min_prediction": None}),
        (["--depth_cap", "80", "--input_resize", "bilinear"], {"depth_cap": 80.0, "input_resize": "bilinear"}),
        (["--crop", "none", "--crop_fraction", "garg"], {"crop": None, "crop_fraction": GARG_CROP}),
        (["--crop_fraction", "0.1,0.9,0,1", "--crop", "none"], {"crop_fraction": (0.1, 0.9, 0.0, 1.0), "crop": None}),
        (["--scenes", "indoors,outdoor", "--depth_scale", "kitti"], {"scenes": DIODE_SCENES, "depth_scale": 256.0}),
    ],
)
def test_every_field_is_overridable_from_the_command_line(argv: list[str], expected: dict) -> None:
    overrides = _overrides(argv)
    assert overrides == expected
    protocol = get_protocol("reference", **overrides)
    for field, value in expected.items():
        assert getattr(protocol, field) == value


def _overrides(argv: list[str]) -> dict:
    from distill.evaluation.evaluate import COMMAND

    config, _ = COMMAND.parse(["--model", "m", "--data", "d", "--out", "o", *argv])
    return config.overrides()


def test_each_protocol_field_has_a_key() -> None:
    from distill.evaluation.evaluate import ProtocolOptions

    keys = {field.name for field in dataclasses.fields(ProtocolOptions)}
    for field in dataclasses.fields(Protocol):
        if field.name != "name":
            assert field.name in keys, field.name
