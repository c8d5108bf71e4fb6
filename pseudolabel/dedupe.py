"""Keys repeated across input shards, found after labelling: later copies become ``duplicate_key`` rejects.

Image shards are labelled one input shard per job without a global list, so two shards may both hold a key (a
re-crawled image). After labelling, the main process streams every finished job's keys (its stats json's member list
and rejects) through the external sort of ``pseudolabel.index``: memory is one sorted run, whatever the number of
inputs, plus the repeated keys themselves. Ordered by key and job id (= input shard order), the first copy stays; each
later one is removed from its output shard through :class:`~shards.writer.ShardWriter` (so the rewritten shard's
checksums and member list are right) and recorded as a ``duplicate_key`` reject. A later copy that was already
rejected for another reason is recorded as ``duplicate_key`` instead, as a folder source would have done. Running it
again changes nothing: a rewritten shard holds its later copies as ``duplicate_key`` rejects only.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pseudolabel.index import merge_runs, sorted_runs
from pseudolabel.jobs import clean_and_scan
from pseudolabel.plan import DoneJob
from pseudolabel.preprocess import REJECT_DUPLICATE_KEY
from shards.format import SampleMeta
from shards.integrity import expected_members
from shards.tarstream import open_stream, tar_samples
from shards.writer import SHARD_SUFFIX, ShardWriter, read_stats

logger = logging.getLogger(__name__)

_LABELED, _REJECTED, _ALREADY_DUPLICATE = 0, 1, 2
_SHARD_NAME = re.compile(rf"^(?P<prefix>[^-/]+)-(?P<process>\d{{3,}})-(?P<job>\d{{6,}}){re.escape(SHARD_SUFFIX)}$")


def _tar_keys(path: Path) -> list[str]:
    """Sample keys of a shard without a member list in its stats json (format 1), by a header scan."""
    with tarfile.open(path) as tar:
        names = (member.name for member in tar if member.isfile())
        return list(dict.fromkeys(posixpath.join(posixpath.dirname(name), posixpath.basename(name).split(".", 1)[0])
                                  for name in names))


def _job_keys(done: dict[int, DoneJob]) -> Iterator[list]:
    """``[key, job, what]`` for every input of every finished job (``what``: labelled, rejected, or already a
    duplicate_key reject)."""
    for job in sorted(done):
        stats = read_stats(done[job].path) or {}
        members = expected_members(stats)
        for key in members if members is not None else _tar_keys(done[job].path):
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


def _rewrite(path: Path, repeated: dict[str, tuple[int, int]], first_shards: dict[int, str]) -> None:
    """Write ``path`` again without its repeated keys' samples; they and its repeated rejects become
    duplicate_key rejects in its stats json."""
    stats = read_stats(path) or {}
    match = _SHARD_NAME.match(path.name)
    assert match is not None, path
    details = [record for record in stats.get("reject_details", []) if record["key"] not in repeated]

    def message(key: str) -> str:
        return f"key {key!r} is taken by an earlier input (in {first_shards[repeated[key][1]]})"

    with ShardWriter(path.parent, match["prefix"], int(match["process"]), int(match["job"])) as writer:
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
    """Main process, after every rank has finished: the pass described above. Returns the later copies found."""
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
        _rewrite(done[job].path, repeated, first_shards)
    return sum(len(repeated) for repeated in later.values())
