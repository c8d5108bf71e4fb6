"""Check a shard set against the format, sample by sample: ``python -m shards verify DIR``.

The reader skips and counts what it cannot decode, so a broken shard set would train quietly on fewer samples;
this is the full check before that happens. Per shard: the tar reads to its end-of-archive marker, its stats json
exists (a shard without one is unfinished), its count matches, and (format 2 on) every member it lists is present
with its size and sha256, in order; the stats json matches the sha256 its run's summary recorded. Per sample: its
members' sha256 match; members are exactly ``jpg``, one first label of a known codec, the further labels its json
lists (``depth16_<i>.<codec>``, format 3) and ``json``; the json parses strictly; each label decodes to 16-bit codes
that span 1..65535 as the encoder writes them (an 8-bit label cannot), its range is finite, its values are finite;
image, labels and json agree in size. Across shards: every key is unique. Every damaged and
every missing sample is named; each shard reports samples expected, intact, damaged and missing.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shards.format import (
    CHECKSUMS_FORMAT_VERSION,
    FIRST_VALID_CODE,
    LABEL_CODECS,
    LAST_VALID_CODE,
    SampleMeta,
    check_key,
    decode_jpeg,
    decode_label_codes,
    label_codec,
    label_members,
    parse_label_member,
)
from shards.reader import ShardCheck, TarSample, expand_shard_urls, is_local, load_stats, open_stream, tar_samples
from shards.writer import (
    SHARD_NAME,
    SHARD_SUFFIX,
    STATS_SHA256_FIELD,
    ShardWriter,
    file_sha256,
    stats_path,
    write_json_atomic,
)

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
    labels: Counter = field(default_factory=Counter)  # labels per sample -> samples
    rejects: Counter = field(default_factory=Counter)  # from the stats json, by reason
    problems: list[Problem] = field(default_factory=list)
    expected: int | None = None  # samples the stats json promises (None without one)
    intact: int = 0  # samples whose bytes match their checksums and pass every check
    damaged: int = 0  # samples read with a problem
    missing: int = 0  # samples the stats json promises that the tar does not deliver
    checksums: bool = True  # False for a shard written before format version 2

    def line(self) -> str:
        expected = "?" if self.expected is None else self.expected
        state = "ok" if not self.problems else f"{len(self.problems)} problem(s)"
        checksums = "" if self.checksums else ", no checksums"
        return (f"SHARD {self.url}: expected {expected}, intact {self.intact}, damaged {self.damaged}, "
                f"missing {self.missing}{checksums}: {state}")


@dataclass
class VerifyReport:
    """The whole set: counts, rejects summed from the stats files, and every problem found."""

    shards: int = 0
    samples: int = 0
    bytes: int = 0
    sizes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    codecs: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)  # labels per sample -> samples
    rejects: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    expected: int = 0
    intact: int = 0
    damaged: int = 0
    missing: int = 0
    without_checksums: int = 0  # shards written before format version 2
    shard_lines: list[str] = field(default_factory=list)  # one per shard with a problem

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [str(problem) for problem in self.problems[:_MAX_PROBLEMS_PRINTED]]
        if len(self.problems) > _MAX_PROBLEMS_PRINTED:
            lines.append(f"... and {len(self.problems) - _MAX_PROBLEMS_PRINTED} more problems")
        lines += self.shard_lines[:_MAX_PROBLEMS_PRINTED]

        def counts(counter: Counter) -> str:
            return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"

        sizes = Counter({f"{w}x{h}": n for (w, h), n in self.sizes.items()})
        lines += [
            f"shards {self.shards}, samples {self.samples}, bytes {self.bytes} "
            f"({self.bytes / max(self.samples, 1) / 1024:.1f} KiB per sample)",
            f"sizes: {counts(sizes)}; label kinds: {counts(self.kinds)}; label codecs: {counts(self.codecs)}; "
            f"labels per sample: {counts(self.labels)}",
            f"rejects (from stats): {counts(self.rejects)}",
            f"samples expected {self.expected}, intact {self.intact}, damaged {self.damaged}, missing {self.missing}",
        ]
        if self.without_checksums:
            lines.append(
                f"no checksums: {self.without_checksums} of {self.shards} shard(s) were written before format version "
                f"{CHECKSUMS_FORMAT_VERSION}; their structure and labels were checked, a changed byte that still "
                "decodes cannot be seen (python -m shards repair DIR --out NEW writes them with checksums)"
            )
        lines += [
            f"{'OK' if self.ok else 'FAILED'}: {len(self.problems)} problem(s)",
        ]
        return "\n".join(lines)


def format_problems(sample: TarSample, result: ShardResult | None = None) -> list[str]:
    """What breaks the format's rules in one sample (members, record, labels, image, sizes); counts its label kinds,
    codec, size and number of labels into ``result``'s counters."""
    problems: list[str] = []
    extensions = Counter(name[len(sample.key) + 1 :] for name, _ in sample.members)
    problems += [f"member .{name} appears twice" for name, n in extensions.items() if n > 1]
    counts = result if result is not None else ShardResult(url="")
    _check_sample(sample.raw(""), problems.append, counts.kinds, counts.codecs, counts.sizes, counts.labels)
    return problems


