"""Shards as an evaluation source: ``evaluate --data SHARDS`` scores a model on the ground truth that ``python -m shards
import-rgbd`` writes, the data a user has at hand once their RGB-D frames are imported.

Shards are read by the public reader (``from shards import samples``: checksums verified, damaged samples skipped and
counted), and each sample's json says what its labels hold: the ground truth is its first ``metric_depth`` label; a
sample with only a teacher's relative labels is refused, since the metrics compare metres.

The evaluation reads a source by position (``len()``, ``source[i]``), a shard set as a stream. One pass at opening
counts the samples and finds each one's ground truth; frames are then taken in order from one pass kept open (the
last one kept), and asking for an earlier frame starts a new pass (the scoring reads in order; the report's picture
asks for three frames again, so a report costs at most five passes of decoding, a few milliseconds a sample).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shards import samples
from shards.format import METRIC_DEPTH
from shards.public_reader import Sample
from shards.reader import SHARD_SUFFIX
from shards.tools.nyu import DepthFrame

log = logging.getLogger(__name__)


def is_shard_set(data: str | None) -> bool:
    """Whether ``--data`` names shards: a ``.tar`` file or pattern (glob, braces), or a folder holding ``*.tar``."""
    if not data:
        return False
    path = Path(data).expanduser()
    if path.is_dir():
        return next(path.glob(f"*{SHARD_SUFFIX}"), None) is not None
    return data.endswith(SHARD_SUFFIX)


def ground_truth_name(sample: Sample, spec: str) -> str:
    """The name of the sample's first metric label; a sample without one is refused, naming what it holds."""
    for name, kind in sample.kinds.items():
        if kind == METRIC_DEPTH:
            return name
    held = ", ".join(f"{name}: {kind}" for name, kind in sample.kinds.items())
    raise ValueError(
        f"--data {spec}: sample {sample.key} holds no metric depth ({held}); evaluate scores against ground truth "
        "in metres, such as the shards python -m shards import-rgbd writes, not a teacher's relative labels"
    )


class ShardFrames:
    """The samples of a shard set as :class:`~shards.tools.nyu.DepthFrame` s: the image, its ground truth (metres,
    0 = invalid), its position and its key as the name. ``limit`` keeps the first samples only."""

    def __init__(self, spec: str, limit: int | None = None) -> None:
        self.spec = spec
        self.reader = samples(spec)  # FileNotFoundError for a location that matches nothing
        self.keys: list[str] = []
        self.labels: list[str] = []  # each frame's ground-truth label name
        for sample in self.reader:
            if limit is not None and len(self.keys) >= limit:
                break
            self.labels.append(ground_truth_name(sample, spec))
            self.keys.append(sample.key)
        self.counts = self.reader.counts
        if self.counts.skipped or self.counts.lost:
            log.warning("--data %s: %s", spec, self.counts)
        self._stream: Iterator[Sample] | None = None
        self._next = 0  # the position the open pass yields next
        self._last: DepthFrame | None = None  # the frame read last (opening reads frame 0, the scoring starts there)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, position: int) -> DepthFrame:
        if not 0 <= position < len(self):
            raise IndexError(f"frame {position} of {len(self)}")
        if self._last is not None and self._last.index == position:
            return self._last
        if self._stream is None or position < self._next:
            self._stream, self._next = iter(self.reader), 0
        while self._next <= position:
            sample = next(self._stream, None)
            if sample is None:
                raise ValueError(f"--data {self.spec}: the shards ended before sample {self.keys[position]}")
            self._next += 1
        if sample.key != self.keys[position]:
            raise ValueError(f"--data {self.spec}: sample {position} is {sample.key}, was {self.keys[position]}")
        self._last = DepthFrame(sample.image, sample.labels[self.labels[position]], position, sample.key)
        return self._last

    def describe(self) -> dict[str, Any]:
        return {
            "source": "shards",
            "shards": self.spec,
            "shard_files": len(self.reader.urls),
            "ground_truth": sorted(set(self.labels)),
            "skipped": self.counts.skipped,
            "lost": self.counts.lost,
            "count": len(self),
        }
