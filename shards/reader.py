"""Read shards: one function builds the WebDataset pipeline for training and for evaluation, and every sample it
delivers is checked and counted.

Two modes, as in open_clip:
- exact epochs (evaluation, verification): shards are shuffled deterministically by epoch (or not at all), then
  split by node and by DataLoader worker, so every sample is read exactly once per epoch across all readers;
- resampled (training): each reader draws shards with replacement from its own seeded stream, forever; the
  caller bounds an epoch with ``with_epoch``.

Every sample's bytes are checked against its checksums (``shards.format``) before it is decoded. Python's
``tarfile`` in stream mode (what WebDataset uses) treats a damaged or cut header as the end of the archive: the rest
of the shard vanishes without an exception. So a shard is read here to its end and the keys it yielded are compared
with what its stats json lists: an expected sample that never arrived is *lost*, one that arrived damaged is
*skipped*, and both are counted by a :class:`SkipCounter`. Only a tar read to its end is compared, so the end of an
epoch or a shuffle buffer never looks like a loss. ``verify`` reads tars through the same functions. The last stage
decodes: a sample that does not decode is skipped, and one marked as a benchmark's evaluation split stops a reader
that refuses those (:class:`EvalSplitError`).
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import webdataset as wds
from webdataset.tariterators import base_plus_ext
from webdataset.utils import pytorch_worker_info

from shards.format import check_members, decode_sample, expected_count, expected_members, marked_eval_split
from shards.writer import SHARD_SUFFIX, read_stats

logger = logging.getLogger(__name__)

#: The damaged share is judged once this many samples were read: one damaged sample in a first batch of 64 is not
#: 1.6 % of a shard set.
MIN_JUDGED_SAMPLES = 1000

LOST_TAR_ERROR = "tar_error"  # the tar raised: cut or damaged
LOST_TAR_ENDED = "tar_ended"  # the tar ended early without an error (a damaged header reads as the end)


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def open_stream(url: str) -> BinaryIO:
    return open(url, "rb") if is_local(url) else wds.gopen(url, "rb")


@dataclass
class TarSample:
    """Consecutive tar members sharing a key: ``(member name, data)`` in tar order."""

    key: str
    members: list[tuple[str, bytes]] = field(default_factory=list)

    def raw(self, url: str) -> dict[str, Any]:
        """The WebDataset sample: extension -> bytes, ``__key__`` and ``__url__`` (a repeated member keeps the last)."""
        raw: dict[str, Any] = {"__key__": self.key, "__url__": url}
        for name, data in self.members:
            raw[name[len(self.key) + 1 :]] = data
        return raw


def tar_samples(stream: BinaryIO) -> Iterator[TarSample]:
    """Members grouped by key (WebDataset's rule: the name up to the file name's first dot). When the tar breaks,
    the group read so far is yielded (its members are whole) and the error raised after it."""
    current: TarSample | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                data = handle.read()
                key, _ = base_plus_ext(member.name)
                key = key if key is not None else member.name
                if current is not None and current.key != key:
                    yield current
                    current = None
                if current is None:
                    current = TarSample(key)
                current.members.append((member.name, data))
    except Exception:
        if current is not None:
            yield current
        raise
    if current is not None:
        yield current


def load_stats(url: str) -> tuple[dict[str, Any] | None, str | None]:
    """A local shard's stats json and a problem with it; remote shards have none here (no problem)."""
    if not is_local(url):
        return None, None
    try:
        stats = read_stats(Path(url))
    except (OSError, ValueError) as error:
        return None, f"stats json unreadable: {error}"
    if stats is None:
        return None, "no stats json beside it: the shard is unfinished (its writer did not close it)"
    return stats, None


