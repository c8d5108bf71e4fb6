"""Rewrite a shard set without its damaged samples: ``python -m shards repair DIR --out OUT``.

Each shard is read as ``verify`` reads it (checksums, then the format's rules); every sample that passes is written
again, through the one writer, to a shard of the same name in ``OUT`` (so it gets checksums even if its source had
none), and every sample that does not is listed: damaged (with the first problem), lost (listed in the stats json but
absent from the tar) or a repeated key. The stats json keeps the source's fields and rejects and records what was
dropped. A labelling run's manifest and summary are not copied: the output is a plain shard set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shards.reader import expand_shard_urls
from shards.tarstream import ShardCheck, is_local, load_stats, open_stream, tar_samples
from shards.verify import format_problems
from shards.writer import SHARD_NAME, SHARD_SUFFIX, ShardWriter, write_json_atomic

logger = logging.getLogger(__name__)

REPAIR_LIST = "repair.json"
_WRITER_FIELDS = ("shard", "count", "bytes", "seconds", "rejects", "format_version", "members")


@dataclass
class RepairReport:
    """What was kept and what was dropped, per shard: ``dropped`` key -> reason, ``lost`` keys (or a count)."""

    shards: int = 0
    kept: int = 0
    dropped: dict[str, dict[str, str]] = field(default_factory=dict)
    lost: dict[str, list[str]] = field(default_factory=dict)
    lost_unnamed: dict[str, int] = field(default_factory=dict)  # shards of format 1 name no lost key

    def lines(self) -> list[str]:
        lines = [f"DROPPED {shard}: {key}: {why}" for shard, keys in self.dropped.items() for key, why in keys.items()]
        lines += [f"LOST {shard}: {key}" for shard, keys in self.lost.items() for key in keys]
        lines += [f"LOST {shard}: {count} unnamed sample(s)" for shard, count in self.lost_unnamed.items()]
        dropped = sum(len(keys) for keys in self.dropped.values())
        lost = sum(len(keys) for keys in self.lost.values()) + sum(self.lost_unnamed.values())
        lines.append(f"rewrote {self.shards} shard(s): kept {self.kept} samples, dropped {dropped}, lost {lost}")
        return lines


def repair_shards(spec: str | Sequence[str], out: str | Path) -> RepairReport:
    """Copy every intact sample of ``spec`` (local shards) into ``out``; see the module docstring."""
    urls = expand_shard_urls(spec)
    out = Path(out)
    remote = [url for url in urls if not is_local(url)]
    if remote:
        raise ValueError(f"repair reads local shards only, not {remote[0]}: copy them first")
    names = [Path(url).name for url in urls]
    unnamed = [name for name in names if not SHARD_NAME.match(name)]
    if unnamed:
        raise ValueError(f"{unnamed[0]} is not named <prefix>-<process>-<index>.tar: repair keeps shard names")
    if len(set(names)) != len(names):
        raise ValueError("two shards share a file name: repair one folder at a time")
    if out.exists() and any(out.glob(f"*{SHARD_SUFFIX}")):
        raise FileExistsError(f"{out} already holds shards: repair into an empty folder")
    report = RepairReport()
    first_shard: dict[str, str] = {}
    for url in urls:
        _repair_one(url, out, report, first_shard)
    write_json_atomic(out / REPAIR_LIST, {
        "source": [str(url) for url in urls], "kept": report.kept, "dropped": report.dropped, "lost": report.lost,
        "lost_unnamed": report.lost_unnamed,
    })
    return report


def _repair_one(url: str, out: Path, report: RepairReport, first_shard: dict[str, str]) -> None:
    stats, _ = load_stats(url)
    check = ShardCheck(url, stats)
    match = SHARD_NAME.match(Path(url).name)
    assert match is not None
    dropped: dict[str, str] = {}
    with ShardWriter(out, match["prefix"], int(match["process"]), int(match["index"])) as writer:
        try:
            with open_stream(url) as stream:
                for sample in tar_samples(stream):
                    problems = check.add(sample)
                    if problems is None:
                        continue  # a stray fragment is no sample
                    if not problems:
                        problems = format_problems(sample)
                    if not problems and sample.key in first_shard:
                        problems = [f"duplicate key, also in {first_shard[sample.key]}"]
                    check.record(sample.key, problems)
                    if problems:
                        dropped[sample.key] = problems[0]
                        continue
                    first_shard[sample.key] = url
                    writer.write({k: v for k, v in sample.raw(url).items() if k != "__url__"})
                    report.kept += 1
        except Exception as error:  # noqa: BLE001 - a broken tar: keep what came before the break
            logger.warning("%s breaks after %d sample(s): %s", url, len(check.seen), error)
        for reason, keys in ((stats or {}).get("rejects") or {}).items():
            for key in keys if isinstance(keys, list) else []:
                writer.reject(key, reason)
        lost = check.missing()
        extra: dict[str, Any] = {name: value for name, value in (stats or {}).items() if name not in _WRITER_FIELDS}
        writer.close(**extra, repaired_from=str(url), repair_dropped=dropped, repair_lost=lost)
    report.shards += 1
    if dropped:
        report.dropped[url] = dropped
    if lost:
        report.lost[url] = lost
    elif check.missing_count():
        report.lost_unnamed[url] = check.missing_count()
