"""Check a shard set against the format, sample by sample: ``python -m shards verify DIR``.

The reader skips and counts what it cannot decode, so a broken shard set would train quietly on fewer samples;
this is the full check before that happens. Per shard: the tar reads to its end-of-archive marker, its stats json
exists (a shard without one is unfinished) and its count matches. Per sample: members are exactly ``jpg``, one
known label codec and ``json``; the json parses; the label decodes to 16-bit codes that span 1..65535 as the
encoder writes them (an 8-bit label cannot), its range is finite, its values are finite; image, label and json
agree in size. Across shards: every key is unique.
"""

from __future__ import annotations

import logging
import math
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import webdataset as wds
from webdataset.tariterators import base_plus_ext

from shards.codec import LABEL_CODECS, decode_jpeg, label_codec
from shards.format import FIRST_VALID_CODE, LAST_VALID_CODE, SampleMeta, check_key, decode_label_codes
from shards.reader import expand_shard_urls
from shards.writer import read_stats

logger = logging.getLogger(__name__)

_TAR_BLOCK = 512
_END_OF_ARCHIVE = 2 * _TAR_BLOCK  # a complete tar ends with two zero blocks
_MAX_PROBLEMS_PRINTED = 200


@dataclass
class Problem:
    """One finding; ``key`` is None for a problem of the whole shard."""

    shard: str
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.shard}: {self.key}" if self.key is not None else self.shard
        return f"PROBLEM {where}: {self.message}"


@dataclass
class ShardResult:
    """What one shard holds and what is wrong with it."""

    url: str
    keys: list[str] = field(default_factory=list)
    bytes: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> samples
    kinds: Counter = field(default_factory=Counter)
    codecs: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)  # from the stats json, by reason
    problems: list[Problem] = field(default_factory=list)


@dataclass
class VerifyReport:
    """The whole set: counts, rejects summed from the stats files, and every problem found."""

    shards: int = 0
    samples: int = 0
    bytes: int = 0
    sizes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    codecs: Counter = field(default_factory=Counter)
    rejects: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [str(problem) for problem in self.problems[:_MAX_PROBLEMS_PRINTED]]
        if len(self.problems) > _MAX_PROBLEMS_PRINTED:
            lines.append(f"... and {len(self.problems) - _MAX_PROBLEMS_PRINTED} more problems")

        def counts(counter: Counter) -> str:
            return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"

        sizes = Counter({f"{w}x{h}": n for (w, h), n in self.sizes.items()})
        lines += [
            f"shards {self.shards}, samples {self.samples}, bytes {self.bytes} "
            f"({self.bytes / max(self.samples, 1) / 1024:.1f} KiB per sample)",
            f"sizes: {counts(sizes)}; kinds: {counts(self.kinds)}; label codecs: {counts(self.codecs)}",
            f"rejects (from stats): {counts(self.rejects)}",
            f"{'OK' if self.ok else 'FAILED'}: {len(self.problems)} problem(s)",
        ]
        return "\n".join(lines)


def _open_stream(url: str) -> BinaryIO:
    return wds.gopen(url, "rb") if "://" in url or url.startswith("pipe:") else open(url, "rb")


def _tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                yield member.name, handle.read()


def _group_samples(members: Iterator[tuple[str, bytes]], result: ShardResult) -> Iterator[dict[str, Any]]:
    """Consecutive members with the same key -> one raw sample (WebDataset's rule: key = name up to the file
    name's first dot)."""
    current: dict[str, Any] | None = None
    for name, data in members:
        key, extension = base_plus_ext(name)
        if key is None:
            result.problems.append(Problem(result.url, None, f"member {name!r} has no extension: not a sample member"))
            continue
        if current is not None and current["__key__"] != key:
            yield current
            current = None
        if current is None:
            current = {"__key__": key}
        if extension in current:
            result.problems.append(Problem(result.url, key, f"member .{extension} appears twice"))
        current[extension] = data
    if current is not None:
        yield current