class ShardCheck:
    """One shard read against its stats: each sample is intact, damaged or a stray fragment; the rest is missing."""

    def __init__(self, url: str, stats: dict[str, Any] | None, checksums: bool = True) -> None:
        self.url = url
        self.checksums = checksums
        self.stats = stats
        self.stats_problem: str | None = None
        try:
            self.expected = expected_members(stats)
        except (TypeError, ValueError) as error:
            self.expected, self.stats_problem = None, str(error)
        self.expected_count = expected_count(stats, self.expected)
        self.seen: list[str] = []
        self._seen: set[str] = set()
        self.intact = 0
        self.damaged: dict[str, list[str]] = {}
        self.strays: list[str] = []
        self.error: BaseException | None = None

    @property
    def has_checksums(self) -> bool:
        return self.expected is not None

    def add(self, sample: TarSample) -> list[str] | None:
        """The problems of one group of members: ``[]`` intact, None a stray fragment (not an expected sample)."""
        if sample.key in self._seen or (self.expected is not None and sample.key not in self.expected):
            names = [name for name, _ in sample.members]
            self.strays.append(f"{names} {'repeats an earlier key' if sample.key in self._seen else 'is not listed'}")
            return None
        self._seen.add(sample.key)
        self.seen.append(sample.key)
        if not self.checksums:
            return []
        expected = self.expected[sample.key] if self.expected is not None else None
        return check_members(sample.key, sample.members, expected)

    def record(self, key: str, problems: list[str]) -> None:
        if problems:
            self.damaged.setdefault(key, []).extend(problems)
        else:
            self.intact += 1

    def missing(self) -> list[str]:
        """Expected keys never read (format 2); after a tar read to its end or broken."""
        if self.expected is None:
            return []
        return [key for key in self.expected if key not in self._seen]

    def missing_count(self) -> int:
        if self.expected is not None:
            return len(self.missing())
        if self.expected_count is None:
            return 0
        return max(0, self.expected_count - len(self.seen))


def over_limit(damaged: int, total: int, fraction: float | None) -> bool:
    """More than ``fraction`` of the samples damaged, judged over at least :data:`MIN_JUDGED_SAMPLES`."""
    return fraction is not None and damaged > fraction * max(total, MIN_JUDGED_SAMPLES)


class SkipCounter:
    """Counts, per reader, the samples read, skipped (damaged) and lost (never read), by reason and by shard.

    It is also the WebDataset handler of the pipeline's other stages (an exception there skips one sample).
    ``limit`` stops a reader after that many samples not delivered; ``max_fraction`` when more than that share
    is damaged (see :func:`over_limit`). Each DataLoader worker holds its own copy; :meth:`snapshot` is what a
    worker hands to the training process.
    """

    def __init__(self, limit: int | None = None, max_fraction: float | None = None) -> None:
        self.limit = limit
        self.max_fraction = max_fraction
        self.read = 0
        self.skipped_by_reason: Counter = Counter()
        self.lost_by_reason: Counter = Counter()
        self.shards: Counter = Counter()  # url -> samples skipped or lost

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    @property
    def lost(self) -> int:
        return sum(self.lost_by_reason.values())

    @property
    def count(self) -> int:
        """Samples not delivered: skipped + lost."""
        return self.skipped + self.lost

    @property
    def delivered(self) -> int:
        """Samples yielded: read minus skipped (every skipped sample was read first)."""
        return self.read - self.skipped

    def skip(self, url: str | None, key: str | None, reason: str, detail: object) -> None:
        self.skipped_by_reason[reason] += 1
        self.shards[url or "?"] += 1
        logger.warning("skipped damaged sample %s in %s (%s): %s", key, url, reason, detail)
        self._check(detail)

    def lose(self, url: str, count: int, reason: str, detail: object) -> None:
        if count <= 0:
            return
        self.lost_by_reason[reason] += count
        self.shards[url] += count
        logger.warning("lost %d sample(s) of %s (%s): %s", count, url, reason, detail)
        self._check(detail)

    def __call__(self, exception: Exception) -> bool:
        self.skip(None, None, "error", repr(exception))
        return True

    def snapshot(self) -> dict[str, Any]:
        return {
            "read": self.read, "skipped": dict(self.skipped_by_reason), "lost": dict(self.lost_by_reason),
            "shards": dict(self.shards),
        }

    def __str__(self) -> str:
        def reasons(counter: Counter) -> str:
            return f" ({', '.join(f'{reason} {n}' for reason, n in sorted(counter.items()))})" if counter else ""

        return (f"read {self.read}, delivered {self.delivered}, skipped {self.skipped}"
                f"{reasons(self.skipped_by_reason)}, lost {self.lost}{reasons(self.lost_by_reason)}")

    def _check(self, detail: object) -> None:
        if self.limit is not None and self.count > self.limit:
            raise RuntimeError(f"more than {self.limit} corrupt samples: the shards are broken (last: {detail})")
        if over_limit(self.count, self.read + self.lost, self.max_fraction):
            worst = ", ".join(f"{url} ({n})" for url, n in self.shards.most_common(5))
            raise RuntimeError(
                f"{self.count} of {self.read + self.lost} samples read by this reader are damaged or lost, more than "
                f"{self.max_fraction:.2%}; worst shards: {worst}. Check them with: python -m shards verify <shards>"
            )


