"""Losses: invariances, zero at a perfect prediction, invalid pixels ignored, non-finite guard, every loss trains."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from distill.training.config import LossConfig
from distill.training.losses import LOSSES, build_loss, gradient_matching, target_in_space, trimmed_sum

ALIGNED_LOSSES = ("ssi", "ssi_lsq")


def _maps(seed: int = 0, batch: int = 3, height: int = 24, width: int = 32):
    """Smooth positive inverse-depth labels, a prediction that differs from them, a mask with holes, an image."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    phase = torch.rand(batch, 1, 1, 1, generator=generator) * 3
    target = 0.5 + 0.3 * torch.sin(3 * x + phase) * torch.cos(2 * y) + y
    prediction = target + 0.2 * torch.rand(batch, 1, height, width, generator=generator)
    valid = torch.rand(batch, 1, height, width, generator=generator) > 0.2
    image = torch.rand(batch, 3, height, width, generator=generator)
    return prediction, target, valid, image


def _loss(name: str, prediction, target, valid, image) -> dict[str, torch.Tensor]:
    return build_loss(LossConfig(name=name))(prediction, target, valid, image=image)


@pytest.mark.parametrize("name", ALIGNED_LOSSES)
@settings(max_examples=25, deadline=None, derandomize=True)
@example(scale=0.01, shift=24.0)  # a large offset on a small range: the least-squares fit must stay well posed
@example(scale=100.0, shift=-50.0)
@given(
    scale=st.floats(min_value=1e-2, max_value=1e2, allow_nan=False),
    shift=st.floats(min_value=-50.0, max_value=50.0, allow_nan=False),
)
def test_aligned_losses_are_invariant_to_scale_and_shift(name: str, scale: float, shift: float) -> None:
    prediction, target, valid, image = _maps()
    reference = _loss(name, prediction.double(), target, valid, image)
    moved = _loss(name, (prediction.double() * scale + shift), target, valid, image)
    for part in reference:
        torch.testing.assert_close(moved[part], reference[part], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_for_a_perfect_prediction(name: str) -> None:
    _, target, valid, image = _maps()
    parts = _loss(name, target.clone(), target, valid, image)
    smooth = parts.pop("smooth", None)  # smoothness regularises the prediction itself: not zero by design
    for part, value in parts.items():
        if part == "loss" and smooth is not None:
            value = value - LossConfig().smoothness_weight * smooth
        assert abs(float(value)) < 1e-5, (part, float(value))


@pytest.mark.parametrize("name", ALIGNED_LOSSES)
def test_aligned_losses_zero_for_a_scaled_and_shifted_perfect_prediction(name: str) -> None:
    _, target, valid, image = _maps()
    assert float(_loss(name, 3.0 * target + 2.0, target, valid, image)["loss"]) < 1e-5


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_garbage_in_invalid_pixels_changes_nothing(name: str) -> None:
    prediction, target, valid, image = _maps()
    reference = _loss(name, prediction, target, valid, image)
    dirty_target = torch.where(valid, target, torch.full_like(target, float("nan")))
    dirty_target[~valid & (torch.rand_like(target) > 0.5)] = 1e6
    dirty = _loss(name, prediction, dirty_target, valid, image)
    for part in ("loss",) + tuple(p for p in reference if p not in ("loss", "smooth")):
        torch.testing.assert_close(dirty[part], reference[part])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_runs_forward_and_backward(name: str) -> None:
    prediction, target, valid, image = _maps()
    prediction = prediction.clone().requires_grad_(True)
    parts = _loss(name, prediction, target, valid, image)
    assert "loss" in parts and len(parts) >= 2 and all(v.dim() == 0 for v in parts.values())
    parts["loss"].backward()
    assert prediction.grad is not None and bool(torch.isfinite(prediction.grad).all())
    assert float(prediction.grad.abs().sum()) > 0
    assert float(prediction.grad[~valid].abs().sum()) == 0.0 or name == "ssim_l1_smooth"  # smoothness sees all


def test_metric_labels_are_compared_as_inverse_depth() -> None:
    _, inverse, valid, image = _maps()
    metres = torch.where(valid, 1.0 / inverse, torch.zeros_like(inverse))
    is_metric = torch.ones(inverse.shape[0], dtype=torch.bool)
    converted, converted_valid = target_in_space(metres, valid, is_metric)
    for name in sorted(LOSSES):
        as_metric = _loss(name, inverse.clone(), converted, converted_valid, image)
        assert float(as_metric["loss"] - as_metric.get("smooth", 0.0) * LossConfig().smoothness_weight) < 1e-5
    torch.testing.assert_close(converted[valid], inverse[valid])
    assert bool((converted_valid == valid).all())


def test_mixed_batch_converts_only_metric_rows() -> None:
    _, inverse, valid, _ = _maps(batch=2)
    target = inverse.clone()
    target[1] = torch.where(valid[1], 1.0 / inverse[1], torch.zeros_like(inverse[1]))
    converted, _ = target_in_space(target, valid, torch.tensor([False, True]))
    torch.testing.assert_close(converted[valid], inverse[valid])


def test_non_finite_guard() -> None:
    """Non-finite labels are invalid pixels; a non-finite prediction makes the loss non-finite (the training
    loop's guard then skips the step); an image without valid pixels is left out of the batch mean."""
    prediction, target, valid, image = _maps()
    reference = _loss("ssi", prediction, target, valid, image)["loss"]
    holes = target.clone()
    holes[~valid] = float("inf")
    assert torch.equal(_loss("ssi", prediction, holes, valid | True, image)["loss"], reference)
    broken = prediction.clone()
    broken[0, 0, 0, 0] = float("nan")
    assert not bool(torch.isfinite(_loss("ssi", broken, target, valid | True, image)["loss"]))
    empty = valid.clone()
    empty[0] = False
    only_others = _loss("ssi", prediction[1:], target[1:], valid[1:], image[1:])["loss"]
    torch.testing.assert_close(_loss("ssi", prediction, target, empty, image)["loss"], only_others)
    nothing = _loss("ssi", prediction.requires_grad_(True), target, torch.zeros_like(valid), image)["loss"]
    assert float(nothing.detach()) == 0.0
    nothing.backward()


def test_trimming_drops_the_largest_residuals() -> None:
    residual = torch.tensor([[1.0, 2.0, 3.0, 100.0, 5.0]])
    valid = torch.tensor([[True, True, True, True, False]])
    assert float(trimmed_sum(residual, valid, trim=0.25)) == 6.0  # keep floor(0.75 * 4) = 3 smallest valid ones
    assert float(trimmed_sum(residual, valid, trim=0.0)) == 106.0


def test_outliers_do_not_move_the_trimmed_loss_much() -> None:
    prediction, target, valid, image = _maps()
    outlier = prediction.clone()
    outlier[:, :, :3, :] += 1e3  # 12% of the pixels wildly wrong
    trimmed = _loss("ssi", outlier, target, valid, image)["ssi"]
    untrimmed = build_loss(LossConfig(trim=0.0))(outlier, target, valid)["ssi"]
    assert float(trimmed) < float(untrimmed) / 3


def test_gradient_matching_sees_only_residual_edges() -> None:
    valid = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    flat = torch.full((1, 1, 16, 16), 0.3)
    assert float(gradient_matching(flat, valid, scales=4)) == 0.0  # a constant residual has no gradient
    step = flat.clone()
    step[..., 8:] = 1.3
    assert float(gradient_matching(step, valid, scales=4)) > 0.0
    # a step that lies across an invalid column is not counted
    cut = valid.clone()
    cut[..., 7:9] = False
    assert float(gradient_matching(step, cut, scales=1)) == 0.0


def test_unknown_loss_names_the_choices() -> None:
    with pytest.raises(ValueError, match="ssi_lsq"):
        LossConfig(name="berhu")


def test_ssim_l1_smooth_needs_the_image() -> None:
    prediction, target, valid, _ = _maps()
    with pytest.raises(ValueError, match="image"):
        build_loss(LossConfig(name="ssim_l1_smooth"))(prediction, target, valid)
