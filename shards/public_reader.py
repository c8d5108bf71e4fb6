"""The public reader: ``from shards import samples``; ``for s in samples("out/shards"): ...``.

For a person with a shard set and a Python prompt: each sample as plain arrays and a dict, every teacher's label by
name, checksums verified, damaged samples skipped and counted. It is the training reader's exact-epoch mode
(``shards.reader.build_pipeline(training=False, split=False)``: the same location forms, the same tar checks against
the stats json, the same :class:`~shards.reader.SkipCounter`) with one decoder on top, so there is one reader of
shards, not two. Training keeps its own WebDataset pipeline (resampled shards, workers, shuffle buffer).

The module is not named ``samples``: ``from shards import samples`` must give the function, and a submodule of that
name would replace it on the package whenever something imported the module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shards.format import decode_sample, label_names
from shards.reader import SkipCounter, build_pipeline, expand_shard_urls


@dataclass
class Sample:
    """One sample as plain arrays.

    ``image`` uint8 (H, W, 3) RGB; ``label`` float32 (H, W), the first teacher's label (0 where invalid) and
    ``valid`` its bool mask, ``kind`` its kind (``relative_inverse_depth`` or ``metric_depth``); ``labels``: every
    label by name (its teacher's id, ``ground_truth`` for sensor depth, ``#<index>`` added to a repeated name), the
    first one first, with ``masks`` and ``kinds`` by the same names; ``meta``: the json record as a dict (its
    ``labels`` list derived for shards written before format version 3).
    """

    key: str
    image: np.ndarray
    label: np.ndarray
    valid: np.ndarray
    kind: str
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def to_sample(raw: dict[str, Any]) -> Sample:
    """Raw members (checked) -> :class:`Sample`; raises for a sample that does not decode (the reader counts it)."""
    decoded = decode_sample(raw)
    names = label_names(decoded.labels)
    return Sample(
        key=decoded.key, image=decoded.image, label=decoded.depth, valid=decoded.valid, kind=decoded.meta.kind,
        labels={name: label.depth for name, label in zip(names, decoded.labels)},
        masks={name: label.valid for name, label in zip(names, decoded.labels)},
        kinds={name: label.kind for name, label in zip(names, decoded.labels)},
        meta=dataclasses.asdict(decoded.meta),
    )


class SampleReader:
    """Iterable over the samples of a shard set, in shard order, each once per pass. After (or during) a pass,
    ``counts`` is that pass's :class:`~shards.reader.SkipCounter`: ``read`` (samples taken from the tars),
    ``delivered``, ``skipped`` and ``skipped_by_reason`` (``checksum``, ``decode``), ``lost`` and ``lost_by_reason``
    (``tar_ended``, ``tar_error``: listed in the stats json, never arrived), ``shards`` (url -> samples not
    delivered); ``str(counts)`` says it in one line."""

    def __init__(self, spec: str | os.PathLike | Sequence[str | os.PathLike], checksums: bool = True) -> None:
        self.urls = expand_shard_urls(spec)
        self.checksums = checksums
        self.counts = SkipCounter()

    def __iter__(self) -> Iterator[Sample]:
        self.counts = SkipCounter()
        pipeline = build_pipeline(self.urls, training=False, split=False, decode=to_sample,
                                  skip_counter=self.counts, checksums=self.checksums)
        yield from pipeline

    def __repr__(self) -> str:
        return f"samples({len(self.urls)} shard(s); last pass: {self.counts})"


def samples(spec: str | os.PathLike | Sequence[str | os.PathLike], checksums: bool = True) -> SampleReader:
    """The samples of a shard set: a folder (its ``*.tar``), a glob, a brace pattern
    (``train-{000000..000009}.tar``), a url (``https://...``, ``pipe:...``), a comma list or a list of any of them.
    Raises ``FileNotFoundError`` for a location that matches nothing. ``checksums=False`` skips the sha256 checks
    (lost samples are still counted)."""
    return SampleReader(spec, checksums)
