"""A picture of samples from shards: ``python -m shards show DIR --n 16 --out grid.png``.

One row per sample, its key on the left: the stored image, then its label colour-mapped by ``shards.viz`` (near =
warm for both kinds; invalid pixels grey) with a colour bar in the label's units. Each label uses its own 2-98 %
range, since relative labels have no common scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shards.format import RELATIVE_INVERSE_DEPTH, DepthSample
from shards.reader import build_pipeline
from shards.viz import colorize_depth, image_grid, save_picture


def sample_row(sample: DepthSample) -> list[np.ndarray]:
    """[image, colour-mapped label] of one sample, both uint8 (H, W, 3); the label's colour bar names its kind."""
    inverse = sample.meta.kind == RELATIVE_INVERSE_DEPTH
    units = "relative inverse depth" if inverse else "depth (m)"
    return [sample.image, colorize_depth(sample.depth, sample.valid, inverse=inverse, units=units)]


def show_samples(
    spec: str | Sequence[str], count: int = 16, out: str | Path = "grid.png", cell_height: int = 192
) -> Path:
    """Draw the first ``count`` samples of the shard set ``spec`` (in shard order) into ``out`` (a PNG)."""
    if count < 1:
        raise ValueError(f"--n must be at least 1, got {count}")
    pipeline = build_pipeline(spec, training=False, split=False)
    samples = list(itertools.islice(iter(pipeline), count))
    if not samples:
        raise ValueError(f"no readable sample in {spec!r}")
    grid = image_grid(
        [sample_row(sample) for sample in samples],
        titles=["image", "label"],
        row_labels=[sample.key for sample in samples],
        cell_height=cell_height,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_picture(grid, str(out))
    return out