def checked_samples(
    urls: Iterator[dict[str, Any]], counter: SkipCounter, checksums: bool = True
) -> Iterator[dict[str, Any]]:
    """Pipeline stage (replaces ``wds.tarfile_to_samples``): url dicts -> raw samples whose bytes match their
    checksums; damaged ones are skipped and lost ones counted in ``counter``."""
    for item in urls:
        url = item["url"]
        stats, _ = load_stats(url)
        check = ShardCheck(url, stats, checksums)
        try:
            with open_stream(url) as stream:
                for sample in tar_samples(stream):
                    problems = check.add(sample)
                    if problems is None:
                        continue
                    counter.read += 1
                    if problems:
                        counter.skip(url, sample.key, "checksum", "; ".join(problems))
                        continue
                    yield sample.raw(url)
        except Exception as error:  # a broken tar ends this shard, the samples after the break are lost
            check.error = error
        reason = LOST_TAR_ERROR if check.error is not None else LOST_TAR_ENDED
        counter.lose(url, check.missing_count(), reason, check.error or "the tar ended before its listed samples")


class EvalSplitError(ValueError):
    """A reader that refuses evaluation splits met a sample marked as one (a ValueError: a command prints it as a
    usage error)."""


def decoded_samples(
    raws: Iterator[dict[str, Any]], decode: Callable[[dict], Any], counter: SkipCounter,
    refuse_eval_splits: str | None = None,
) -> Iterator[Any]:
    """Pipeline stage: raw samples -> ``decode(raw)``; a sample that does not decode is skipped and counted. With
    ``refuse_eval_splits``, a decoded sample whose json marks it as part of an evaluation split raises
    :class:`EvalSplitError` (its json parsed once, by the decoder), the message ending with that text."""
    for raw in raws:
        try:
            decoded = decode(raw)
        except Exception as error:  # any decoder failure is this sample's, not the run's
            counter.skip(raw.get("__url__"), raw.get("__key__"), "decode", repr(error))
            continue
        if refuse_eval_splits is not None:
            split = marked_eval_split(vars(decoded.meta))
            if split is not None:
                raise EvalSplitError(
                    f"{raw.get('__url__')}: sample {raw.get('__key__')!r} belongs to the evaluation split "
                    f"{split!r}, {refuse_eval_splits}"
                )
        yield decoded


logger = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("pipe:", "http://", "https://", "gs://", "s3://", "ais://", "hf://")


