"""The manifest and the state of an output folder: what makes a rerun continue where it stopped.

One job -> one shard ``{prefix}-{process:03d}-{job:06d}.tar`` whose stats json, written last, marks it done (which
inputs a job holds is ``pseudolabel.plan``'s business). A job is done when its stats json exists, the plan accepts
what it claims, and a header scan of its tar holds the stated count. ``manifest.json`` records everything
that decides the labels; a rerun with a different one is refused, naming what changed. ``summary.json`` records the
sha256 of every finished shard's stats json (which lists the sha256 of every member), so the whole run is checkable.
A folder labelled before the checksums (format version 1) resumes as it is: its shards keep no checksums, the new
ones get them, and ``python -m shards verify`` says which.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pseudolabel.plan import DoneJob, Plan
from shards.errors import UserError
from shards.writer import (
    SHARD_SUFFIX,
    STATS_SHA256_FIELD,
    STATS_SUFFIX,
    TMP_SUFFIX,
    file_sha256,
    read_stats,
    stats_path,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

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


def count_tar_samples(path: Path) -> int:
    """Distinct sample keys in a tar by a header scan (no member is read); -1 when the tar is unreadable."""
    try:
        with tarfile.open(path) as tar:
            keys = set()
            for member in tar:
                folder, name = os.path.split(member.name)
                keys.add(os.path.join(folder, name.split(".", 1)[0]))
            return len(keys)
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