def _check_members(raw: dict[str, Any], problem: Callable[[str], None]) -> list[str] | None:
    """The key and the member names; returns the label members (the first label first), or None when the sample has
    no first label, jpg and json to check further."""
    try:
        check_key(raw["__key__"])
    except ValueError as error:
        problem(str(error))
    members = {name for name in raw if not name.startswith("__")}
    labels = label_members(raw)
    firsts = [name for name in labels if parse_label_member(name)[1] == 0]
    missing = [name for name in ("jpg", "json") if name not in members]
    unknown = sorted(members - set(labels) - {"jpg", "json"})
    if missing:
        problem(f"missing member(s) {missing}; members are {sorted(members)}")
    if len(firsts) != 1:
        problem(f"holds {len(firsts)} label members {firsts}; expected exactly one of {sorted(LABEL_CODECS)}")
    if unknown:
        problem(f"unknown member(s) {unknown}: not part of the format")
    return None if missing or len(firsts) != 1 else firsts + [name for name in labels if name not in firsts]


def _check_label(codes: np.ndarray, label_range: Sequence[float], problem: Callable[[str], None]) -> None:
    """The decoded 16-bit codes use the encoder's full code range, and ``label_range`` decodes them to finite
    values."""
    valid = codes != 0
    if not valid.any():
        problem("no valid pixel (every code is 0)")
    else:
        low_code, high_code = int(codes[valid].min()), int(codes[valid].max())
        if high_code <= 255:
            problem(f"codes span only {low_code}..{high_code}: an 8-bit label stored in a 16-bit member")
        elif (low_code, high_code) != (FIRST_VALID_CODE, LAST_VALID_CODE):
            problem(
                f"codes span {low_code}..{high_code}, the encoder writes {FIRST_VALID_CODE}..{LAST_VALID_CODE}:"
                " the label was rescaled or cut after encoding"
            )
    low, high = (float(value) for value in label_range)
    if not (math.isfinite(low) and math.isfinite(high)):
        problem(f"label_range {label_range} is not finite: the label decodes to non-finite values")
    elif not high > low:
        problem(f"label_range {label_range} is empty: min must be below max")
    else:
        values, _ = decode_label_codes(codes, (low, high))
        if not np.isfinite(values).all():
            problem("decoded values are not all finite")


