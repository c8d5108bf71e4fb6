"""``python -m shards show``: a readable PNG grid, one row per sample (image | colour-mapped label)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shards.cli import main
from shards.codec import decode_jpeg
from tests.shards.conftest import scene_members


def test_show_writes_a_readable_grid_of_the_expected_size(shard_set, tmp_path, capsys):
    paths = shard_set((3, 3))
    out = tmp_path / "pics" / "grid.png"
    assert main(["show", str(paths[0].parent), "--n", "4", "--out", str(out), "--cell-height", "48"]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as picture:
        picture.load()
        grid = np.asarray(picture.convert("RGB"))
    # 4 rows of 48 px + 4 px gaps under a 16 px title; row labels "s0/000" (6 chars, 8 px each, + 8) on the left,
    # then two 64x48 cells (the 128x96 samples scaled to 48 px high) with 4 px gaps.
    assert grid.shape == (16 + 4 * (48 + 4), 6 * 8 + 8 + 2 * 64 + 2 * 4, 3)
    # The first row's image cell holds the first sample's image, downscaled.
    first = decode_jpeg(scene_members("s0/000", 0)["jpg"])
    small = np.asarray(Image.fromarray(first).resize((64, 48), Image.BILINEAR)).astype(int)
    cell = grid[16 : 16 + 48, 56 : 56 + 64].astype(int)
    assert np.abs(cell - small).mean() < 3
    # The label cell is colour-mapped (not grey), with black holes.
    label = grid[16 : 16 + 48, 56 + 64 + 4 : 56 + 128 + 4]
    assert (label.std(axis=2) > 20).mean() > 0.5


def test_show_with_fewer_samples_than_asked(shard_set, tmp_path):
    paths = shard_set((2,))
    out = tmp_path / "grid.png"
    assert main(["show", str(paths[0]), "--n", "16", "--out", str(out), "--cell-height", "32"]) == 0
    with Image.open(out) as picture:
        assert picture.size[1] == 16 + 2 * (32 + 4)
