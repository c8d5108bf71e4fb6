"""Checksums of the format: sealing a sample as it is written, and checking a sample read back against them.

Two records protect every byte (format version 2): each sample's json holds the sha256 of its other members
(``"sha256": {"jpg": ..., "depth16.dzst": ...}``), so a sample checks itself wherever it travels; and each shard's
stats json lists every member in tar order with its size and sha256 (the json members included), so a tar that
stops early, a member that vanished or moved, and a damaged json are all seen, and where. A shard written before
(no ``format_version``) carries neither: only its structure and its decoders can be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webdataset.tariterators import base_plus_ext

from shards.format import FORMAT_VERSION, LEGACY_FORMAT_VERSION, SampleMeta

JSON_MEMBER = "json"


def digest(data: bytes) -> str:
    """The hex sha256 of a member's bytes (about 0.1 ms per 200 KB; BENCHMARKS.md)."""
    return hashlib.sha256(data).hexdigest()


def as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


@dataclass(frozen=True)
class MemberRecord:
    """One tar member as the stats json lists it: ``[name, size, sha256]``."""

    name: str
    size: int
    sha256: str

    def as_list(self) -> list[Any]:
        return [self.name, self.size, self.sha256]


def seal_sample(sample: Mapping[str, Any]) -> tuple[dict[str, Any], list[MemberRecord]]:
    """The sample with its json rewritten to hold ``format_version`` and the sha256 of every other member, and
    the records of its members in the order a WebDataset ``TarWriter`` writes them (sorted by extension)."""
    key = sample["__key__"]
    members = {name: as_bytes(value) for name, value in sample.items() if not name.startswith("__")}
    if JSON_MEMBER not in members:
        raise ValueError(f"sample {key!r} has no json member: nothing can hold its checksums")
    meta = SampleMeta.from_json(members[JSON_MEMBER])
    meta.format_version = FORMAT_VERSION
    meta.sha256 = {name: digest(data) for name, data in sorted(members.items()) if name != JSON_MEMBER}
    members[JSON_MEMBER] = meta.to_json()
    records = [MemberRecord(f"{key}.{name}", len(data), digest(data)) for name, data in sorted(members.items())]
    return {"__key__": key, **members}, records


def expected_members(stats: Mapping[str, Any] | None) -> dict[str, list[MemberRecord]] | None:
    """Key -> its member records, in tar order, from a stats json of format 2; None for an older one."""
    if not stats or stats.get("format_version", LEGACY_FORMAT_VERSION) < FORMAT_VERSION:
        return None
    listed = stats.get("members")
    if not isinstance(listed, list):
        raise ValueError("stats json of format 2 without its members list: the stats json is damaged")
    by_key: dict[str, list[MemberRecord]] = {}
    for entry in listed:
        name, size, sha = entry
        key, _ = base_plus_ext(name)
        by_key.setdefault(key, []).append(MemberRecord(str(name), int(size), str(sha)))
    return by_key


def expected_count(stats: Mapping[str, Any] | None, members: Mapping[str, Any] | None) -> int | None:
    """Samples a shard should hold: its members list's keys (format 2) or its stats ``count`` (format 1)."""
    if members is not None:
        return len(members)
    if stats and isinstance(stats.get("count"), int):
        return int(stats["count"])
    return None


def check_members(
    key: str, members: Sequence[tuple[str, bytes]], expected: Sequence[MemberRecord] | None
) -> list[str]:
    """What is wrong with one sample's bytes, member by member (empty when intact or unprotected).

    ``members``: ``(member name, data)`` in tar order. With ``expected`` (the stats list) every member's name, size
    and sha256 must match in order; without it a format-2 sample checks its other members against its own json.
    """
    if expected is not None:
        return _against_stats(members, expected)
    json_data = next((data for name, data in members if name == f"{key}.{JSON_MEMBER}"), None)
    if json_data is None:
        return []  # the structure check names the missing json
    try:
        meta = SampleMeta.from_json(json_data)
    except (ValueError, TypeError):
        return []  # the record check names it
    if meta.format_version == LEGACY_FORMAT_VERSION:
        return []
    problems = []
    present = {name[len(key) + 1 :]: data for name, data in members if name != f"{key}.{JSON_MEMBER}"}
    for extension in sorted(set(meta.sha256) | set(present)):
        if extension not in present:
            problems.append(f"member .{extension} is missing (its json lists its sha256)")
        elif extension not in meta.sha256:
            problems.append(f"member .{extension} is not listed in its json's sha256: it does not belong here")
        elif digest(present[extension]) != meta.sha256[extension]:
            problems.append(f"member .{extension}: sha256 differs from its json's, the bytes are damaged")
    return problems


def _against_stats(members: Sequence[tuple[str, bytes]], expected: Sequence[MemberRecord]) -> list[str]:
    problems = []
    wanted = {record.name: record for record in expected}
    seen: set[str] = set()
    for name, data in members:
        record = wanted.get(name)
        if record is None:
            problems.append(f"member {name!r} is not in the stats json's list")
        elif name in seen:
            problems.append(f"member {name!r} appears twice")
        elif len(data) != record.size:
            problems.append(f"member {name!r} holds {len(data)} bytes, the stats json says {record.size}")
        elif digest(data) != record.sha256:
            problems.append(f"member {name!r}: sha256 differs from the stats json's, the bytes are damaged")
        seen.add(name)
    problems += [f"member {record.name!r} is missing" for record in expected if record.name not in seen]
    if not problems and [name for name, _ in members] != [record.name for record in expected]:
        problems.append("members are out of the order the stats json lists")
    return problems
