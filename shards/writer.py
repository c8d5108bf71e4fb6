"""Write shards so that a crash never leaves a half shard that looks whole.

Each shard is written to ``<name>.tar.tmp``, flushed and fsynced, renamed to ``<name>.tar``, and only then is its
stats json written (also through a temporary name). A shard counts as finished when its stats json exists.

Every sample is sealed as it is written (``shards.format.seal_sample``): its json gets the sha256 of its other
members, and the stats json lists every member in tar order with its size and sha256.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import webdataset as wds

from shards.format import FORMAT_VERSION, MemberRecord, digest, seal_sample

SHARD_SUFFIX = ".tar"
STATS_SUFFIX = ".stats.json"
TMP_SUFFIX = ".tmp"

#: The field of a labelling run's ``summary.json`` and an import's summary that maps shard name -> stats sha256.
STATS_SHA256_FIELD = "stats_sha256"


def check_prefix(prefix: str, what: str = "shard prefix") -> str:
    """Refuse a shard-name prefix that is empty or holds ``-`` (the name's field separator) or ``/``."""
    if "-" in prefix or "/" in prefix or not prefix:
        raise ValueError(f"{what} {prefix!r} must be non-empty and hold no '-' or '/'")
    return prefix


#: A shard's file name, :func:`shard_name`'s output, with its fields named ``prefix``, ``process`` and ``index``.
SHARD_NAME = re.compile(rf"^(?P<prefix>[^-/]+)-(?P<process>\d{{3,}})-(?P<index>\d{{6,}}){re.escape(SHARD_SUFFIX)}$")


def shard_name(prefix: str, process: int, index: int) -> str:
    """``{prefix}-{process:03d}-{index:06d}.tar``: ``index`` is the job id, ``process`` records the writer."""
    check_prefix(prefix)
    return f"{prefix}-{process:03d}-{index:06d}{SHARD_SUFFIX}"


def stats_path(shard_path: str | Path) -> Path:
    """The stats json beside a shard: ``x.tar`` -> ``x.stats.json``."""
    shard_path = Path(shard_path)
    return shard_path.with_name(shard_path.name[: -len(SHARD_SUFFIX)] + STATS_SUFFIX)


def read_stats(shard_path: str | Path) -> dict[str, Any] | None:
    """The stats of a finished shard, or None when the shard is unfinished (no stats json)."""
    path = stats_path(shard_path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def file_sha256(path: str | Path) -> str:
    """The sha256 of a small file (a stats json), as manifests and summaries record it."""
    return digest(Path(path).read_bytes())


def write_json_atomic(path: Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Writes one shard (one job) atomically, with its stats json written last.

    Use as a context manager: leaving it with an exception removes the temporary file and writes no stats,
    so the job stays pending and is redone on the next run.
    """

    def __init__(self, directory: str | Path, prefix: str, process: int, index: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / shard_name(prefix, process, index)
        self.tmp_path = self.path.with_name(self.path.name + TMP_SUFFIX)
        self._file = open(self.tmp_path, "wb")
        self._tar = wds.TarWriter(self._file)
        self._started = time.perf_counter()
        self.count = 0
        self.keys: set[str] = set()
        self.rejects: dict[str, list[str]] = {}
        self.members: list[MemberRecord] = []
        self.stats_sha256: str | None = None

    def write(self, sample: Mapping[str, Any]) -> None:
        """Write one sample (``__key__`` and its members; the json a :class:`~shards.format.SampleMeta` record),
        sealed with the sha256 of its members."""
        key = sample["__key__"]
        if key in self.keys:
            raise ValueError(f"sample key {key!r} written twice to {self.path.name}")
        sealed, records = seal_sample(sample)
        self._tar.write(sealed)  # members in sorted order, as the records list them
        self.members.extend(records)
        self.keys.add(key)
        self.count += 1

    def reject(self, key: str, reason: str) -> None:
        """Record an input that produced no sample, by reason; it goes into the stats json."""
        self.rejects.setdefault(reason, []).append(key)

    def close(self, **extra: Any) -> dict[str, Any]:
        """Finish the shard: fsync, rename, then write the stats json. Returns the stats; ``stats_sha256`` then holds
        the sha256 of the stats json as written (for a summary to record)."""
        self._tar.close()  # closes the underlying file as well
        with open(self.tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.tmp_path, self.path)
        stats = {
            "shard": self.path.name,
            "count": self.count,
            "bytes": self.path.stat().st_size,
            "seconds": round(time.perf_counter() - self._started, 3),
            "rejects": {reason: sorted(keys) for reason, keys in sorted(self.rejects.items())},
            **extra,
            "format_version": FORMAT_VERSION,
            "members": [record.as_list() for record in self.members],
        }
        write_json_atomic(stats_path(self.path), stats)
        self.stats_sha256 = file_sha256(stats_path(self.path))
        return stats

    def abort(self) -> None:
        try:
            self._tar.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.path.exists():
            self.close()


class ShardSetWriter:
    """Writes a stream of samples into consecutive shards of ``samples_per_shard``, each one atomic.

    For importers (ground truth, generated scenes) that have no job list; pseudolabel writes one
    :class:`ShardWriter` per job instead.
    """

    def __init__(
        self, directory: str | Path, prefix: str, samples_per_shard: int = 1000, process: int = 0, **extra: Any
    ) -> None:
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be at least 1")
        self.directory = Path(directory)
        self.prefix = prefix
        self.samples_per_shard = samples_per_shard
        self.process = process
        self.extra = extra
        self.next_index = 0
        self.shards: list[dict[str, Any]] = []
        self._current: ShardWriter | None = None
        self._pending_rejects: list[tuple[str, str]] = []

    def write(self, sample: Mapping[str, Any]) -> None:
        if self._current is None:
            self._current = ShardWriter(self.directory, self.prefix, self.process, self.next_index)
            self.next_index += 1
            for key, reason in self._pending_rejects:
                self._current.reject(key, reason)
            self._pending_rejects.clear()
        self._current.write(sample)
        if self._current.count >= self.samples_per_shard:
            self._finish_current()

    def reject(self, key: str, reason: str) -> None:
        if self._current is not None:
            self._current.reject(key, reason)
        else:
            self._pending_rejects.append((key, reason))

    def _finish_current(self) -> None:
        assert self._current is not None
        self.shards.append(self._current.close(**self.extra))
        self._current = None

    def close(self) -> list[dict[str, Any]]:
        if self._current is None and self._pending_rejects:
            # Rejects after the last full shard still need a home: an empty shard carries them.
            self._current = ShardWriter(self.directory, self.prefix, self.process, self.next_index)
            self.next_index += 1
            for key, reason in self._pending_rejects:
                self._current.reject(key, reason)
            self._pending_rejects.clear()
        if self._current is not None:
            self._finish_current()
        return self.shards

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and self._current is not None:
            self._current.abort()
            self._current = None
        elif exc_type is None:
            self.close()