def _check_labels(raw: dict[str, Any], present: list[str], meta: SampleMeta, problem: Callable[[str], None]
                  ) -> tuple[int, int] | None:
    """Every label the json lists: present, decoding to uint16 codes the encoder could have written, all of one
    size; returns that size (width, height), or None when no label decodes. Problems name the member."""
    listed = [label.member for label in meta.labels]
    for name in present:
        if name not in listed:
            problem(f"label member .{name} is not listed in its json's labels {listed}")
    sizes = set()
    for label in meta.labels:
        if label.member not in present:
            problem(f"label member .{label.member} is missing (its json lists it)")
            continue
        codec = parse_label_member(label.member)[0]
        try:
            codes = label_codec(codec).decode(raw[label.member])
        except Exception as error:  # any decoder failure is a finding about this sample, not a crash
            problem(f"label .{label.member} does not decode: {error}")
            continue
        if codes.dtype != np.uint16 or codes.ndim != 2:
            problem(f"label .{label.member} decodes to {codes.dtype} {codes.shape}, not uint16 (H, W): an 8-bit "
                    "decode destroys it")
            continue
        _check_label(codes, label.label_range, lambda message, name=label.member: problem(f"label .{name}: {message}"))
        sizes.add((int(codes.shape[1]), int(codes.shape[0])))
    if len(sizes) > 1:
        problem(f"labels differ in size (width x height): {sorted(sizes)}")
    return sizes.pop() if len(sizes) == 1 else None


def _check_sample(raw: dict[str, Any], problem: Callable[[str], None], kinds: Counter, codecs: Counter,
                  sizes: Counter, label_counts: Counter) -> None:
    """Every rule of the format for one raw sample: members, record, labels, image and their sizes."""
    present = _check_members(raw, problem)
    if present is None:
        return
    try:
        meta = SampleMeta.from_json(raw["json"])
    except (ValueError, TypeError) as error:
        problem(f"json does not parse as the sample record: {error}")
        return
    kinds.update(label.kind for label in meta.labels)
    codecs[present[0]] += 1
    label_counts[len(meta.labels)] += 1
    if meta.depth_codec and meta.depth_codec != present[0]:
        problem(f"json names label codec {meta.depth_codec!r} but the member is .{present[0]}")
    label_size = _check_labels(raw, present, meta, problem)
    if label_size is None:
        return
    json_size = tuple(int(v) for v in meta.size)
    try:
        image = decode_jpeg(raw["jpg"])
    except Exception as error:  # PIL raises several types for a broken JPEG
        problem(f"jpg does not decode: {error}")
        return
    image_size = (int(image.shape[1]), int(image.shape[0]))
    if not (image_size == label_size == json_size):
        problem(f"sizes differ (width x height): image {image_size}, label {label_size}, json {json_size}")
    sizes[image_size] += 1


def _has_end_of_archive(path: Path) -> bool:
    size = path.stat().st_size
    if size < _END_OF_ARCHIVE or size % _TAR_BLOCK:
        return False
    with open(path, "rb") as handle:
        # The two zero blocks may be followed by zero padding up to the record size; look for any trailing
        # stretch of zero blocks at least two long.
        handle.seek(size - _END_OF_ARCHIVE)
        return not any(handle.read(_END_OF_ARCHIVE))


