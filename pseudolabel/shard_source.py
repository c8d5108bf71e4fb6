"""Image shards as a source, for collections of tens of millions (img2dataset output and the like).

Nothing here holds a record per image beyond one shard: a process lists the shard names, the manifest hashes the
names with their sizes, and a shard's tar headers are read only by the process that labels it. The unit of work is an
input shard, cut into slices of at most ``output.samples_per_shard`` of its samples; slice ``s`` of shard ``i`` is job
``i * SLICE_STRIDE + s`` and writes one output shard. ``sample_count`` keeps the samples whose seeded hash of the key
falls below ``count / total`` (``total`` counted once by the main process, streamed): about ``count`` of them, not
exactly. Keys repeated across input shards are found after labelling (``pseudolabel.dedupe``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any

from pseudolabel.index import InputItem
from shards.format import check_key

logger = logging.getLogger(__name__)

#: Image member extensions in image shards, in order of preference when a sample holds several.
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif")
#: Job ids of one input shard: ``shard * SLICE_STRIDE + slice``; an input shard may have this many slices.
SLICE_STRIDE = 10_000
_HASH_SPACE = 1 << 64


class ShardSourceError(ValueError):
    """Image shards that cannot be used; the message says what to fix."""


def list_shard_urls(spec: str) -> list[str]:
    """The input shards, sorted (names only: nothing is opened)."""
    from shards.reader import expand_shard_urls

    try:
        urls = expand_shard_urls(spec)
    except FileNotFoundError as error:
        raise ShardSourceError(str(error)) from error
    for url in urls:
        if not os.path.isfile(url):
            raise ShardSourceError(f"image shards must be local files (random access by offset), got {url}")
    return [os.path.abspath(url) for url in urls]


def names_hash(urls: list[str]) -> str:
    """sha256 of the shard paths: every process compares its own listing with the main process's."""
    return hashlib.sha256("\n".join(urls).encode("utf-8", "surrogateescape")).hexdigest()


def shard_list_hash(urls: list[str]) -> str:
    """sha256 over each shard's path and size, in order: what the manifest compares on a rerun."""
    digest = hashlib.sha256()
    for url in urls:
        digest.update(f"{url}\t{os.path.getsize(url)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _split_member(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: the key is the member path up to the first dot of its file name."""
    folder, file_name = posixpath.split(name)
    if "." not in file_name:
        return None
    stem, extension = file_name.split(".", 1)
    return (posixpath.join(folder, stem) if folder else stem), extension


def _members(url: str) -> dict[str, dict[str, tarfile.TarInfo]]:
    """Sample key -> extension -> member, by a header scan (no member is read)."""
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tarfile.open(url) as tar:
        for member in tar:
            split = _split_member(member.name) if member.isfile() else None
            if split is not None:
                members.setdefault(split[0], {})[split[1].lower()] = member
    return members


def count_samples(urls: list[str]) -> int:
    """Samples in every shard, one shard at a time (what ``sample_count`` is a fraction of)."""
    return sum(len(_members(url)) for url in urls)


@dataclass
class ShardSet:
    """The input shards and the seeded sample; :meth:`scan` lists one shard's kept inputs, sorted by key."""

    urls: list[str]
    name: str
    sample_count: int = 0
    sample_seed: int = 0
    total: int | None = None  # samples in every shard; counted only when sampling

    @property
    def threshold(self) -> int | None:
        """Keys hashing below this are kept; None keeps every sample."""
        if self.sample_count == 0 or self.total is None or self.sample_count >= self.total:
            return None
        return self.sample_count * _HASH_SPACE // self.total

    def keep(self, key: str) -> bool:
        threshold = self.threshold
        if threshold is None:
            return True
        seeded = hashlib.sha256(f"{self.sample_seed}\0{key}".encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(seeded[:8], "big") < threshold

    def scan(self, shard: int) -> list[InputItem]:
        """The kept inputs of one shard: each sample's preferred image member's offset and size (None: no image)."""
        url = self.urls[shard]
        items = []
        for sample_key, by_extension in _members(url).items():
            key = check_key(f"{self.name}/{sample_key}")
            if not self.keep(key):
                continue
            image = next((by_extension[ext] for ext in SHARD_IMAGE_EXTENSIONS if ext in by_extension), None)
            locator = (url, image.offset_data, image.size) if image is not None else None
            items.append(InputItem(key=key, origin=f"{url}#{sample_key}", locator=locator))
        items.sort(key=lambda item: item.key)
        return items

    def describe(self, path: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """The manifest's source record. Sampling needs the number of samples: counted here (streamed, nothing kept)
        unless ``previous`` (the stored manifest's source) counted the same shards of the same sizes."""
        list_hash = shard_list_hash(self.urls)
        if self.sample_count and self.total is None:
            if previous and previous.get("shard_list_hash") == list_hash and previous.get("sample_total"):
                self.total = int(previous["sample_total"])
            else:
                self.total = count_samples(self.urls)
        return {
            "kind": "shards",
            "path": path,
            "name": self.name,
            "shards": len(self.urls),
            "shard_list_hash": list_hash,
            "sample_count": self.sample_count,
            "sample_seed": self.sample_seed,
            "sample_total": self.total,
        }


class TarMemberReader:
    """Bytes of an image member inside a tar, read at its recorded offset (no tar parsing in the workers)."""

    def __call__(self, item: InputItem) -> bytes:
        path, offset, size = item.locator
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise OSError(f"{path} ended after {len(data)} of {size} bytes at offset {offset}")
        return data
