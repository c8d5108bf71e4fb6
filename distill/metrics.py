"""Depth metrics, the one copy used by training validation and the NYU evaluation alike.

Standard definitions (Eigen et al. 2014), per image over its valid pixels, with ``p`` the prediction and ``d``
the ground truth, both in metres:

- ``abs_rel``  = mean(|p - d| / d)
- ``sq_rel``   = mean((p - d)^2 / d)
- ``rmse``     = sqrt(mean((p - d)^2))
- ``rmse_log`` = sqrt(mean((ln p - ln d)^2))
- ``log10``    = mean(|log10 p - log10 d|)
- ``deltaK``   = fraction of pixels with max(p / d, d / p) < 1.25^K, K = 1, 2, 3

Dataset-level figures are the mean of the per-image values (the reference recipe's averaging), which
:func:`mean_metrics` computes. Everything is computed in float64 so that a full-resolution image gives the same
figure on any device.

:func:`inverse_depth_metrics` is the training-validation variant (docs/decisions.md, "Evaluation";
docs/evaluation.md, "Validation during training"): a batch of relative inverse depths is aligned per image by
least-squares scale and shift, then scored in inverse-depth space for relative labels (keys suffixed ``_inv``) or,
for metric labels, converted to depth with a 10 m cap and scored with the depth metrics above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from distill.align import align_scale_shift, aligned_depth

#: Depth metric names, in the order of the reference table (log10 last: the table does not show it).
DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "log10")

#: Inverse-depth metric names for relative labels (no log metrics: an aligned inverse depth may reach 0).
INVERSE_DEPTH_METRICS = ("abs_rel_inv", "sq_rel_inv", "rmse_inv", "delta1_inv", "delta2_inv", "delta3_inv")

#: Ratio threshold of the delta metrics.
DELTA_BASE = 1.25

#: Metric labels are capped here when a prediction's inverse depth is turned back into depth (metres).
DEFAULT_DEPTH_CAP = 10.0


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of (B, N) values over a (B, N) mask; NaN for an image without any pixel."""
    count = mask.sum(1)
    total = torch.where(mask, values, torch.zeros_like(values)).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def _deltas(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, suffix: str) -> dict:
    """delta1..3 over ``mask`` of (B, N) maps; a non-positive prediction is never within any threshold."""
    positive = prediction > 0
    safe_prediction = torch.where(positive, prediction, torch.ones_like(prediction))
    ratio = torch.maximum(safe_prediction / target, target / safe_prediction)
    ratio = torch.where(positive, ratio, torch.full_like(ratio, math.inf))
    return {f"delta{k}{suffix}": _masked_mean((ratio < DELTA_BASE**k).double(), mask) for k in (1, 2, 3)}