def expand_shard_urls(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard locations -> a sorted, de-duplicated list of urls.

    Accepts folders (their ``*.tar``, sorted; never handed to WebDataset, which would poll a folder for
    new shards), brace patterns (``train-{000000..000449}.tar``), globs, single files, remote urls
    (``pipe:``, http, ...), a comma-separated string of any of them, or a list.
    """
    items: list[str]
    if isinstance(spec, (str, os.PathLike)):
        items = [part for part in str(spec).split(",") if part.strip()]
    else:
        items = [str(part) for part in spec]
    urls: list[str] = []
    for item in items:
        item = item.strip()
        if item.startswith(_REMOTE_PREFIXES):
            urls.extend(wds.shardlists.expand_urls(item))
        elif os.path.isdir(item):
            found = sorted(str(path) for path in Path(item).glob(f"*{SHARD_SUFFIX}"))
            if not found:
                raise FileNotFoundError(f"no *{SHARD_SUFFIX} shards in folder {item}")
            urls.extend(found)
        elif "{" in item:
            urls.extend(wds.shardlists.expand_urls(item))
        elif any(char in item for char in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise FileNotFoundError(f"no shards match {item}")
            urls.extend(found)
        elif os.path.isfile(item):
            urls.append(item)
        else:
            raise FileNotFoundError(f"shard location {item} is neither a folder, a file, a pattern nor a url")
    seen: set[str] = set()
    unique = [url for url in urls if not (url in seen or seen.add(url))]
    if not unique:
        raise FileNotFoundError(f"no shards found in {spec!r}")
    return unique


def split_shards(
    urls: Iterator[dict], rank: int | None = None, world_size: int | None = None,
    worker: int | None = None, num_workers: int | None = None,
) -> Iterator[dict]:
    """Keep the shards of this (node, worker): shard ``i`` goes to reader ``i % (world_size * num_workers)``.

    Explicit arguments override what torch.distributed / the DataLoader report, so tests can simulate nodes.
    """
    info = pytorch_worker_info()
    rank = info[0] if rank is None else rank
    world_size = info[1] if world_size is None else world_size
    worker = info[2] if worker is None else worker
    num_workers = info[3] if num_workers is None else num_workers
    reader, readers = rank * num_workers + worker, world_size * num_workers
    for index, url in enumerate(urls):
        if index % readers == reader:
            yield url


def build_pipeline(
    urls: str | Sequence[str],
    *,
    training: bool,
    transform: Callable[[Any], Any] | None = None,
    decode: Callable[[dict], Any] | None = decode_sample,
    seed: int = 0,
    shuffle_buffer: int = 2000,
    resampled: bool | None = None,
    split: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    skip_counter: SkipCounter | None = None,
    checksums: bool = True,
    refuse_eval_splits: str | None = None,
) -> wds.DataPipeline:
    """The one reader of shards. Yields decoded :class:`~shards.format.DepthSample` (then ``transform``).

    ``training=True``: resampled shards (unless ``resampled=False``) and a sample shuffle buffer on the raw
    bytes; bound it with ``.with_epoch(n)``. ``training=False``: every sample exactly once, in shard order,
    split across nodes and workers when ``split`` (set ``split=False`` to read everything in one process).
    ``checksums=False`` skips the sha256 of every member (counting lost samples still works).
    ``refuse_eval_splits``: a sample marked as part of a benchmark's evaluation split (``eval_split`` in its json,
    :func:`shards.format.marked_eval_split`) stops the reader with :class:`shards.reader.EvalSplitError`, whose
    message names the shard and the sample and ends with this text (who refuses it and how to allow it); never
    counted as damage (a sample that must not be read here, not a broken one). ``None``: such samples are read.
    """
    urls = expand_shard_urls(urls)
    resampled = training if resampled is None else resampled
    handler = skip_counter or SkipCounter()
    stages: list[Any]
    if resampled:
        stages = [wds.ResampledShards(urls, seed=seed, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(urls)]
        if training:
            stages.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed))
        if split:
            stages.append(functools.partial(split_shards, rank=rank, world_size=world_size))
    stages.append(functools.partial(checked_samples, counter=handler, checksums=checksums))
    if training and shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 500), seed=seed))
    if decode is not None:
        stages.append(
            functools.partial(decoded_samples, decode=decode, counter=handler, refuse_eval_splits=refuse_eval_splits)
        )
    elif refuse_eval_splits is not None:
        raise ValueError("refuse_eval_splits reads the decoded sample's json: it needs a decode")
    if transform is not None:
        stages.append(wds.map(transform, handler=handler))
    return wds.DataPipeline(*stages)
