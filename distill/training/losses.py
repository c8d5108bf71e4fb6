"""Training losses: a table name -> loss class; every loss returns a dict of named parts and ``loss``.

All losses take ``prediction`` (B, 1, H, W) in the student's space, ``target`` (B, 1, H, W) in that same space and
``valid`` (B, 1, H, W) bool. The label is put in that space once, where the batch is made (:func:`target_in_space`,
called by ``distill.training.data``): for an inverse-depth student metric labels become inverse depth (1 / metres), so
every loss compares inverse depths. Pixels that are invalid, or whose target is non-finite, never reach the loss:
garbage there changes nothing. The reduction is per image (over its valid pixels), then the mean over the images that
have valid pixels. A non-finite prediction gives a non-finite loss on purpose: the training loop's guard skips that
step.

- ``ssi`` (default): MiDaS scale-and-shift-invariant loss (Ranftl et al., TPAMI 2022, sec. 5): prediction and label
  each normalised by their median and mean absolute deviation, the absolute residuals trimmed to the smallest
  ``1 - trim`` fraction per image, summed and divided by 2M (M = valid pixels, the paper's constant), plus
  ``gradient_weight`` x the multi-scale gradient-matching term on that residual.
- ``ssi_lsq``: the label normalised by median / MAD, the prediction mapped onto it by least-squares scale and shift,
  squared error / 2M, plus the same gradient term.
- ``l1``, ``mse``: plain mean absolute / squared error on inverse depth (labels with a consistent scale only).
- ``ssim_l1_smooth``: 0.85 (1 - SSIM) / 2 + 0.15 L1 plus an edge-aware smoothness term on the mean-normalised
  prediction (Godard et al., Monodepth); needs the image. RT-MonoDepth's recipe.
- ``l1_edge_ssim``: ``l1_weight`` L1 + ``edge_weight`` L1 of the image gradients (prediction's against label's) +
  ``ssim_weight`` (1 - SSIM) / 2: the DIODE DeepLabv3 recipe.

Where the student predicts depth (``prediction: depth``, the metric recipes), the target is metres instead, and only
metric labels can train it. ``invariant: true`` normalises prediction and label per image by
median and mean absolute deviation before ``l1``, ``mse``, ``ssim_l1_smooth`` or ``l1_edge_ssim``: their
scale-and-shift-invariant variants, for relative pseudo-labels. ``coarse_weight`` > 0 adds the RMSE of a student's
coarse map (RT-MonoDepth's ``aux["coarse"]``) against the label average-pooled to its size.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import nn
from torch.nn import functional as F

from distill.align import align_scale_shift, normalise_median_mad
from distill.training.config import LossConfig, LossName
from shards.format import inverse_depth

_EPS = 1e-6


def target_in_space(
    target: torch.Tensor, valid: torch.Tensor, is_metric: torch.Tensor | None, space: str = "inverse_depth"
) -> tuple[torch.Tensor, torch.Tensor]:
    """A label as stored (inverse depth, or metres where ``is_metric``) -> (values (B, 1, H, W) float32 in ``space``,
    valid mask): what the losses and validation compare. Called once per batch, where the batch is made
    (``distill.training.data``). Invalid pixels hold 0 so nothing non-finite flows on. ``inverse_depth``: metric
    rows become 1 / metres over pixels with a positive depth (``shards.format.inverse_depth``). ``depth``: metres,
    which only metric labels have (a relative label here is an error, not a silent guess)."""
    target = target.float()
    valid = valid.bool() & torch.isfinite(target)
    if space == "depth":
        if is_metric is None or not bool(is_metric.bool().all()):
            raise ValueError(
                "this student predicts depth in metres (student.prediction: depth), so it trains on metric labels "
                "only; these shards hold relative pseudo-labels: use an inverse_depth student with an invariant loss"
            )
        valid = valid & (target > 0)
    elif is_metric is not None:
        metric = is_metric.bool().view(-1, 1, 1, 1).expand_as(target)
        valid = valid & ~(metric & (target <= 0))
        target = torch.where(metric, inverse_depth(target, valid & metric), target)
    return torch.where(valid, target, torch.zeros_like(target)), valid


def _per_image_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def _batch_mean(per_image: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mean over images with at least one valid pixel; 0 (with a gradient path) when there is none."""
    has_pixels = count > 0
    if not bool(has_pixels.any()):
        return per_image.sum() * 0.0
    return per_image[has_pixels].mean()


