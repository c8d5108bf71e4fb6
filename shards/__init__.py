"""The shard library: the sample format both stages share, and the tools that write, read, check and draw it.

``from shards import samples`` is the public reader (:func:`shards.public_reader.samples`). It is imported on first
use, so that ``import shards`` (every ``python -m shards`` command) does not load WebDataset and numpy first.
"""

from __future__ import annotations

from typing import Any

__all__ = ["samples"]


def __getattr__(name: str) -> Any:
    if name == "samples":
        from shards.public_reader import samples

        return samples
    raise AttributeError(f"module 'shards' has no attribute {name!r}")
