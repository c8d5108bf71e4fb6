"""Read shards: one function builds the WebDataset pipeline for training and for evaluation.

Two modes, as in open_clip:
- exact epochs (evaluation, verification): shards are shuffled deterministically by epoch (or not at all), then
  split by node and by DataLoader worker, so every sample is read exactly once per epoch across all readers;
- resampled (training): each reader draws shards with replacement from its own seeded stream, forever; the
  caller bounds an epoch with ``with_epoch``.

Every sample's bytes are checked against its checksums (``shards.integrity``) before it is decoded; a damaged sample
is skipped, and the samples a broken tar never delivered are counted as lost, by a :class:`SkipCounter`.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import webdataset as wds
from webdataset.utils import pytorch_worker_info

from shards.codec import decode_sample
from shards.tarstream import SkipCounter, checked_samples, decoded_samples
from shards.writer import SHARD_SUFFIX

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


def screened_samples(raws: Iterator[dict], screen: Callable[[dict], None]) -> Iterator[dict]:
    """Pipeline stage: each raw sample through ``screen`` (which raises to stop the reader), then on."""
    for raw in raws:
        screen(raw)
        yield raw


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
    screen: Callable[[dict], None] | None = None,
) -> wds.DataPipeline:
    """The one reader of shards. Yields decoded :class:`~shards.format.DepthSample` (then ``transform``).

    ``training=True``: resampled shards (unless ``resampled=False``) and a sample shuffle buffer on the raw
    bytes; bound it with ``.with_epoch(n)``. ``training=False``: every sample exactly once, in shard order,
    split across nodes and workers when ``split`` (set ``split=False`` to read everything in one process).
    ``checksums=False`` skips the sha256 of every member (counting lost samples still works). ``screen`` sees each
    intact raw sample (``__url__``, ``__key__``, members as bytes) before decoding; what it raises stops the reader,
    never counted as damage (a sample that must not be read here, not a broken one).
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
    if screen is not None:
        stages.append(functools.partial(screened_samples, screen=screen))
    if training and shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 500), seed=seed))
    if decode is not None:
        stages.append(functools.partial(decoded_samples, decode=decode, counter=handler))
    if transform is not None:
        stages.append(wds.map(transform, handler=handler))
    return wds.DataPipeline(*stages)