def verify_shard(url: str, recorded_stats_sha256: str | None = None) -> ShardResult:
    """Read and check one shard; never raises for a broken shard, it reports it. ``recorded_stats_sha256``: the
    stats json's sha256 as a labelling summary or an import summary recorded it."""
    result = ShardResult(url=url)
    stats, stats_problem = load_stats(url)
    check = ShardCheck(url, stats)

    def shard_problem(message: str) -> None:
        result.problems.append(Problem(url, None, message))

    if stats_problem is not None:
        shard_problem(stats_problem)
    if check.stats_problem is not None:
        shard_problem(check.stats_problem)
    try:
        with open_stream(url) as stream:
            for sample in tar_samples(stream):
                problems = check.add(sample)
                if problems is None:
                    result.problems.append(Problem(url, sample.key, f"stray member(s): {check.strays[-1]}"))
                    continue
                result.keys.append(sample.key)
                if not problems:  # the bytes are the ones written: check them against the format
                    problems = format_problems(sample, result)
                check.record(sample.key, problems)
                result.problems += [Problem(url, sample.key, message) for message in problems]
    except Exception as error:  # noqa: BLE001 - a broken tar is a finding
        last = f"; the last, {check.seen[-1]}, may be incomplete" if check.seen else ""
        shard_problem(f"truncated or corrupt tar: it breaks after {len(check.seen)} sample(s) read{last}: {error}")
    for key in check.missing():
        result.problems.append(Problem(url, key, "missing: the stats json lists it, the tar does not hold it"))
    result.expected = check.expected_count
    result.intact, result.damaged, result.missing = check.intact, len(check.damaged), check.missing_count()
    result.checksums = check.has_checksums
    if is_local(url):
        local = Path(url)
        result.bytes = local.stat().st_size
        if not _has_end_of_archive(local):
            shard_problem("no end-of-archive marker: the tar is truncated")
        if stats is not None:
            if stats.get("count") != len(check.seen):
                shard_problem(f"stats json says {stats.get('count')} samples, the tar holds {len(check.seen)}")
            if check.expected is not None and stats.get("count") != len(check.expected):
                shard_problem(f"stats json says {stats.get('count')} samples but lists {len(check.expected)}")
            for reason, keys in (stats.get("rejects") or {}).items():
                result.rejects[reason] += len(keys) if isinstance(keys, list) else int(keys)
        if recorded_stats_sha256 is not None and stats is not None:
            if file_sha256(stats_path(local)) != recorded_stats_sha256:
                shard_problem("the stats json's sha256 differs from the one its run's summary recorded: changed since")
    logger.debug("checked %s: %d samples, %d problems", url, len(check.seen), len(result.problems))
    return result


def recorded_stats_hashes(urls: Sequence[str]) -> dict[str, str]:
    """Shard path -> the sha256 its stats json had when its run ended, from the ``*summary.json`` files (a
    labelling run's ``summary.json``, an import's ``<prefix>.summary.json``) in the shards' folders."""
    recorded: dict[str, str] = {}
    for folder in sorted({str(Path(url).parent) for url in urls if is_local(url)}):
        for path in sorted(Path(folder).glob("*summary.json")):
            try:
                hashes = json.loads(path.read_text()).get(STATS_SHA256_FIELD) or {}
            except (OSError, ValueError, AttributeError):
                continue
            recorded.update({str(Path(folder) / name): sha for name, sha in hashes.items()})
    return recorded


def verify_shards(spec: str | Sequence[str], workers: int = 1, progress: bool = False) -> VerifyReport:
    """Check every shard of ``spec`` (folder, pattern, glob, comma list or urls, as the reader takes them)."""
    report = VerifyReport()
    try:
        urls = expand_shard_urls(spec)
    except FileNotFoundError as error:
        report.problems.append(Problem(str(spec), None, str(error)))
        return report
    recorded = recorded_stats_hashes(urls)
    hashes = [recorded.get(url) for url in urls]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterator[ShardResult] = pool.map(verify_shard, urls, hashes)
            report = _merge(report, results, progress)
    else:
        report = _merge(report, map(verify_shard, urls, hashes), progress)
    return report


def _merge(report: VerifyReport, results: Iterator[ShardResult], progress: bool) -> VerifyReport:
    first_shard: dict[str, str] = {}
    for result in results:
        report.shards += 1
        report.samples += len(result.keys)
        report.bytes += result.bytes
        report.expected += result.expected or 0
        report.intact += result.intact
        report.damaged += result.damaged
        report.missing += result.missing
        report.without_checksums += not result.checksums
        if result.problems:
            report.shard_lines.append(result.line())
        for name in ("sizes", "kinds", "codecs", "labels", "rejects"):
            getattr(report, name).update(getattr(result, name))
        report.problems.extend(result.problems)
        for key in result.keys:
            if key in first_shard:
                where = "earlier in this shard" if first_shard[key] == result.url else f"in {first_shard[key]}"
                report.problems.append(Problem(result.url, key, f"duplicate key, also {where}: keys must be unique"))
            else:
                first_shard[key] = result.url
        if progress:
            logger.info("%s", result.line())
    return report


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
