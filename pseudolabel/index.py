"""The sorted input list on disk: listing streams through an external sort into a file read by offset.

Folder, list and ``datasets`` sources are cut into jobs of consecutive inputs of one global sorted list. Holding that
list in memory costs every process about 440 bytes per input (16.7 s and 444 MB for a million; BENCHMARKS.md), so
the main process writes it once instead: records ``[key, origin, locator]`` are sorted in runs of
:data:`RUN_RECORDS`, merged (stably, so equal records keep their listing order), sampled and flagged on the way out,
and written as one JSON line each, with a file of uint64 line offsets beside it. Every process then reads only its
own jobs' lines. Memory stays one run, whatever the number of inputs; the seeded sample keeps its chosen positions
(8 bytes each) and picks exactly the inputs the in-memory list picked.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import random
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RUN_RECORDS = 100_000  # records sorted in memory at once: ~40 MB of Python objects
MERGE_FAN_IN = 64  # runs merged at once (open files); more runs are merged in rounds
OFFSETS_SUFFIX = ".offsets"
_OFFSET = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class InputItem:
    """One input: its sample ``key``, its ``origin`` (path, row or shard member; the json's ``source``), where its
    bytes are (``locator``: a path, a row index, or ``(tar path, offset, size)``), and whether its key is taken."""

    key: str
    origin: str
    locator: Any
    duplicate: bool = False


def _order(record: list) -> tuple[str, str]:
    return record[0], record[1]


def _write_run(records: list[list], path: Path) -> Path:
    records.sort(key=_order)  # stable: equal (key, origin) keep their listing order
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return path


def _read_run(path: Path) -> Iterator[list]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            yield json.loads(line)


def sorted_runs(records: Iterable[list], scratch: Path) -> tuple[list[Path], int]:
    """Cut ``records`` (lists whose first two fields order them) into sorted run files; returns them and the count."""
    runs, count, batch = [], 0, []
    for record in records:
        batch.append(record)
        count += 1
        if len(batch) == RUN_RECORDS:
            runs.append(_write_run(batch, scratch / f"run-{len(runs):08d}.jsonl"))
            batch = []
    if batch:
        runs.append(_write_run(batch, scratch / f"run-{len(runs):08d}.jsonl"))
    return runs, count


def merge_runs(runs: list[Path], scratch: Path) -> Iterator[list]:
    """Merge sorted runs; more than :data:`MERGE_FAN_IN` are merged in rounds of consecutive groups (stable)."""
    round_number = 0
    while len(runs) > MERGE_FAN_IN:
        round_number += 1
        merged = []
        for start in range(0, len(runs), MERGE_FAN_IN):
            group = runs[start : start + MERGE_FAN_IN]
            path = scratch / f"round{round_number}-{start:08d}.jsonl"
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
                for record in heapq.merge(*(_read_run(run) for run in group), key=_order):
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            for run in group:
                run.unlink()
            merged.append(path)
        runs = merged
    return heapq.merge(*(_read_run(run) for run in runs), key=_order)


def choose_positions(listed: int, count: int, seed: int) -> np.ndarray | None:
    """Sorted positions of the seeded sample, or None for every input. The same draw as the in-memory list's
    ``random.Random(seed).sample(range(listed), count)``: a run sampled before keeps its inputs."""
    if count == 0 or count >= listed:
        if count > listed:
            logger.warning("source.sample_count %d > %d inputs: taking every input", count, listed)
        return None
    return np.sort(np.fromiter(random.Random(seed).sample(range(listed), count), dtype=np.int64, count=count))


@dataclass
class IndexStats:
    listed: int
    inputs: int
    list_hash: str


def write_index(records: Iterable[list], path: Path, count: int, seed: int, salt: str = "") -> IndexStats:
    """Sort ``records`` ([key, origin, locator]) on disk, keep the seeded sample, flag later copies of a key, and
    write the index at ``path`` (+ :data:`OFFSETS_SUFFIX`). The hash equals :func:`list_hash` of the same list."""
    scratch = path.with_name(f".{path.name}.runs")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        runs, listed = sorted_runs(records, scratch)
        chosen = choose_positions(listed, count, seed)
        digest = hashlib.sha256(salt.encode())
        inputs, offset, previous = 0, 0, None
        next_chosen = iter(chosen.tolist()) if chosen is not None else None
        wanted = next(next_chosen, -1) if next_chosen is not None else None
        with open(path, "wb") as data, open(str(path) + OFFSETS_SUFFIX, "wb") as offsets:
            for position, (key, origin, locator) in enumerate(merge_runs(runs, scratch)):
                if wanted is not None:
                    if position != wanted:
                        continue
                    wanted = next(next_chosen, -1)
                line = (json.dumps([key, origin, locator, key == previous], ensure_ascii=False) + "\n").encode(
                    "utf-8", "surrogateescape")
                offsets.write(_OFFSET.pack(offset))
                data.write(line)
                offset += len(line)
                digest.update(f"{key}\t{origin}\n".encode("utf-8", "surrogateescape"))
                previous, inputs = key, inputs + 1
            offsets.write(_OFFSET.pack(offset))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return IndexStats(listed=listed, inputs=inputs, list_hash=digest.hexdigest())


def list_hash(items: Iterable[InputItem], salt: str = "") -> str:
    """sha256 over the keys and origins, in order: equal lists, equal jobs."""
    digest = hashlib.sha256(salt.encode())
    for item in items:
        digest.update(f"{item.key}\t{item.origin}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def move_index(source: Path, target: Path) -> None:
    """Put a finished index (and its offsets) in place, atomically per file."""
    os.replace(str(source) + OFFSETS_SUFFIX, str(target) + OFFSETS_SUFFIX)
    os.replace(source, target)


def remove_index(path: Path) -> None:
    Path(str(path) + OFFSETS_SUFFIX).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


class InputIndex:
    """Reads inputs ``[start, stop)`` of an index by offset; opens its files lazily (picklable into workers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        size = os.path.getsize(str(self.path) + OFFSETS_SUFFIX)
        if size % _OFFSET.size or size == 0:
            raise ValueError(f"{self.path}{OFFSETS_SUFFIX} is damaged ({size} bytes): rerun to list the source again")
        self.count = size // _OFFSET.size - 1

    def __len__(self) -> int:
        return self.count

    def _offset(self, handle, position: int) -> int:
        handle.seek(position * _OFFSET.size)
        return _OFFSET.unpack(handle.read(_OFFSET.size))[0]

    def read(self, start: int, stop: int) -> list[InputItem]:
        if not 0 <= start <= stop <= self.count:
            raise IndexError(f"inputs [{start}, {stop}) outside an index of {self.count}")
        with open(str(self.path) + OFFSETS_SUFFIX, "rb") as offsets:
            begin, end = self._offset(offsets, start), self._offset(offsets, stop)
        with open(self.path, "rb") as data:
            data.seek(begin)
            block = data.read(end - begin)
        items = []
        for line in block.decode("utf-8", "surrogateescape").split("\n")[:-1]:  # not splitlines: U+2028 is data
            key, origin, locator, duplicate = json.loads(line)
            items.append(InputItem(key, origin, locator, duplicate))
        return items

    def __iter__(self) -> Iterator[InputItem]:
        for start in range(0, self.count, RUN_RECORDS):
            yield from self.read(start, min(start + RUN_RECORDS, self.count))

    def __getitem__(self, position: int) -> InputItem:
        return self.read(position, position + 1)[0]
