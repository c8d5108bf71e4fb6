"""The grid-aware DPT forward equals transformers' stock forward where both apply, and runs 4:3 unsquashed."""

from __future__ import annotations

import pytest
import torch

from pseudolabel.teachers import dpt_depth
from pseudolabel.tiny_teacher import build_tiny_teacher


@pytest.fixture(scope="module", params=["dpt", "dpt_hybrid"])
def model(request):
    model = build_tiny_teacher(request.param, seed=3)
    with torch.no_grad():  # non-zero position embeddings, so their interpolation matters
        torch.nn.init.normal_(model.dpt.embeddings.position_embeddings, std=0.5)
        torch.nn.init.normal_(model.dpt.embeddings.cls_token, std=0.5)
    return model


@torch.inference_mode()
def test_equals_stock_forward_on_square_inputs(model):
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    stock = model(pixel_values=pixels).predicted_depth
    ours = dpt_depth(model, pixels)
    assert ours.shape == stock.shape == (2, 64, 64)
    assert stock.std() > 0.01  # a map that varies, so equality means something
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)


@torch.inference_mode()
def test_runs_384x512_at_native_aspect(model):
    pixels = torch.randn(1, 3, 384, 512, generator=torch.Generator().manual_seed(1))
    depth = dpt_depth(model, pixels)
    assert depth.shape == (1, 384, 512)
    assert torch.isfinite(depth).all() and depth.std() > 0.01


@torch.inference_mode()
def test_position_embeddings_follow_the_real_grid(model):
    """A 192x256 input has a 12x16 token grid: changing the position embedding of the tiny model's last grid column
    (interpolated onto the 12x16 grid's right side) changes the output on the right, hardly on the left; a
    square grid would have misplaced it."""
    pixels = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(2))
    before = dpt_depth(model, pixels)
    grid = model.dpt.embeddings.position_embeddings  # (1, 1 + 4 * 4, C) at the tiny model's 64x64 size
    saved = grid.detach().clone()
    with torch.no_grad():
        grid[0, 1 + 4 * 1 + 3] += 5.0  # row 1, last column of the 4x4 grid
        after = dpt_depth(model, pixels)
        grid.copy_(saved)
    change = (after - before).abs()[0]
    assert change[:, 192:].mean() > 10 * change[:, :64].mean()


def test_rejects_sizes_off_the_patch_grid(model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        dpt_depth(model, torch.zeros(1, 3, 100, 128))