def gradient_matching(residual: torch.Tensor, valid: torch.Tensor, scales: int) -> torch.Tensor:
    """Multi-scale gradient-matching term per image, (B,): sum over scales of sum(|dx R| + |dy R|) / M over pixel
    pairs that are both valid, R sub-sampled by 2 at each scale (MiDaS sec. 5)."""
    total = residual.new_zeros(residual.shape[0])
    for scale in range(scales):
        step = 2**scale
        r = residual[..., ::step, ::step]
        m = valid[..., ::step, ::step]
        count = _per_image_sum(m.float())
        m_x = m[..., :, 1:] & m[..., :, :-1]
        m_y = m[..., 1:, :] & m[..., :-1, :]
        grad_x = torch.where(m_x, (r[..., :, 1:] - r[..., :, :-1]).abs(), torch.zeros_like(r[..., :, 1:]))
        grad_y = torch.where(m_y, (r[..., 1:, :] - r[..., :-1, :]).abs(), torch.zeros_like(r[..., 1:, :]))
        total = total + (_per_image_sum(grad_x) + _per_image_sum(grad_y)) / count.clamp(min=1.0)
    return total


def trimmed_sum(absolute: torch.Tensor, valid: torch.Tensor, trim: float) -> torch.Tensor:
    """Per image, (B,): the sum of the smallest ``floor((1 - trim) * M)`` absolute residuals over valid pixels."""
    flat = absolute.flatten(1)
    mask = valid.flatten(1)
    count = mask.sum(1)
    keep = torch.floor((1.0 - trim) * count.double()).long()
    ordered, _ = torch.sort(torch.where(mask, flat, torch.full_like(flat, float("inf"))), dim=1)
    rank = torch.arange(flat.shape[1], device=flat.device).unsqueeze(0)
    kept = rank < keep.unsqueeze(1)
    return torch.where(kept, ordered, torch.zeros_like(ordered)).sum(1)


