"""Depth metrics: hand-worked values, masks, alignment and the real NYU frame's published figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.metrics import (
    DEPTH_METRICS,
    INVERSE_DEPTH_METRICS,
    batch_depth_metrics,
    depth_metrics,
    inverse_depth_metrics,
    mean_metrics,
)

# Prediction [1, 2, 3, 4] m against a flat 2 m target. Per pixel: |p - d| / d = .5, 0, .5, 1;
# (p - d)^2 = 1, 0, 1, 4; ln(p / d) = ln .5, 0, ln 1.5, ln 2; max(p/d, d/p) = 2, 1, 1.5, 2.
HAND_WORKED = {
    "abs_rel": (0.5 + 0 + 0.5 + 1) / 4,
    "sq_rel": (1 / 2 + 0 + 1 / 2 + 4 / 2) / 4,
    "rmse": math.sqrt((1 + 0 + 1 + 4) / 4),
    "rmse_log": math.sqrt((math.log(0.5) ** 2 + 0 + math.log(1.5) ** 2 + math.log(2) ** 2) / 4),
    "log10": (abs(math.log10(0.5)) + 0 + math.log10(1.5) + math.log10(2)) / 4,
    "delta1": 1 / 4,  # only the exact pixel is under 1.25
    "delta2": 2 / 4,  # 1.5 < 1.5625
    "delta3": 2 / 4,  # 2 > 1.953125
}


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prediction = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.full((2, 2), 2.0)
    return prediction, target, torch.ones(2, 2, dtype=torch.bool)


@pytest.mark.parametrize("name", sorted(HAND_WORKED))
def test_metric_equals_hand_worked_value(name: str) -> None:
    assert depth_metrics(*_hand_case())[name] == pytest.approx(HAND_WORKED[name], abs=1e-12)


def test_every_metric_is_hand_checked() -> None:
    assert set(HAND_WORKED) == set(DEPTH_METRICS)


def test_invalid_pixels_do_not_count() -> None:
    prediction, target, valid = _hand_case()
    wide_prediction = torch.cat([prediction, torch.tensor([[100.0, -5.0]])])  # garbage where invalid
    wide_target = torch.cat([target, torch.tensor([[0.0, 3.0]])])
    wide_valid = torch.cat([valid, torch.tensor([[False, False]])])
    assert depth_metrics(wide_prediction, wide_target, wide_valid) == pytest.approx(HAND_WORKED)


def test_constant_prediction_against_independent_numpy() -> None:
    rng = np.random.default_rng(1)
    target = rng.uniform(0.5, 9.0, size=(30, 40))
    valid = rng.random((30, 40)) > 0.2
    c = 2.7
    d = target[valid]
    expected = {
        "abs_rel": np.mean(np.abs(c - d) / d),
        "sq_rel": np.mean((c - d) ** 2 / d),
        "rmse": np.sqrt(np.mean((c - d) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(c) - np.log(d)) ** 2)),
        "log10": np.mean(np.abs(np.log10(c) - np.log10(d))),
        **{f"delta{k}": np.mean(np.maximum(c / d, d / c) < 1.25**k) for k in (1, 2, 3)},
    }
    got = depth_metrics(torch.full((30, 40), c), torch.from_numpy(target).float(), torch.from_numpy(valid))
    assert got == pytest.approx(expected, rel=1e-6)


def test_batch_gives_each_image_its_own_values() -> None:
    prediction, target, valid = _hand_case()
    batch = batch_depth_metrics(
        torch.stack([prediction, target]), torch.stack([target, target]), torch.stack([valid, valid])
    )
    assert batch["abs_rel"].tolist() == pytest.approx([0.5, 0.0])
    assert batch["delta1"].tolist() == pytest.approx([0.25, 1.0])


def test_image_without_valid_pixels_is_nan() -> None:
    prediction, target, _ = _hand_case()
    values = depth_metrics(prediction, target, torch.zeros(2, 2, dtype=torch.bool))
    assert all(math.isnan(value) for value in values.values())


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_non_positive_prediction_is_refused(bad: float) -> None:
    prediction, target, valid = _hand_case()
    prediction[0, 0] = bad
    with pytest.raises(ValueError, match="clamp predicted depth"):
        depth_metrics(prediction, target, valid)


def test_single_image_function_refuses_a_batch() -> None:
    prediction, target, valid = _hand_case()
    with pytest.raises(ValueError, match="batch_depth_metrics"):
        depth_metrics(prediction[None], target[None], valid[None])


# ------------------------------------------------------------------------------ training-validation variant


def _relative_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels (B, 1, H, W) with some exact zeros (ReLU teachers), predictions an exact affine map of them."""
    generator = torch.Generator().manual_seed(0)
    label = torch.rand(2, 1, 8, 12, generator=generator, dtype=torch.float64) + 0.2
    label[:, :, 0, :3] = 0.0
    scales, shifts = torch.tensor([0.5, 3.0], dtype=torch.float64), torch.tensor([1.0, -0.2], dtype=torch.float64)
    prediction = (label - shifts.view(-1, 1, 1, 1)) / scales.view(-1, 1, 1, 1)  # label = scale * pred + shift
    return prediction, label, torch.ones_like(label, dtype=torch.bool)


