"""The optimizer side of the training loop: AdamW, its schedule, and an update that never waits for the host.

A non-finite loss or gradient must skip the update. Deciding that on the host (``float(loss)``, ``bool(norm)``)
stalls the GPU at every step until the queued kernels drain. Here the decision stays on the device, as torch's
GradScaler does it: the total gradient norm (already averaged across processes by DDP, so every rank holds the same
value) and the loss flags make a ``found_inf`` tensor, and fused AdamW skips its update, step count included, where
``found_inf`` is 1. The host reads the counters only at log intervals (:class:`distill.step_stats.StepStats`).
"""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from torch import nn

#: Device types whose fused AdamW takes ``found_inf`` (checked with torch 2.11-2.14).
FUSED_DEVICE_TYPES = ("cuda", "cpu")


class WarmupCosine:
    """LR factor: linear warm-up from 0 over ``warmup`` steps, then cosine down to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D parameters)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float,
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused (one kernel per step, and the on-device skip) where the device supports it."""
    fused = device.type in FUSED_DEVICE_TYPES
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def total_grad_norm(model: nn.Module, clip: float | None, accelerator: Accelerator) -> torch.Tensor:
    """The gradients' total L2 norm (a 0-dim device tensor); clips to ``clip`` when given."""
    if clip:
        return accelerator.clip_grad_norm_(model.parameters(), clip)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads)


def optimizer_step(accelerator: Accelerator, model: nn.Module, optimizer, clip: float | None,
                   loss_nonfinite: torch.Tensor) -> torch.Tensor:
    """Clip, step, zero. Returns a 0-dim float tensor on the device: 1.0 where the update was skipped.

    ``loss_nonfinite`` is this rank's flag (1.0 if any micro-batch's loss was not finite). With fp16 the grad
    scaler decides instead (it lowers its scale on overflow and skips the step itself; that path reads the host).
    """
    norm = total_grad_norm(model, clip, accelerator)
    if accelerator.scaler is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return torch.tensor(float(accelerator.optimizer_step_was_skipped), device=norm.device)
    found_inf = torch.maximum(loss_nonfinite, (~torch.isfinite(norm)).float())
    if accelerator.num_processes > 1:  # a rank whose loss alone was non-finite: every rank skips together
        found_inf = accelerator.reduce(found_inf, reduction="max")
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
    if inner.defaults.get("fused"):
        inner.found_inf = found_inf  # read by the fused kernel: no update, no step count where it is 1
        optimizer.step()
    elif not bool(found_inf):  # an unfused optimizer can only be skipped from the host
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return found_inf