def batch_depth_metrics(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Depth metrics per image for a batch: (B, H, W) or (B, 1, H, W) tensors in metres -> {name: (B,) float64}.

    ``valid`` marks the pixels that count; the target must be positive there and the prediction positive and
    finite (clamp it first: the protocols cap depth). An image without a valid pixel gets NaN for every metric.
    Only the valid pixels are gathered and reduced per image, so a 640x480 batch costs what its valid pixels cost.
    """
    batch = prediction.shape[0]
    mask = valid.reshape(batch, -1).bool()
    p = prediction.reshape(batch, -1)[mask].double()  # (V,) valid pixels of every image, image after image
    d = target.reshape(batch, -1)[mask].double()
    if bool((d <= 0).any()) or not bool(torch.isfinite(d).all()):
        raise ValueError("ground-truth depth must be positive and finite on every valid pixel: mark holes invalid")
    bad = ~(torch.isfinite(p) & (p > 0))
    if bool(bad.any()):
        raise ValueError(
            f"prediction is non-positive or non-finite at {int(bad.sum())} valid pixels: clamp predicted depth "
            "into (0, cap] before the metrics (the protocol's depth cap does this)"
        )
    count = mask.sum(1)
    image = torch.repeat_interleave(torch.arange(batch, device=p.device), count)  # (V,) image of each pixel

    def mean(values: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(batch, dtype=torch.float64, device=p.device).index_add_(0, image, values)
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))

    difference = p - d
    log_ratio = torch.log(p / d)
    ratio = torch.maximum(p / d, d / p)
    metrics = {
        "abs_rel": mean(difference.abs() / d),
        "sq_rel": mean(difference**2 / d),
        "rmse": mean(difference**2).sqrt(),
        "rmse_log": mean(log_ratio**2).sqrt(),
        "log10": mean(log_ratio.abs() / math.log(10.0)),
        **{f"delta{k}": mean((ratio < DELTA_BASE**k).double()) for k in (1, 2, 3)},
    }
    return {name: metrics[name] for name in DEPTH_METRICS}


def depth_metrics(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """Depth metrics of one image: (H, W) tensors in metres and a bool (H, W) mask -> {name: float}.

    See the module docstring for the definitions; NaN for every metric when no pixel is valid.
    """
    if prediction.dim() != 2 or prediction.shape != target.shape or target.shape != valid.shape:
        raise ValueError(
            f"depth_metrics takes one image: (H, W) prediction, target and valid of one shape, got "
            f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(valid.shape)}; "
            "use batch_depth_metrics for batches"
        )
    per_image = batch_depth_metrics(prediction[None], target[None], valid[None])
    return {name: float(value[0]) for name, value in per_image.items()}


def _relative_inverse_metrics(aligned: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict:
    """Inverse-depth metrics (B,) for relative labels: rmse over valid pixels, ratio metrics where label > 0."""
    a = aligned.clamp(min=0.0)  # inverse depth is never negative (the teachers end in ReLU)
    ratio_mask = valid & (target > 0)
    t_safe = torch.where(ratio_mask, target, torch.ones_like(target))
    difference = a - t_safe
    metrics = {
        "abs_rel_inv": _masked_mean(difference.abs() / t_safe, ratio_mask),
        "sq_rel_inv": _masked_mean(difference**2 / t_safe, ratio_mask),
        "rmse_inv": _masked_mean((a - target) ** 2, valid).sqrt(),
    }
    metrics.update(_deltas(a, t_safe, ratio_mask, suffix="_inv"))
    return {name: metrics[name] for name in INVERSE_DEPTH_METRICS}


def inverse_depth_metrics(
    pred_inv: torch.Tensor,
    target_inv: torch.Tensor,
    valid: torch.Tensor,
    metric_label: torch.Tensor | bool | None = None,
    depth_cap: float = DEFAULT_DEPTH_CAP,
) -> dict[str, torch.Tensor]:
    """Training-validation metrics of a batch, per image: {name: (B,) float64}, NaN where a key does not apply.

    ``pred_inv``: (B, 1, H, W) or (B, H, W) predicted relative inverse depth. ``target_inv``: the label as inverse
    depth (a relative teacher's output, or 1 / metres for a metric label). ``valid``: bool, same shape.
    ``metric_label``: per image (B,) bool (or one bool for the batch), True where ``target_inv`` is 1 / metres.

    Each prediction is first mapped by its least-squares scale and shift onto the label over the valid pixels.
    Relative labels are scored in inverse-depth space (``abs_rel_inv``, ``sq_rel_inv``, ``rmse_inv``,
    ``delta1_inv`` .. ``delta3_inv``; ratio metrics over pixels whose label is > 0). Metric labels: the aligned
    inverse depth is clamped to at least ``1 / depth_cap`` and inverted, and the depth metrics (``abs_rel`` ..
    ``log10``) are computed over all valid pixels. Per-image values let training gather them across processes
    before :func:`mean_metrics`.
    """
    batch = pred_inv.shape[0]
    prediction = pred_inv.reshape(batch, -1).double()
    target = target_inv.reshape(batch, -1).double()
    mask = valid.reshape(batch, -1).bool() & torch.isfinite(target)
    if metric_label is None:
        is_metric = torch.zeros(batch, dtype=torch.bool, device=prediction.device)
    elif isinstance(metric_label, bool):
        is_metric = torch.full((batch,), metric_label, dtype=torch.bool, device=prediction.device)
    else:
        is_metric = torch.as_tensor(metric_label, device=prediction.device).reshape(batch).bool()
    masked_target = torch.where(mask, target, torch.zeros_like(target))
    aligned = align_scale_shift(prediction, masked_target, mask)
    nan = torch.full((batch,), math.nan, dtype=torch.float64, device=prediction.device)
    results = {name: nan.clone() for name in INVERSE_DEPTH_METRICS + DEPTH_METRICS}
    relative = ~is_metric
    if bool(relative.any()):
        for name, values in _relative_inverse_metrics(aligned[relative], target[relative], mask[relative]).items():
            results[name][relative] = values
    if bool(is_metric.any()):
        metric_mask = mask[is_metric] & (target[is_metric] > 0)
        predicted_depth, _, _ = aligned_depth(
            prediction[is_metric], masked_target[is_metric], mask[is_metric], depth_cap
        )
        target_depth = 1.0 / torch.where(metric_mask, target[is_metric], torch.ones_like(target[is_metric]))
        for name, values in batch_depth_metrics(predicted_depth, target_depth, metric_mask).items():
            results[name][is_metric] = values
    return results


def mean_metrics(per_image: Mapping[str, torch.Tensor | Iterable[float]]) -> dict[str, float]:
    """Average per-image metrics over images, skipping NaN (images where a metric did not apply).

    Takes {name: (N,) tensor or list of floats} (e.g. gathered from every process) and returns {name: float};
    a metric that applied to no image (e.g. the depth metrics of a batch with only relative labels) is left out.
    """
    means = {}
    for name, values in per_image.items():
        tensor = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        applied = tensor[~torch.isnan(tensor)]
        if applied.numel():
            means[name] = float(applied.mean())
    return means
