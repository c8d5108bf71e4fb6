"""The labelling plan: which inputs each job holds, what is done, and what is left.

One idea in four parts, in the order a run meets them, kept together because each part reads what the one before
decides and a rerun needs all four to agree:

- **The sorted input list on disk** (folders, lists, ``datasets``). Holding the list in memory costs every process
  about 440 bytes per input (16.7 s and 444 MB for a million; BENCHMARKS.md), so the main process writes it once:
  records ``[key, origin, locator]`` are sorted in runs of :data:`RUN_RECORDS`, merged (stably, so equal records
  keep their listing order), sampled and flagged on the way out, and written as one JSON line each, with a file of
  uint64 line offsets beside it. Every process then reads only its own jobs' lines. Memory stays one run, whatever
  the number of inputs; the seeded sample keeps its chosen positions (8 bytes each) and picks exactly the inputs
  the in-memory list picked.
- **The plans**, one interface. :class:`IndexPlan`: job ``j`` is inputs ``[j * size, (j + 1) * size)`` of the
  index, and the unit handed to a process is one job. :class:`ShardPlan` (image shards): the unit is one input
  shard, header-scanned by the process that takes it and cut into slices of at most ``size`` inputs; slice ``s`` of
  shard ``i`` is job ``i * SLICE_STRIDE + s``, and its stats json records the slice and how many the shard has, so
  the main process knows what is done without reading any input shard.
- **The output folder's state**: one job -> one shard ``{prefix}-{process:03d}-{job:06d}.tar`` whose stats json,
  written last, marks it done. A job is done when its stats json exists, the plan accepts what it claims, and a
  header scan of its tar holds the stated count. ``manifest.json`` records everything that decides the labels; a
  rerun with a different one is refused, naming what changed. ``summary.json`` records the sha256 of every finished
  shard's stats json (which lists the sha256 of every member), so the whole run is checkable. A folder labelled
  before the checksums (format version 1) resumes as it is: its shards keep no checksums, the new ones get them, and
  ``python -m shards verify`` says which.
- **Keys repeated across input shards**, found after labelling. Image shards are labelled one input shard per job
  without a global list, so two shards may both hold a key (a re-crawled image). The main process streams every
  finished job's keys (its stats json's member list and rejects) through the same external sort as the index:
  memory is one sorted run plus the repeated keys themselves. Ordered by key and job id (= input shard order), the
  first copy stays; each later one is removed from its output shard through :class:`~shards.writer.ShardWriter` (so
  the rewritten shard's checksums and member list are right) and recorded as a ``duplicate_key`` reject. A later
  copy already rejected for another reason is recorded as ``duplicate_key`` instead, as a folder source would have
  done. Running it again changes nothing.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import posixpath
import random
import re
import shutil
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pseudolabel.preprocess import REJECT_DUPLICATE_KEY
from shards.cli.errors import UserError
from shards.format import SampleMeta, expected_members
from shards.reader import open_stream, tar_samples
from shards.writer import (
    SHARD_SUFFIX,
    STATS_SHA256_FIELD,
    STATS_SUFFIX,
    TMP_SUFFIX,
    ShardWriter,
    file_sha256,
    read_stats,
    stats_path,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ the sorted input list on disk

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


# --------------------------------------------------------------------------------------------------------- the plans

#: Job ids of one input shard: ``shard * SLICE_STRIDE + slice``; an input shard may have this many slices.
SLICE_STRIDE = 10_000


class ShardScan(Protocol):
    """What :class:`ShardPlan` needs of the image shards (``pseudolabel.sources.ShardSet``, which imports this
    module): their paths, and one shard's kept inputs by a header scan."""

    urls: list[str]

    def scan(self, shard: int) -> list[InputItem]: ...


@dataclass(frozen=True)
class DoneJob:
    """A finished job as the main process found it: its shard and what its stats json says about its inputs."""

    path: Path
    inputs: int
    slice: int | None = None
    slices: int | None = None


