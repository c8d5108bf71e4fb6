"""Model size and compute: parameters and multiply-accumulates (MACs) of one forward pass.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, depthwise included through their
weight shape, and matmuls; element-wise ops and resampling are not counted, as in the usual tables) and halved:
one MAC = two FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them by default; buffers such as BN statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass on a zero input of ``input_shape`` (e.g. (1, 3, 192, 256)), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(tuple(input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
