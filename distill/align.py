"""Per-image scale-and-shift alignment, shared by the losses, training validation and the NYU protocol.

A relative model predicts inverse depth up to an unknown scale and shift (MiDaS), so before any metric the
prediction is mapped onto the target by the least-squares ``scale * pred + shift`` over the valid pixels of
each image, or normalised by its median and mean absolute deviation (the MiDaS loss's own alignment). Evaluation
holds the scale at >= 0 (:func:`solve_nonnegative_scale_shift`): a negative scale would score depth read as inverse
depth as if it were right; the losses and training validation keep the free fit.
"""

from __future__ import annotations

import torch

_EPS = 1e-8
#: A prediction whose centred RMS is below this fraction of its RMS is constant up to rounding: float32 rounds at
#: 6e-8 relative, and a resized constant map carries a few such steps of noise; a real relative map's spread is
#: orders above (100 + 0.01 / depth over 1..10 m: 3e-5).
CONSTANT_SPREAD = 1e-6


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) -> (B, H*W)."""
    return x.reshape(x.shape[0], -1)


def solve_scale_shift(
    prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``scale, shift`` (each (B,), float64) minimising sum over valid pixels of (s * p + t - target)^2.

    The one solve behind evaluation, training validation and the ``ssi_lsq`` loss. Both sides are centred on their
    valid means and the fit is solved in float64 (``scale = cov(p, y) / var(p)``, ``shift = mean(y) - scale *
    mean(p)``), so a large offset cannot make a map look singular (100 + 0.01 / depth is fitted, not called
    constant). A map counts as constant when its centred spread is below ``CONSTANT_SPREAD`` of its own magnitude
    (rounding, not signal): it gets scale 0 and the target's mean as shift (the best constant), never NaN.
    """
    p = _flatten(prediction).double()
    y = _flatten(target).double()
    m = _flatten(valid).to(p.dtype)
    # invalid pixels may hold anything, inf and NaN included: they never reach a sum
    p = torch.where(m > 0, p, torch.zeros_like(p))
    y = torch.where(m > 0, y, torch.zeros_like(y))
    n = torch.clamp(m.sum(1), min=1.0)
    mean_p = p.sum(1) / n
    mean_y = y.sum(1) / n
    centred_p = (p - mean_p[:, None]) * m
    centred_y = (y - mean_y[:, None]) * m
    spread = (centred_p * centred_p).sum(1)
    magnitude = (p * p).sum(1)
    ok = spread > CONSTANT_SPREAD**2 * magnitude
    safe = torch.where(ok, spread, torch.ones_like(spread))
    scale = torch.where(ok, (centred_p * centred_y).sum(1) / safe, torch.zeros_like(spread))
    return scale, mean_y - scale * mean_p


def align_scale_shift(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The prediction mapped by its least-squares scale and shift onto the target; same shape and dtype as
    ``prediction``, computed in float64 (a large offset times a large scale would cancel in float32)."""
    scale, shift = solve_scale_shift(prediction, target, valid)
    view = (-1,) + (1,) * (prediction.dim() - 1)
    return (prediction.double() * scale.view(view) + shift.view(view)).to(prediction.dtype)


def solve_nonnegative_scale_shift(
    prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`solve_scale_shift` with the scale held at >= 0: evaluation's fit. Returns (scale, shift, negative),
    each (B,); ``negative`` (bool) marks the frames whose free fit had a negative scale.

    A negative best scale means the prediction runs the wrong way (depth read as inverse depth): the free fit would
    turn it round and score it as if it were right. The fit is a convex quadratic, so with the scale held at >= 0
    the best fit of such a frame lies on the boundary: scale 0 and the target's mean over valid pixels as shift, the
    best constant, no better than a constant. A constant map's zero scale is not negative."""
    scale, shift = solve_scale_shift(prediction, target, valid)
    negative = scale < 0
    y = _flatten(target).double()
    m = _flatten(valid).bool()
    mean_y = torch.where(m, y, torch.zeros_like(y)).sum(1) / torch.clamp(m.sum(1), min=1)
    zero = torch.zeros_like(scale)
    return torch.where(negative, zero, scale), torch.where(negative, mean_y, shift), negative


def capped_depth(inverse: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, depth_cap: float) -> torch.Tensor:
    """``scale * inverse + shift`` per image (B, ...), clamped to >= ``1 / depth_cap`` and inverted: depth in metres,
    float64, at most ``depth_cap``."""
    view = (-1,) + (1,) * (inverse.dim() - 1)
    aligned = inverse.double() * scale.view(view) + shift.view(view)
    return 1.0 / aligned.clamp(min=1.0 / depth_cap)


def aligned_depth(
    inverse: torch.Tensor, target_inverse: torch.Tensor, valid: torch.Tensor, depth_cap: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicted inverse depth (B, ...) aligned onto the label's inverse depth (1 / metres), capped at ``depth_cap``
    metres and inverted: (depth float64, scale (B,), shift (B,)). Training validation's scoring step on metric
    labels, with the free fit; evaluation's ``lsq_inverse`` protocols use the same inversion (:func:`capped_depth`)
    after the fit with scale >= 0, so the two agree on every frame whose scale is not negative."""
    scale, shift = solve_scale_shift(inverse, target_inverse, valid)
    return capped_depth(inverse, scale, shift, depth_cap), scale, shift


def masked_median(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image median over valid pixels, (B,). Invalid pixels are pushed to +inf and the lower median of the
    valid ones is taken, so each image uses only its own valid pixels."""
    flat = _flatten(x)
    mask = _flatten(valid)
    filled = torch.where(mask, flat, torch.full_like(flat, float("inf")))
    ordered, _ = torch.sort(filled, dim=1)
    count = mask.sum(1)
    index = torch.clamp((count - 1) // 2, min=0)
    median = ordered.gather(1, index.unsqueeze(1)).squeeze(1)
    return torch.where(count > 0, median, torch.zeros_like(median))


def normalise_median_mad(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MiDaS's per-image normalisation: subtract the median, divide by the mean absolute deviation from it,
    both over valid pixels. Shape as ``x``; invariant to any positive scale and any shift of ``x``."""
    view = (-1,) + (1,) * (x.dim() - 1)
    shift = masked_median(x, valid).view(view)
    mask = valid.to(x.dtype)
    count = torch.clamp(_flatten(mask).sum(1), min=1.0)
    scale = (_flatten((x - shift).abs() * mask).sum(1) / count).view(view)
    return (x - shift) / torch.clamp(scale, min=_EPS)


def fit_median_scale(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image ``median(target) / median(prediction)`` over valid pixels, (B,): the median-scaling protocol."""
    return masked_median(target, valid) / torch.clamp(masked_median(prediction, valid), min=_EPS)