class DepthLoss(nn.Module):
    """Base: leaves out invalid and non-finite target pixels, normalises both when ``invariant``, then
    :meth:`compute`; adds the coarse-map term; returns named parts and ``loss``."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config

    def forward(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor,
        image: torch.Tensor | None = None,
        aux: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        if prediction.shape != target.shape or target.shape != valid.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and valid {tuple(valid.shape)} "
                "must have one shape, (B, 1, H, W)"
            )
        target = target.float()
        valid = valid.bool() & torch.isfinite(target)
        target = _zero_invalid(target, valid)
        # float32 at least (autocast may hand us bf16 / fp16); float64 stays float64
        prediction = prediction.to(torch.promote_types(prediction.dtype, torch.float32))
        target = target.to(prediction.dtype)
        if self.config.invariant:
            prediction = _zero_invalid(normalise_median_mad(prediction, valid), valid)
            target = _zero_invalid(normalise_median_mad(target, valid), valid)
        parts = self.compute(prediction, target, valid, image)
        if self.config.coarse_weight > 0:
            if not aux or "coarse" not in aux:
                raise ValueError("loss.coarse_weight > 0 needs a student with a coarse map (student.coarse_head true)")
            parts["coarse"] = coarse_rmse(aux["coarse"].to(prediction.dtype), target, valid, self.config.invariant)
            parts["loss"] = parts["loss"] + self.config.coarse_weight * parts["coarse"]
        return parts

    def compute(
        self, prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, image: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class ScaleShiftInvariantLoss(DepthLoss):
    """``ssi``: median / MAD normalisation, trimmed absolute residual, gradient matching (MiDaS)."""

    def compute(self, prediction, target, valid, image):
        count = _per_image_sum(valid.float())
        residual = normalise_median_mad(prediction, valid) - normalise_median_mad(target, valid)
        residual = torch.where(valid, residual, torch.zeros_like(residual))
        ssi = trimmed_sum(residual.abs(), valid, self.config.trim) / (2.0 * count.clamp(min=1.0))
        return _with_gradient_term(self.config, "ssi", ssi, residual, valid, count)


class LeastSquaresScaleShiftLoss(DepthLoss):
    """``ssi_lsq``: least-squares scale and shift of the prediction onto the (median / MAD normalised) label."""

    def compute(self, prediction, target, valid, image):
        count = _per_image_sum(valid.float())
        target_normalised = normalise_median_mad(target, valid)
        aligned = align_scale_shift(prediction, target_normalised, valid)  # the evaluation's solve, centred inside
        residual = torch.where(valid, aligned - target_normalised, torch.zeros_like(aligned))
        mse = _per_image_sum(residual**2) / (2.0 * count.clamp(min=1.0))
        return _with_gradient_term(self.config, "ssi_mse", mse, residual, valid, count)


def _with_gradient_term(
    config: LossConfig, name: str, data_term: torch.Tensor, residual: torch.Tensor, valid: torch.Tensor,
    count: torch.Tensor,
) -> dict[str, torch.Tensor]:
    parts = {name: _batch_mean(data_term, count)}
    loss = parts[name]
    if config.gradient_weight > 0 and config.gradient_scales > 0:
        parts["grad"] = _batch_mean(gradient_matching(residual, valid, config.gradient_scales), count)
        loss = loss + config.gradient_weight * parts["grad"]
    parts["loss"] = loss
    return parts


class L1Loss(DepthLoss):
    """``l1``: mean |prediction - label| over valid pixels (no alignment)."""

    def compute(self, prediction, target, valid, image):
        count = _per_image_sum(valid.float())
        error = torch.where(valid, (prediction - target).abs(), torch.zeros_like(prediction))
        l1 = _batch_mean(_per_image_sum(error) / count.clamp(min=1.0), count)
        return {"l1": l1, "loss": l1}


class MSELoss(DepthLoss):
    """``mse``: mean squared error over valid pixels (no alignment)."""

    def compute(self, prediction, target, valid, image):
        count = _per_image_sum(valid.float())
        error = torch.where(valid, (prediction - target) ** 2, torch.zeros_like(prediction))
        mse = _batch_mean(_per_image_sum(error) / count.clamp(min=1.0), count)
        return {"mse": mse, "loss": mse}


def _ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM over 3x3 windows (reflection padded), as in Monodepth; values up to 1."""
    c1, c2 = 0.01**2, 0.03**2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return numerator / denominator


class SsimL1SmoothLoss(DepthLoss):
    """``ssim_l1_smooth``: SSIM + L1 on inverse depth over valid pixels (3x3 windows wholly valid for SSIM), plus an
    edge-aware smoothness of the mean-normalised prediction weighted by exp(-|image gradient|)."""

    def compute(self, prediction, target, valid, image):
        if image is None:
            raise ValueError("loss 'ssim_l1_smooth' needs the input image for its edge-aware smoothness term")
        count = _per_image_sum(valid.float())
        ssim = ssim_dissimilarity(prediction, target, valid)
        error = torch.where(valid, (prediction - target).abs(), torch.zeros_like(prediction))
        l1 = _batch_mean(_per_image_sum(error) / count.clamp(min=1.0), count)
        # scale-free before the smoothness: mean-normalised (Monodepth), or already median / MAD normalised
        normalised = prediction
        if not self.config.invariant:
            normalised = prediction / (prediction.mean((2, 3), keepdim=True) + _EPS)
        image = image.float()
        weight_x = torch.exp(-(image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True))
        weight_y = torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True))
        smooth = (weight_x * (normalised[..., :, 1:] - normalised[..., :, :-1]).abs()).mean() + (
            weight_y * (normalised[..., 1:, :] - normalised[..., :-1, :]).abs()
        ).mean()
        cfg = self.config
        loss = cfg.ssim_weight * ssim + (1.0 - cfg.ssim_weight) * l1 + cfg.smoothness_weight * smooth
        return {"ssim": ssim, "l1": l1, "smooth": smooth, "loss": loss}