@dataclass(frozen=True)
class Job:
    """One job of a unit: its id, the stats fields that describe its inputs (``inputs`` first), and the inputs."""

    job: int
    info: dict[str, Any]
    items: list[InputItem]


class IndexPlan:
    """Jobs of consecutive inputs of the on-disk index."""

    def __init__(self, index: InputIndex, job_size: int) -> None:
        self.index, self.job_size = index, job_size
        self.count = -(-len(index) // job_size)

    def _range(self, job: int) -> tuple[int, int]:
        return job * self.job_size, min((job + 1) * self.job_size, len(self.index))

    def check_done(self, job: int, stats: dict[str, Any]) -> str | None:
        if job >= self.count:
            return f"job {job} does not exist in a list of {self.count} jobs"
        start, stop = self._range(job)
        if stats.get("inputs") != stop - start:
            return f"stats say {stats.get('inputs')} inputs, job {job} has {stop - start}"
        return None

    def pending_units(self, done: dict[int, DoneJob]) -> list[int]:
        return [job for job in range(self.count) if job not in done]

    def unit_inputs(self, units: list[int]) -> int | None:
        return sum(stop - start for start, stop in map(self._range, units))

    def jobs(self, unit: int) -> Iterator[Job]:
        start, stop = self._range(unit)
        yield Job(unit, {"inputs": stop - start}, self.index.read(start, stop))

    def completion(self, done: dict[int, DoneJob]) -> tuple[bool, int]:
        """(every job done, the number of inputs)."""
        return len(done) == self.count, len(self.index)


class ShardPlan:
    """Input shards cut into slices; see the module docstring (the plans)."""

    def __init__(self, shards: ShardScan, job_size: int) -> None:
        self.shards, self.job_size = shards, job_size

    def check_done(self, job: int, stats: dict[str, Any]) -> str | None:
        shard, piece = divmod(job, SLICE_STRIDE)
        if shard >= len(self.shards.urls):
            return f"job {job} is of input shard {shard}, and the source has {len(self.shards.urls)}"
        slices = stats.get("slices")
        if stats.get("slice") != piece or not isinstance(slices, int) or piece >= slices:
            return f"stats name slice {stats.get('slice')} of {slices}, job {job} is slice {piece}"
        return None

    def _done_slices(self, done: dict[int, DoneJob]) -> dict[int, tuple[int, set[int]]]:
        """Input shard -> (its slice count as its stats say, the slices done)."""
        found: dict[int, tuple[int, set[int]]] = {}
        for job, record in done.items():
            shard, piece = divmod(job, SLICE_STRIDE)
            slices, pieces = found.setdefault(shard, (int(record.slices or 1), set()))
            pieces.add(piece)
        return found

    def pending_units(self, done: dict[int, DoneJob]) -> list[tuple[int, tuple[int, ...]]]:
        """(input shard, its slices already done) for every shard with a slice left."""
        found = self._done_slices(done)
        units = []
        for shard in range(len(self.shards.urls)):
            slices, pieces = found.get(shard, (None, set()))
            if slices is None or not set(range(slices)) <= pieces:
                units.append((shard, tuple(sorted(pieces))))
        return units

    def unit_inputs(self, units: list) -> int | None:
        return None  # unknown until each shard's headers are read

    def jobs(self, unit: tuple[int, tuple[int, ...]]) -> Iterator[Job]:
        shard, skip = unit
        items = self.shards.scan(shard)
        slices = max(1, -(-len(items) // self.job_size))
        if slices > SLICE_STRIDE:
            raise ValueError(f"{self.shards.urls[shard]} holds {len(items)} samples: more than {SLICE_STRIDE} slices "
                             f"of output.samples_per_shard={self.job_size}; raise output.samples_per_shard")
        for piece in range(slices):
            if piece in skip:
                continue
            part = items[piece * self.job_size : (piece + 1) * self.job_size]
            info = {"inputs": len(part), "input_shard": self.shards.urls[shard], "slice": piece, "slices": slices}
            yield Job(shard * SLICE_STRIDE + piece, info, part)

    def completion(self, done: dict[int, DoneJob]) -> tuple[bool, int]:
        """(every slice of every input shard done, the inputs of the slices done)."""
        found = self._done_slices(done)
        complete = len(found) == len(self.shards.urls) and all(
            set(range(slices)) <= pieces for slices, pieces in found.values())
        return complete, sum(record.inputs for record in done.values())


Plan = IndexPlan | ShardPlan

# ------------------------------------------------------------------------------------------ the output folder's state

MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
REJECTS_NAME = "rejects.jsonl"
MANIFEST_FORMAT = 1  # folders, lists, datasets: jobs of the sorted list, as since the first version
SHARD_MANIFEST_FORMAT = 2  # image shards: a job is a slice of one input shard (before: of one global list)


class ManifestMismatchError(UserError, RuntimeError):
    """The output folder was made with other settings; the message names every difference."""


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def manifest_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: stored -> current`` for every field that differs (after a JSON round trip, so tuples equal lists)."""
    before = _flatten(json.loads(json.dumps(stored)))
    after = _flatten(json.loads(json.dumps(current)))
    return [
        f"{name}: {before.get(name, '<absent>')!r} -> {after.get(name, '<absent>')!r}"
        for name in sorted(set(before) | set(after))
        if before.get(name, "<absent>") != after.get(name, "<absent>")
    ]


def check_or_write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> bool:
    """Write the manifest into a new folder, or check it against the stored one. Returns True when resuming."""
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, manifest)
        return False
    stored = json.loads(path.read_text())
    if stored.get("format") != manifest.get("format") and stored.get("source", {}).get("kind") == "shards":
        raise ManifestMismatchError(
            f"output folder {out_dir} was labelled from image shards by an earlier version, which cut jobs from one "
            f"list of every sample; this version labels one input shard per job, and the two cannot share a folder. "
            f"Finish that run with the version that started it, or use a new output.dir."
        )
    differences = manifest_differences(stored, manifest)
    if differences:
        raise ManifestMismatchError(
            f"output folder {out_dir} was made with other settings, and its shards would mix with this run's:\n  "
            + "\n  ".join(differences)
            + f"\nUse a new output.dir, or rerun with the settings of {out_dir / 'config.yaml'}."
        )
    return True


def shard_pattern(prefix: str) -> re.Pattern[str]:
    """Matches ``{prefix}-{process:03d}-{job:06d}.tar`` and captures process and job."""
    return re.compile(rf"^{re.escape(prefix)}-(\d{{3,}})-(\d{{6,}}){re.escape(SHARD_SUFFIX)}$")


def tar_keys(path: Path) -> list[str]:
    """The sample keys of a tar in order, by a header scan (no member is read): WebDataset's rule, each file
    member's path up to the first dot of its file name."""
    with tarfile.open(path) as tar:
        names = (member.name for member in tar if member.isfile())
        return list(dict.fromkeys(posixpath.join(posixpath.dirname(name), posixpath.basename(name).split(".", 1)[0])
                                  for name in names))


def count_tar_samples(path: Path) -> int:
    """Distinct sample keys in a tar by a header scan; -1 when the tar is unreadable."""
    try:
        return len(tar_keys(path))
    except (tarfile.TarError, OSError, EOFError):
        return -1


def _remove(path: Path, why: str) -> None:
    logger.info("removing %s (%s)", path.name, why)
    path.unlink(missing_ok=True)


def clean_and_scan(out_dir: Path, prefix: str, check: Callable[[int, dict], str | None]) -> dict[int, DoneJob]:
    """Main process, before any rank starts: remove every unfinished trace, return the done jobs.

    Removed: every ``*.tmp``; every tar without a stats json (whatever its process field); stats without a tar;
    shards whose header scan disagrees with their stats or whose stats ``check`` (the plan's) refuses; and, should
    two finished shards claim one job, all but the first.
    """
    for path in sorted(out_dir.glob(f"*{TMP_SUFFIX}")):
        _remove(path, "temporary file of an interrupted write")
    pattern = shard_pattern(prefix)
    done: dict[int, DoneJob] = {}
    for path in sorted(out_dir.glob(f"{prefix}-*{SHARD_SUFFIX}")):
        match = pattern.match(path.name)
        if match is None:
            continue
        job = int(match.group(2))
        stats = read_stats(path) if stats_path(path).exists() else None
        if stats is None:
            _remove(path, "no stats json: the job did not finish")
            continue
        problem = check(job, stats)
        if problem is None and count_tar_samples(path) != stats.get("count"):
            problem = f"the tar does not hold the {stats.get('count')} samples its stats state"
        if problem is None and job in done:
            problem = f"job {job} is already done by {done[job].path.name}"
        if problem is not None:
            _remove(path, problem)
            _remove(stats_path(path), problem)
            continue
        done[job] = DoneJob(path, int(stats.get("inputs", 0)), stats.get("slice"), stats.get("slices"))
    for path in sorted(out_dir.glob(f"{prefix}-*{STATS_SUFFIX}")):
        shard = path.with_name(path.name[: -len(STATS_SUFFIX)] + SHARD_SUFFIX)
        if not shard.exists():
            _remove(path, "stats json without its shard")
    return done


def summarise(out_dir: Path, prefix: str, plan: Plan, this_run: Mapping[str, Any]) -> dict[str, Any]:
    """Totals over every finished shard of the folder (earlier runs included), plus this run's figures. For image
    shards ``inputs`` counts the inputs of the slices done (the rest are unknown until their shards are read)."""
    done = clean_and_scan(out_dir, prefix, plan.check_done) if out_dir.exists() else {}
    labeled, by_reason, details, hashes = 0, {}, [], {}
    for job in sorted(done):
        stats = read_stats(done[job].path) or {}
        hashes[done[job].path.name] = file_sha256(stats_path(done[job].path))
        labeled += int(stats.get("count", 0))
        for reason, keys in stats.get("rejects", {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + len(keys)
        details.extend(stats.get("reject_details", []))
    rejected = sum(by_reason.values())
    every_job, inputs = plan.completion(done)
    seconds = float(this_run.get("seconds", 0.0))
    processed = int(this_run.get("inputs", 0))
    return {
        "output": str(out_dir),
        "complete": every_job and labeled + rejected == inputs,
        "inputs": inputs,
        "labeled": labeled,
        "rejected": rejected,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "shards": len(done),
        "jobs": getattr(plan, "count", None),  # image shards: unknown until every input shard is read
        "seconds": round(seconds, 3),
        "images_per_second": round(processed / seconds, 2) if seconds > 0 else None,
        "this_run": dict(this_run),
        STATS_SHA256_FIELD: hashes,  # what `python -m shards verify` checks each stats json against
        "_reject_details": sorted(details, key=lambda record: record["key"]),
    }


def write_summary(out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` and ``rejects.jsonl`` (one ``{key, reason, source, message}`` per line, by key)."""
    details = summary.pop("_reject_details", [])
    write_json_atomic(out_dir / SUMMARY_NAME, summary)
    tmp = out_dir / (REJECTS_NAME + TMP_SUFFIX)
    with open(tmp, "w") as handle:
        for record in details:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / REJECTS_NAME)
    return summary

# --------------------------------------------------------------------------------- keys repeated across input shards

_LABELED, _REJECTED, _ALREADY_DUPLICATE = 0, 1, 2


def _job_keys(done: dict[int, DoneJob]) -> Iterator[list]:
    """``[key, job, what]`` for every input of every finished job (``what``: labelled, rejected, or already a
    duplicate_key reject)."""
    for job in sorted(done):
        stats = read_stats(done[job].path) or {}
        members = expected_members(stats)
        for key in members if members is not None else tar_keys(done[job].path):  # format 1: no member list
            yield [key, job, _LABELED]
        for reason, keys in (stats.get("rejects") or {}).items():
            what = _ALREADY_DUPLICATE if reason == REJECT_DUPLICATE_KEY else _REJECTED
            for key in keys:
                yield [key, job, what]


def find_repeated_keys(done: dict[int, DoneJob], scratch: Path) -> dict[int, dict[str, tuple[int, int]]]:
    """Job -> {key: (what, the job holding the first copy)} for every later copy not yet a duplicate_key reject."""
    runs, _ = sorted_runs(_job_keys(done), scratch)
    later: dict[int, dict[str, tuple[int, int]]] = {}
    first_key, first_job = None, -1
    for key, job, what in merge_runs(runs, scratch):
        if key != first_key:
            first_key, first_job = key, job
        elif what != _ALREADY_DUPLICATE:
            later.setdefault(job, {})[key] = (what, first_job)
    return later


def _rewrite(path: Path, prefix: str, repeated: dict[str, tuple[int, int]], first_shards: dict[int, str]) -> None:
    """Write ``path`` again without its repeated keys' samples; they and its repeated rejects become
    duplicate_key rejects in its stats json."""
    stats = read_stats(path) or {}
    match = shard_pattern(prefix).match(path.name)
    assert match is not None, path
    details = [record for record in stats.get("reject_details", []) if record["key"] not in repeated]

    def message(key: str) -> str:
        return f"key {key!r} is taken by an earlier input (in {first_shards[repeated[key][1]]})"

    with ShardWriter(path.parent, prefix, int(match.group(1)), int(match.group(2))) as writer:
        with open_stream(str(path)) as stream:
            for sample in tar_samples(stream):
                raw = {name: data for name, data in sample.raw(str(path)).items() if name != "__url__"}
                if sample.key not in repeated:
                    writer.write(raw)
                    continue
                source = SampleMeta.from_json(raw["json"]).source
                details.append({"key": sample.key, "reason": REJECT_DUPLICATE_KEY, "source": source,
                                "message": message(sample.key)})
        for reason, keys in (stats.get("rejects") or {}).items():
            for key in keys:
                writer.reject(key, REJECT_DUPLICATE_KEY if key in repeated else reason)
        for record in stats.get("reject_details", []):
            if record["key"] in repeated:
                details.append({**record, "reason": REJECT_DUPLICATE_KEY, "message": message(record["key"])})
        for key in repeated:
            if repeated[key][0] == _LABELED:
                writer.reject(key, REJECT_DUPLICATE_KEY)
        kept = {name: value for name, value in stats.items()
                if name not in ("shard", "count", "bytes", "seconds", "rejects", "format_version", "members")}
        writer.close(**{**kept, "reject_details": sorted(details, key=lambda record: record["key"])})


def reject_repeated_keys(out_dir: Path, prefix: str, check: Callable[[int, dict[str, Any]], str | None]) -> int:
    """Main process, after every rank has finished: the pass the module docstring describes (keys repeated across
    input shards). Returns the later copies found."""
    done = clean_and_scan(out_dir, prefix, check)
    scratch = out_dir / ".dedupe.runs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        later = find_repeated_keys(done, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    first_shards = {job: done[job].path.name for repeated in later.values() for _, job in repeated.values()}
    for job, repeated in sorted(later.items()):
        logger.info("%s: %d key(s) already labelled from an earlier input shard -> duplicate_key",
                    done[job].path.name, len(repeated))
        _rewrite(done[job].path, prefix, repeated, first_shards)
    return sum(len(repeated) for repeated in later.values())