def _check_sample(raw: dict[str, Any], result: ShardResult) -> None:
    key = raw["__key__"]

    def problem(message: str) -> None:
        result.problems.append(Problem(result.url, key, message))

    try:
        check_key(key)
    except ValueError as error:
        problem(str(error))
    members = {name for name in raw if name != "__key__"}
    labels = sorted(members & set(LABEL_CODECS))
    missing = [name for name in ("jpg", "json") if name not in members]
    unknown = sorted(members - set(LABEL_CODECS) - {"jpg", "json"})
    if missing:
        problem(f"missing member(s) {missing}; members are {sorted(members)}")
    if len(labels) != 1:
        problem(f"holds {len(labels)} label members {labels}; expected exactly one of {sorted(LABEL_CODECS)}")
    if unknown:
        problem(f"unknown member(s) {unknown}: not part of the format")
    if missing or len(labels) != 1:
        return
    try:
        meta = SampleMeta.from_json(raw["json"])
    except (ValueError, TypeError) as error:
        problem(f"json does not parse as the sample record: {error}")
        return
    result.kinds[meta.kind] += 1
    result.codecs[labels[0]] += 1
    if meta.depth_codec and meta.depth_codec != labels[0]:
        problem(f"json names label codec {meta.depth_codec!r} but the member is .{labels[0]}")

    try:
        codes = label_codec(labels[0]).decode(raw[labels[0]])
    except Exception as error:  # any decoder failure is a finding about this sample, not a crash
        problem(f"label .{labels[0]} does not decode: {error}")
        return
    if codes.dtype != np.uint16 or codes.ndim != 2:
        problem(f"label decodes to {codes.dtype} {codes.shape}, not uint16 (H, W): an 8-bit decode destroys it")
        return
    valid = codes != 0
    if not valid.any():
        problem("label has no valid pixel (every code is 0)")
    else:
        low_code, high_code = int(codes[valid].min()), int(codes[valid].max())
        if high_code <= 255:
            problem(f"label codes span only {low_code}..{high_code}: an 8-bit label stored in a 16-bit member")
        elif (low_code, high_code) != (FIRST_VALID_CODE, LAST_VALID_CODE):
            problem(
                f"label codes span {low_code}..{high_code}, the encoder writes {FIRST_VALID_CODE}..{LAST_VALID_CODE}:"
                " the label was rescaled or cut after encoding"
            )
    low, high = (float(value) for value in meta.label_range)
    if not (math.isfinite(low) and math.isfinite(high)):
        problem(f"label_range {meta.label_range} is not finite: the label decodes to non-finite values")
    elif not high > low:
        problem(f"label_range {meta.label_range} is empty: min must be below max")
    else:
        values, _ = decode_label_codes(codes, (low, high))
        if not np.isfinite(values).all():
            problem("decoded label holds non-finite values")

    label_size = (int(codes.shape[1]), int(codes.shape[0]))
    json_size = tuple(int(v) for v in meta.size)
    try:
        image = decode_jpeg(raw["jpg"])
    except Exception as error:  # PIL raises several types for a broken JPEG
        problem(f"jpg does not decode: {error}")
        return
    image_size = (int(image.shape[1]), int(image.shape[0]))
    if not (image_size == label_size == json_size):
        problem(f"sizes differ (width x height): image {image_size}, label {label_size}, json {json_size}")
    result.sizes[image_size] += 1


def _has_end_of_archive(path: Path) -> bool:
    size = path.stat().st_size
    if size < _END_OF_ARCHIVE or size % _TAR_BLOCK:
        return False
    with open(path, "rb") as handle:
        # The two zero blocks may be followed by zero padding up to the record size; look for any trailing
        # stretch of zero blocks at least two long.
        handle.seek(size - _END_OF_ARCHIVE)
        return not any(handle.read(_END_OF_ARCHIVE))


def verify_shard(url: str) -> ShardResult:
    """Read and check one shard; never raises for a broken shard, it reports it."""
    result = ShardResult(url=url)
    local = Path(url) if "://" not in url and not url.startswith("pipe:") else None
    try:
        with _open_stream(url) as stream:
            for raw in _group_samples(_tar_members(stream), result):
                result.keys.append(raw["__key__"])
                _check_sample(raw, result)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        result.problems.append(
            Problem(url, None, f"truncated or corrupt tar after {len(result.keys)} sample(s): {error}")
        )
    if local is not None:
        result.bytes = local.stat().st_size
        if not _has_end_of_archive(local):
            result.problems.append(Problem(url, None, "no end-of-archive marker: the tar is truncated"))
        stats = read_stats(local)
        if stats is None:
            result.problems.append(
                Problem(url, None, "no stats json beside it: the shard is unfinished (its writer did not close it)")
            )
        else:
            if stats.get("count") != len(result.keys):
                message = f"stats json says {stats.get('count')} samples, the tar holds {len(result.keys)}"
                result.problems.append(Problem(url, None, message))
            for reason, keys in (stats.get("rejects") or {}).items():
                result.rejects[reason] += len(keys) if isinstance(keys, list) else int(keys)
    logger.debug("checked %s: %d samples, %d problems", url, len(result.keys), len(result.problems))
    return result


def verify_shards(spec: str | Sequence[str], workers: int = 1, progress: bool = False) -> VerifyReport:
    """Check every shard of ``spec`` (folder, pattern, glob, comma list or urls, as the reader takes them)."""
    report = VerifyReport()
    try:
        urls = expand_shard_urls(spec)
    except FileNotFoundError as error:
        report.problems.append(Problem(str(spec), None, str(error)))
        return report
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterator[ShardResult] = pool.map(verify_shard, urls)
            report = _merge(report, results, progress)
    else:
        report = _merge(report, map(verify_shard, urls), progress)
    return report


def _merge(report: VerifyReport, results: Iterator[ShardResult], progress: bool) -> VerifyReport:
    first_shard: dict[str, str] = {}
    for result in results:
        report.shards += 1
        report.samples += len(result.keys)
        report.bytes += result.bytes
        for name in ("sizes", "kinds", "codecs", "rejects"):
            getattr(report, name).update(getattr(result, name))
        report.problems.extend(result.problems)
        for key in result.keys:
            if key in first_shard:
                where = "earlier in this shard" if first_shard[key] == result.url else f"in {first_shard[key]}"
                report.problems.append(Problem(result.url, key, f"duplicate key, also {where}: keys must be unique"))
            else:
                first_shard[key] = result.url
        if progress:
            state = "ok" if not result.problems else f"{len(result.problems)} problem(s)"
            logger.info("%s: %d samples, %s", result.url, len(result.keys), state)
    return report