class L1EdgeSsimLoss(DepthLoss):
    """``l1_edge_ssim``: L1 + L1 of the image gradients (prediction's minus label's, over pixel pairs both valid)
    + SSIM dissimilarity, each with its weight (the DIODE DeepLabv3 recipe)."""

    def compute(self, prediction, target, valid, image):
        count = _per_image_sum(valid.float())
        error = torch.where(valid, (prediction - target).abs(), torch.zeros_like(prediction))
        l1 = _batch_mean(_per_image_sum(error) / count.clamp(min=1.0), count)
        residual = torch.where(valid, prediction - target, torch.zeros_like(prediction))
        edge = _batch_mean(gradient_matching(residual, valid, 1), count)
        ssim = ssim_dissimilarity(prediction, target, valid)
        cfg = self.config
        loss = cfg.l1_weight * l1 + cfg.edge_weight * edge + cfg.ssim_weight * ssim
        return {"l1": l1, "edge": edge, "ssim": ssim, "loss": loss}


def ssim_dissimilarity(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Batch mean of (1 - SSIM) / 2 over the 3x3 windows whose nine pixels are all valid."""
    window_valid = -F.max_pool2d(-valid.float(), 3, 1, padding=1) > 0.5
    count = _per_image_sum(window_valid.float())
    dissimilarity = ((1.0 - _ssim_map(prediction, target)) / 2.0).clamp(0.0, 1.0)
    total = _per_image_sum(torch.where(window_valid, dissimilarity, torch.zeros_like(dissimilarity)))
    return _batch_mean(total / count.clamp(min=1.0), count)


def _zero_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, x, torch.zeros_like(x))


def coarse_rmse(coarse: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, invariant: bool) -> torch.Tensor:
    """Batch mean of the per-image RMSE between a coarse map (B, 1, h, w) and the label average-pooled over its
    valid pixels to that size (a coarse pixel counts where any of its label pixels is valid)."""
    height, width = target.shape[-2:]
    if height % coarse.shape[-2] or width % coarse.shape[-1]:
        raise ValueError(f"coarse map {tuple(coarse.shape[-2:])} does not tile the label {height}x{width}")
    kernel = (height // coarse.shape[-2], width // coarse.shape[-1])
    weight = F.avg_pool2d(valid.to(target.dtype), kernel)
    pooled = F.avg_pool2d(_zero_invalid(target, valid), kernel) / weight.clamp(min=_EPS)
    coarse_valid = weight > 0
    if invariant:
        coarse = normalise_median_mad(coarse, coarse_valid)
    count = _per_image_sum(coarse_valid.float())
    squared = _zero_invalid((coarse - pooled) ** 2, coarse_valid)
    return _batch_mean(torch.sqrt(_per_image_sum(squared) / count.clamp(min=1.0) + 1e-12), count)


#: The loss table: config name -> class. Add a loss here and it is a config choice.
LOSSES: dict[str, type[DepthLoss]] = {
    "ssi": ScaleShiftInvariantLoss,
    "ssi_lsq": LeastSquaresScaleShiftLoss,
    "l1": L1Loss,
    "mse": MSELoss,
    "ssim_l1_smooth": SsimL1SmoothLoss,
    "l1_edge_ssim": L1EdgeSsimLoss,
}
if set(get_args(LossName)) != set(LOSSES):  # a loss added to one table and not the other
    raise ImportError(f"LossName {get_args(LossName)} differs from LOSSES {sorted(LOSSES)}")


def build_loss(config: LossConfig | None = None) -> DepthLoss:
    """The configured loss; it compares values in the space its targets were put in (:func:`target_in_space`)."""
    config = config or LossConfig()
    return LOSSES[config.name](config)
