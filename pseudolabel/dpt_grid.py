"""A DPT forward that knows its patch grid, so MiDaS teachers run at native 4:3 (384x512) without squashing.

transformers 5.x ``DPTForDepthEstimation`` assumes a square patch grid: on the plain-ViT path (``Intel/dpt-large``)
the neck reshapes the tokens to ``sqrt(N) x sqrt(N)`` (a 384x512 input raises ``shape '[2, 27, 27, 32]' is
invalid``), and the hybrid path (``Intel/dpt-hybrid-midas``) refuses any size but ``config.image_size``. MiDaS itself
ran these models at native aspect, with the position embeddings interpolated to the patch grid.

:func:`dpt_depth` runs the same modules in the same order as the stock forward (embeddings, encoder layers, neck,
head), only (a) the hybrid embeddings' size check is skipped, (b) the position embeddings are interpolated to the real
``(H / 16, W / 16)`` grid by the model's own ``_resize_pos_embed``, and (c) the neck is told the grid. On square inputs
it equals the stock forward (``tests/pseudolabel/test_dpt_grid.py`` proves it for the ViT and the hybrid).
"""

from __future__ import annotations

import torch
from transformers import DPTForDepthEstimation

#: DPT inputs must be a multiple of this: 16-pixel patches, then a stride-2 reassemble at the deepest level.
DPT_SIZE_MULTIPLE = 32


def patch_grid(model: DPTForDepthEstimation, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the ViT token grid for an input of ``height`` x ``width`` pixels."""
    patch_size = model.config.patch_size
    if height % patch_size or width % patch_size:
        raise ValueError(f"DPT input {height}x{width} is not a multiple of the patch size {patch_size}")
    return height // patch_size, width // patch_size


def _hybrid_embeddings(model: DPTForDepthEstimation, pixel_values: torch.Tensor, grid: tuple[int, int]):
    """``DPTViTHybridEmbeddings.forward`` without its square-size check: tokens (B, 1 + h*w, C) and the BiT
    stage-1 and stage-2 feature maps that the neck uses directly."""
    embeddings = model.dpt.embeddings
    position_embeddings = embeddings._resize_pos_embed(embeddings.position_embeddings, *grid)
    backbone_output = embeddings.backbone(pixel_values)
    features = backbone_output.feature_maps[-1]  # (B, C, h, w) at stride 16
    if tuple(features.shape[-2:]) != grid:
        raise ValueError(f"hybrid backbone gave a {tuple(features.shape[-2:])} feature map, expected the grid {grid}")
    intermediate = [backbone_output.feature_maps[index] for index in embeddings.residual_feature_map_index]
    tokens = embeddings.projection(features).flatten(2).transpose(1, 2)
    cls_tokens = embeddings.cls_token.expand(tokens.shape[0], -1, -1)
    tokens = torch.cat((cls_tokens, tokens), dim=1) + position_embeddings
    return tokens, intermediate


def dpt_depth(model: DPTForDepthEstimation, pixel_values: torch.Tensor) -> torch.Tensor:
    """Normalised pixels (B, 3, H, W), H and W multiples of 32 -> predicted depth (B, H, W), the head's output.

    Models with a separate backbone (``config.backbone_config`` and not hybrid, e.g. BEiT or DINOv2 DPTs) already
    pass the grid to the neck, so they take the stock forward.
    """
    if getattr(model, "backbone", None) is not None:
        return model(pixel_values).predicted_depth
    config = model.config
    grid = patch_grid(model, pixel_values.shape[-2], pixel_values.shape[-1])
    if config.is_hybrid:
        tokens, neck_inputs = _hybrid_embeddings(model, pixel_values, grid)
        wanted_layers = set(config.backbone_out_indices[2:])  # the first two neck inputs are BiT feature maps
    else:
        tokens = model.dpt.embeddings(pixel_values).last_hidden_states  # interpolates its position embeddings
        neck_inputs = []
        wanted_layers = set(config.backbone_out_indices)
    for index, layer in enumerate(model.dpt.encoder.layer):
        tokens = layer(tokens)
        if index in wanted_layers:
            neck_inputs.append(tokens)
    features = model.neck(neck_inputs, *grid)
    return model.head(features)
