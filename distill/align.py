"""Per-image scale-and-shift alignment, shared by the losses, training validation and the NYU protocol.

A relative model predicts inverse depth up to an unknown scale and shift (MiDaS), so before any metric the
prediction is mapped onto the target by the least-squares ``scale * pred + shift`` over the valid pixels of
each image, or normalised by its median and mean absolute deviation (the MiDaS loss's own alignment).
"""

from __future__ import annotations

import torch

from shards.format import METRIC_DEPTH, inverse_depth

_EPS = 1e-8


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) -> (B, H*W)."""
    return x.reshape(x.shape[0], -1)


def fit_scale_shift(
    prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``scale, shift`` (each (B,)) minimising sum over valid pixels of (s * p + t - target)^2.

    Solved in float64 from the 2x2 normal equations; an image whose valid prediction is constant gets scale 0
    and the target's mean as shift (the best constant), never NaN.
    """
    p = _flatten(prediction).double()
    y = _flatten(target).double()
    m = _flatten(valid).to(p.dtype)
    n = m.sum(1)
    sum_p = (m * p).sum(1)
    sum_y = (m * y).sum(1)
    sum_pp = (m * p * p).sum(1)
    sum_py = (m * p * y).sum(1)
    determinant = n * sum_pp - sum_p * sum_p
    ok = determinant.abs() > _EPS * torch.clamp(n * sum_pp, min=1.0)
    safe = torch.where(ok, determinant, torch.ones_like(determinant))
    scale = torch.where(ok, (n * sum_py - sum_p * sum_y) / safe, torch.zeros_like(determinant))
    mean_y = sum_y / torch.clamp(n, min=1.0)
    shift = torch.where(ok, (sum_y - scale * sum_p) / torch.clamp(n, min=1.0), mean_y)
    return scale.to(prediction.dtype), shift.to(prediction.dtype)


def align_scale_shift(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The prediction mapped by its least-squares scale and shift onto the target; same shape as ``prediction``."""
    scale, shift = fit_scale_shift(prediction, target, valid)
    view = (-1,) + (1,) * (prediction.dim() - 1)
    return prediction * scale.view(view) + shift.view(view)


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


def as_inverse_depth(prediction, prediction_kind: str):
    """A model's output (tensor or array) as inverse depth: as it is, or 1 / metres for a model that predicts depth
    (a ``prediction: depth`` student, kind ``metric_depth``), by :func:`shards.format.inverse_depth` (depth at or
    below 1 mm counts as 1 mm)."""
    if prediction_kind in ("depth", METRIC_DEPTH):
        return inverse_depth(prediction)
    return prediction