def test_alignment_recovers_known_scale_and_shift_exactly() -> None:
    prediction, label, valid = _relative_batch()
    values = inverse_depth_metrics(prediction, label, valid)
    for name in ("abs_rel_inv", "sq_rel_inv", "rmse_inv"):
        assert values[name].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    for name in ("delta1_inv", "delta2_inv", "delta3_inv"):
        assert values[name].tolist() == [1.0, 1.0]
    assert all(torch.isnan(values[name]).all() for name in DEPTH_METRICS)  # no metric label in this batch


def test_relative_ratio_metrics_skip_zero_labels_and_rmse_keeps_them() -> None:
    label = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    prediction = label.clone()
    prediction[0, 0, 0, 0] = 0.5  # off by .5 where the label is 0; exact elsewhere
    # Least squares over the four pixels: fit s, t to (0.5, 1, 2, 4) -> (0, 1, 2, 4), solved by hand:
    p, y = np.array([0.5, 1, 2, 4]), np.array([0.0, 1, 2, 4])
    s = ((p - p.mean()) * (y - y.mean())).sum() / ((p - p.mean()) ** 2).sum()
    t = y.mean() - s * p.mean()
    aligned = np.clip(s * p + t, 0, None)
    values = inverse_depth_metrics(prediction, label, torch.ones_like(label, dtype=torch.bool))
    assert float(values["abs_rel_inv"][0]) == pytest.approx(np.mean(np.abs(aligned[1:] - y[1:]) / y[1:]))
    assert float(values["rmse_inv"][0]) == pytest.approx(np.sqrt(np.mean((aligned - y) ** 2)))


def test_metric_labels_are_scored_in_depth_with_a_ten_metre_cap() -> None:
    depth = torch.tensor([[[[1.0, 2.0], [4.0, 20.0]]]])  # one pixel beyond the cap
    prediction = 3.0 * (1.0 / depth) + 0.5  # an exact affine map of the inverse depth
    values = inverse_depth_metrics(prediction, 1.0 / depth, torch.ones_like(depth, dtype=torch.bool), metric_label=True)
    # Alignment is exact; the 20 m pixel comes back as 1 / max(1/20, 1/10) = 10 m: |10 - 20| / 20 = .5.
    assert float(values["abs_rel"][0]) == pytest.approx(0.5 / 4)
    assert float(values["rmse"][0]) == pytest.approx(math.sqrt(100 / 4))
    assert float(values["delta3"][0]) == pytest.approx(3 / 4)
    assert math.isnan(float(values["abs_rel_inv"][0]))


def test_metric_flag_is_per_image() -> None:
    prediction, label, valid = _relative_batch()
    values = inverse_depth_metrics(prediction, label + 0.1, valid, metric_label=torch.tensor([False, True]))
    assert not math.isnan(float(values["abs_rel_inv"][0])) and math.isnan(float(values["abs_rel"][0]))
    assert math.isnan(float(values["abs_rel_inv"][1])) and not math.isnan(float(values["abs_rel"][1]))


def test_mean_metrics_averages_images_and_drops_metrics_that_never_applied() -> None:
    per_image = {"abs_rel_inv": torch.tensor([0.1, math.nan, 0.3]), "abs_rel": [math.nan, math.nan, math.nan]}
    assert mean_metrics(per_image) == {"abs_rel_inv": pytest.approx(0.2)}


def test_inverse_metric_names() -> None:
    prediction, label, valid = _relative_batch()
    assert set(inverse_depth_metrics(prediction, label, valid)) == set(INVERSE_DEPTH_METRICS + DEPTH_METRICS)


# ------------------------------------------------------------------------------------------ the real frame


def test_real_nyu_frame_matches_the_published_figures(real_sample: Path) -> None:
    depth = torch.from_numpy(np.load(real_sample / "depth.npy"))
    prediction = torch.from_numpy(np.load(real_sample / "fastdepth_pred.npy"))
    values = depth_metrics(prediction, depth, depth > 0)  # no alignment, no crop, all pixels (the README's figures)
    assert values["abs_rel"] == pytest.approx(0.1405, abs=5e-5)
    assert values["rmse"] == pytest.approx(0.618, abs=5e-4)
    assert values["delta1"] == pytest.approx(0.7773, abs=5e-5)
