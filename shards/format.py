"""The sample format: what one sample is on disk, from its key to the bytes of each member and their checksums.

This module is the contract between the pseudo-labelling and the distillation stages; ``writer.py`` and
``reader.py`` move what it defines on disk. One idea in three parts, kept together because each is read with the
others every time a sample is made or checked:

- **The record**: keys, sizes, label kinds, the 16-bit label code (0 invalid, 1..65535 over the sample's range)
  and the metadata json (:class:`SampleMeta`).
- **The bytes** (the codec): the JPEG image, the 16-bit label under a named codec, and the json record. One table,
  ``LABEL_CODECS``, maps a member extension to its encoder and decoder, so the extension in the shard names the
  codec and the reader never guesses. The default was chosen by measurement (``benchmarks/label_codecs.py``,
  figures in BENCHMARKS.md).
- **The checksums** (format version 2): each sample's json holds the sha256 of its other members (``"sha256":
  {"jpg": ..., "depth16.dzst": ...}``), so a sample checks itself wherever it travels; and each shard's stats json
  lists every member in tar order with its size and sha256 (the json members included), so a tar that stops early,
  a member that vanished or moved, and a damaged json are all seen, and where. A shard written before (no
  ``format_version``) carries neither: only its structure and its decoders can be checked.
- **Several labels** (format version 3): one label per teacher, the first at ``<key>.depth16.<codec>`` as before,
  teacher ``i >= 1`` at ``<key>.depth16_<i>.<codec>`` (:func:`label_member`), each described by one entry of the
  json's ``labels`` list (:class:`LabelRecord`). Records of versions 1 and 2 read as one label.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import io
import json
import posixpath
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import zstandard
from PIL import Image
from webdataset.tariterators import base_plus_ext

#: Size of every sample in a shard, (width, height). The reference recipe's 512x384 crop.
SAMPLE_WIDTH = 512
SAMPLE_HEIGHT = 384
SAMPLE_SIZE = (SAMPLE_WIDTH, SAMPLE_HEIGHT)

#: JPEG quality of the stored image (recorded in every sample's json as well).
JPEG_QUALITY = 95

#: Label kinds. A relative teacher's output is unitless inverse depth; a sensor gives metres.
RELATIVE_INVERSE_DEPTH = "relative_inverse_depth"
METRIC_DEPTH = "metric_depth"
LABEL_KINDS = (RELATIVE_INVERSE_DEPTH, METRIC_DEPTH)

#: Depth (metres) at or below which :func:`inverse_depth` counts it as this: 1 mm, nearer than any camera focuses,
#: so no real depth changes, and no inverse depth is above 1000 per metre (nothing divides by zero).
MIN_DEPTH = 1e-3

#: The 16-bit code: 0 marks an invalid pixel; valid values map linearly onto 1..65535 over ``label_range``.
INVALID_CODE = 0
FIRST_VALID_CODE = 1
LAST_VALID_CODE = 65535
VALID_CODE_STEPS = LAST_VALID_CODE - FIRST_VALID_CODE  # 65534 intervals between min and max

#: How invalid pixels are marked, written into every sample's json so a reader never guesses.
MASK_POLICY = "code_0_is_invalid"

#: Version of the shard format, in every sample json and stats json. 2 added the checksums (each sample json holds
#: the sha256 of its other members; each stats json lists every member with its size and sha256); 3 added several
#: labels per sample (the json's ``labels`` list, members ``depth16_<i>.<codec>``). A record without the field was
#: written before 2 (version 1: no checksums) and still reads, as does every version 2 record.
FORMAT_VERSION = 3
LEGACY_FORMAT_VERSION = 1
CHECKSUMS_FORMAT_VERSION = 2  # the first version with checksums
LABELS_FORMAT_VERSION = 3  # the first version with the ``labels`` list

#: Reject reasons for labels (pseudolabel adds its own for inputs).
REJECT_NO_VALID_PIXELS = "no_valid_pixels"
REJECT_CONSTANT_LABEL = "constant_label"
REJECT_NON_FINITE = "non_finite_label"


class LabelError(ValueError):
    """A label that cannot be stored; ``reason`` is a short machine-readable name for reject lists."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_from_relative_path(relative_path: str) -> str:
    """The sample key of a file: its relative path without the extension, other dots in the name -> ``_``.

    WebDataset splits a member name at the first dot of the *file name*, so ``x.jpg.json`` would split
    wrongly; dots in folder names are harmless. ``a/airfield/00000001.jpg`` -> ``a/airfield/00000001``.
    """
    normalised = relative_path.replace("\\", "/")
    while normalised.startswith("./"):
        normalised = normalised[2:]
    folder, name = posixpath.split(normalised)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = stem.replace(".", "_")
    if not stem:
        raise ValueError(f"cannot derive a sample key from {relative_path!r}: empty file name")
    return posixpath.join(folder, stem) if folder else stem


def check_key(key: str) -> str:
    """Refuse keys that WebDataset would split or that escape the shard (absolute, ``..``)."""
    name = posixpath.basename(key)
    if not key or "." in name or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"invalid sample key {key!r}: the file-name part may hold no '.', and no '/..' or leading '/'")
    return key


def inverse_depth(depth: Any, valid: Any = None) -> Any:
    """Metres -> inverse depth (1 / metres), the one conversion every part uses (labels, losses, evaluation, the
    metres-predicting students). Depth at or below :data:`MIN_DEPTH` counts as ``MIN_DEPTH``; with ``valid`` (bool,
    same shape), pixels outside it hold 0, whatever their depth (NaN included). Takes and returns a numpy array or
    a torch tensor (no torch import here: the tensor's own methods)."""
    inverse = 1.0 / depth.clip(min=MIN_DEPTH)
    if valid is None:
        return inverse
    if isinstance(inverse, np.ndarray):
        return np.where(valid, inverse, inverse.dtype.type(0))
    return inverse.masked_fill(~valid, 0.0)


def as_inverse_depth(values: Any, kind: str) -> Any:
    """A map of ``kind`` as inverse depth: relative inverse depth as it is, metric depth as 1 / metres
    (:func:`inverse_depth`). The one conversion by kind, for labels and predictions alike."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown depth kind {kind!r}; expected one of {LABEL_KINDS}")
    return inverse_depth(values) if kind == METRIC_DEPTH else values


def scale_to_codes(values: Any, low: Any, high: Any) -> Any:
    """Values in ``[low, high]`` (``high > low``) -> their label codes ``FIRST_VALID_CODE..LAST_VALID_CODE``, rounded
    half to even, still as floats (the caller casts them to uint16). The one formula of the code, for a numpy array
    with float bounds (:func:`encode_label_codes`) and for a float64 torch tensor with per-map ``(B, 1, 1)`` bounds
    (pseudolabel codes a teacher's batch on its GPU so): both give the same codes. No torch import here.
    """
    codes = (values - low) / (high - low) * VALID_CODE_STEPS
    if isinstance(codes, np.ndarray):
        np.rint(codes, out=codes)  # in place: ``ndarray.round`` costs six times as much per map
    else:
        codes = codes.round_()  # a torch tensor
    codes += FIRST_VALID_CODE
    return codes


def encode_label_codes(values: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Float map (H, W) -> uint16 codes (H, W) and the (min, max) range that undoes them.

    Pixels that are non-finite or outside ``valid`` get code 0. Raises :class:`LabelError` for a map with no
    valid pixel or a constant one: neither carries depth.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"a label is a (H, W) map, got shape {values.shape}")
    mask = np.isfinite(values)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    all_valid = bool(mask.all())  # a teacher's map: no masking at all (the hot path, 0.6 ms per 512x384 map)
    if not all_valid and not mask.any():
        raise LabelError(REJECT_NO_VALID_PIXELS, "label has no valid pixel")
    filled = values if all_valid else np.where(mask, values, np.nan)
    low, high = (float(values.min()), float(values.max())) if all_valid else (
        float(np.nanmin(filled)), float(np.nanmax(filled)))
    if not high > low:
        raise LabelError(REJECT_CONSTANT_LABEL, f"label is constant ({low})")
    scaled = scale_to_codes(filled, low, high)
    if all_valid:
        return scaled.astype(np.uint16), (low, high)
    return np.where(mask, scaled, INVALID_CODE).astype(np.uint16), (low, high)


def decode_label_codes(codes: np.ndarray, label_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """uint16 codes -> float32 values and a bool validity mask; invalid pixels hold 0.0."""
    if codes.dtype != np.uint16:
        raise ValueError(f"label codes must be uint16, got {codes.dtype}: an 8-bit decode destroys the label")
    low, high = label_range
    valid = codes != INVALID_CODE
    values = codes.astype(np.float32)  # in place from here: this runs once per sample in every training loader
    values -= FIRST_VALID_CODE
    values *= np.float32((high - low) / VALID_CODE_STEPS)
    values += np.float32(low)
    if not valid.all():
        values[~valid] = 0.0
    return values, valid


LABEL_MEMBER = re.compile(r"^(?P<stem>depth16)(?:_(?P<index>[1-9][0-9]*))?\.(?P<ext>[a-z0-9]+)$")


def label_member(codec: str, index: int) -> str:
    """The member extension of label ``index`` under ``codec``: the first label keeps the codec's own name
    (``depth16.dzst``), so readers of one label keep working; label ``i >= 1`` is ``depth16_<i>.<ext>``
    (``label_member("depth16.dzst", 1) == "depth16_1.dzst"``)."""
    label_codec(codec)  # refuses an unknown codec
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"a label index is an integer >= 0, got {index!r}")
    if index == 0:
        return codec
    stem, ext = codec.split(".", 1)
    return f"{stem}_{index}.{ext}"


def parse_label_member(name: str) -> tuple[str, int] | None:
    """The inverse of :func:`label_member`: ``"depth16_1.dzst"`` -> ``("depth16.dzst", 1)``; None for a name that is
    not a label member of a known codec (``jpg``, ``depth16_0.dzst``, ``depth16.bmp``)."""
    match = LABEL_MEMBER.match(name)
    if match is None:
        return None
    codec = f"{match['stem']}.{match['ext']}"
    if codec not in LABEL_CODECS:
        return None
    return codec, int(match["index"] or 0)


def _check_kind(kind: str) -> None:
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; expected one of {LABEL_KINDS}")


@dataclass
class LabelRecord:
    """One label of a sample as its json's ``labels`` list holds it: the member extension (:func:`label_member`),
    the teacher that made it (None for sensor ground truth), its kind and the range that undoes its codes."""

    member: str
    teacher: str | None
    kind: str
    label_range: tuple[float, float]

    def __post_init__(self) -> None:
        _check_kind(self.kind)

    @classmethod
    def from_record(cls, entry: Any) -> LabelRecord:
        """Parse one entry strictly: exactly these four fields, a label member name, a two-number range."""
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(entry, dict) or set(entry) != set(names):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"a labels entry holds exactly {names}, got {found}: a damaged or foreign record")
        if parse_label_member(str(entry["member"])) is None:
            raise ValueError(f"labels entry names {entry['member']!r}, not a label member (depth16[_<i>].<codec>)")
        label_range = entry["label_range"]
        if not isinstance(label_range, (list, tuple)) or len(label_range) != 2:
            raise ValueError(f"labels entry {entry['member']!r} has label_range {label_range!r}, not [min, max]")
        return cls(str(entry["member"]), entry["teacher"], entry["kind"], tuple(label_range))


@dataclass(frozen=True)
class ExtraLabel:
    """A label after the first, as the writer takes it: uint16 codes and their range (:func:`encode_label_codes`),
    its kind and its teacher. :meth:`from_depth` makes one from a float map."""

    codes: np.ndarray
    label_range: tuple[float, float]
    kind: str
    teacher: str | None = None

    def __post_init__(self) -> None:
        _check_kind(self.kind)

    @classmethod
    def from_depth(
        cls, depth: np.ndarray, kind: str, teacher: str | None = None, valid: np.ndarray | None = None
    ) -> ExtraLabel:
        """A float (H, W) map (0 / non-finite / outside ``valid`` = invalid) -> its codes; raises :class:`LabelError`
        for a map that cannot be stored, as the first label does."""
        codes, label_range = encode_label_codes(depth, valid)
        return cls(codes, label_range, kind, teacher)


@dataclass
class SampleMeta:
    """The json record of one sample. Every field is written; a writer's own fields go into ``extra``."""

    source: str  # the original path / row id the sample came from
    kind: str  # one of LABEL_KINDS
    label_range: tuple[float, float] = (0.0, 0.0)  # filled by the encoder
    source_size: tuple[int, int] = (0, 0)  # (width, height) of the decoded source image
    scale: float = 1.0  # resize factor applied to the source before the crop
    crop_box: tuple[int, int, int, int] = (0, 0, SAMPLE_WIDTH, SAMPLE_HEIGHT)  # left, top, right, bottom after scaling
    size: tuple[int, int] = SAMPLE_SIZE  # (width, height) of the stored image and label
    teacher: str | None = None  # hub id or folder of the teacher (None for sensor ground truth)
    teacher_revision: str | None = None
    depth_codec: str = ""  # extension of the label member, filled by the encoder
    jpeg_quality: int = JPEG_QUALITY
    mask_policy: str = MASK_POLICY
    depth_scale: float | None = None  # sensor units per metre for imported ground truth (information only)
    eval_split: str | None = None  # a benchmark's evaluation split (nyu_test, diode_val ...): kept out of training
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION  # LEGACY_FORMAT_VERSION for a record written without the field
    sha256: dict[str, str] = field(default_factory=dict)  # member extension -> hex digest (filled by the writer)
    labels: list[LabelRecord] = field(default_factory=list)  # every label, the first one's equal to the fields above

    def __post_init__(self) -> None:
        _check_kind(self.kind)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> SampleMeta:
        """Parse a record strictly: every field the writers have always written must be present, and a field this
        version does not know is an error, never moved to ``extra`` (writers put their own fields into ``extra``,
        so an unknown top-level name is a damaged one, e.g. ``depth]codec``, whose value would silently be lost).
        A record of version 1 or 2 has no ``labels``: its one label is derived from the top-level fields."""
        record = json.loads(data) if isinstance(data, (bytes, str)) else dict(data)
        if not isinstance(record, dict):
            raise ValueError(f"the sample json is a {type(record).__name__}, not a record")
        version = record.setdefault("format_version", LEGACY_FORMAT_VERSION)
        if not isinstance(version, int) or not LEGACY_FORMAT_VERSION <= version <= FORMAT_VERSION:
            raise ValueError(
                f"format_version {version!r} is not one this reader knows ({LEGACY_FORMAT_VERSION}..{FORMAT_VERSION}):"
                " a newer writer made it (upgrade this package) or the field is damaged"
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        if version < LABELS_FORMAT_VERSION:
            known.pop("labels")  # a version 2 record holding it is damaged (its version or the name)
        unknown = sorted(set(record) - set(known))
        if unknown:
            hints = [_closest(name, known) for name in unknown]
            raise ValueError(f"unknown field(s) {', '.join(hints)} in the sample json: a damaged or foreign record")
        optional = {"sha256"} if version == LEGACY_FORMAT_VERSION else set()
        optional |= {"eval_split"}  # added after format 2 shipped; absent means unmarked (see marked_eval_split)
        missing = sorted(set(known) - set(record) - optional)
        if missing:
            raise ValueError(f"the sample json lacks field(s) {missing}: every writer writes them all")
        for name in ("label_range", "source_size", "crop_box", "size"):
            if record[name] is not None:
                record[name] = tuple(record[name])
        if not isinstance(record.get("extra", {}), dict) or not isinstance(record.get("sha256", {}), dict):
            raise ValueError("the sample json's extra and sha256 fields must be records")
        if version < LABELS_FORMAT_VERSION:
            record["labels"] = [LabelRecord(record["depth_codec"], record["teacher"], record["kind"],
                                            record["label_range"])]
        else:
            record["labels"] = _parse_labels(record)
        return cls(**record)

    def first_label(self) -> LabelRecord:
        """The record of the first label, as the top-level fields describe it."""
        return LabelRecord(self.depth_codec, self.teacher, self.kind, self.label_range)


def _parse_labels(record: dict[str, Any]) -> list[LabelRecord]:
    """The ``labels`` list of a version 3 record: one entry per label, entry ``i`` at member
    ``label_member(depth_codec, i)``, the first equal to the top-level fields."""
    entries = record["labels"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"the sample json's labels must be a non-empty list, got {entries!r}")
    labels = [LabelRecord.from_record(entry) for entry in entries]
    codec = record["depth_codec"]
    for index, label in enumerate(labels):
        if parse_label_member(label.member) != (codec, index):
            raise ValueError(f"labels entry {index} names member {label.member!r}; the json's codec {codec!r} "
                             f"puts label {index} at {label_member(codec, index)!r}")
    first = LabelRecord(codec, record["teacher"], record["kind"], record["label_range"])
    if labels[0] != first:
        raise ValueError(f"the first labels entry {dataclasses.asdict(labels[0])} differs from the top-level fields "
                         f"{dataclasses.asdict(first)}: a damaged record")
    return labels


#: Marks of evaluation data in the ``extra`` of samples imported before ``eval_split`` existed: (field, value, split).
LEGACY_EVAL_MARKS = (("nyu_split", "test", "nyu_test"), ("diode_split", "val", "diode_val"))


def marked_eval_split(record: dict[str, Any]) -> str | None:
    """The evaluation split a sample json (a parsed record) belongs to, or None: its ``eval_split``, or for an import
    written before that field, NYU's test and DIODE's validation split as its ``extra`` names them."""
    if record.get("eval_split"):
        return str(record["eval_split"])
    extra = record.get("extra") or {}
    return next((split for name, value, split in LEGACY_EVAL_MARKS if extra.get(name) == value), None)


def _closest(name: str, known: dict[str, Any]) -> str:
    """``'depth]codec' (did you mean 'depth_codec'?)`` for a name one or two characters off a known one."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f"{name!r} (did you mean {match[0]!r}?)" if match else repr(name)


@dataclass
class DecodedLabel:
    """One label of a sample, decoded: ``depth`` float32 (H, W), inverse depth or metres per ``kind``, 0 where
    invalid; ``valid`` bool (H, W); ``member`` its extension (``depth16_1.dzst``)."""

    teacher: str | None
    kind: str
    depth: np.ndarray
    valid: np.ndarray
    member: str


@dataclass
class DepthSample:
    """One decoded sample: what the reader yields and the writer takes.

    ``image``: uint8 (H, W, 3) RGB. ``depth``: float32 (H, W), the first label, inverse depth or metres per
    ``meta.kind``, 0 where invalid. ``valid``: bool (H, W). ``labels``: every label decoded, the first holding the
    same arrays as ``depth`` and ``valid`` (empty for a sample built by hand).
    """

    key: str
    image: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    meta: SampleMeta
    labels: list[DecodedLabel] = field(default_factory=list)


def label_names(labels: Sequence[LabelRecord | DecodedLabel]) -> list[str]:
    """A name per label for people and dict keys: its teacher id (``ground_truth`` for none), ``#<index>`` added
    where an earlier label has the same name."""
    names: list[str] = []
    for index, label in enumerate(labels):
        name = label.teacher if label.teacher is not None else "ground_truth"
        while name in names:
            name = f"{name}#{index}"
        names.append(name)
    return names


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
    """Key -> its member records, in tar order, from a stats json of format 2 or later; None for an older one."""
    if not stats or stats.get("format_version", LEGACY_FORMAT_VERSION) < CHECKSUMS_FORMAT_VERSION:
        return None
    listed = stats.get("members")
    if not isinstance(listed, list):
        raise ValueError(f"stats json of format {stats.get('format_version')} without its members list: the stats "
                         "json is damaged")
    by_key: dict[str, list[MemberRecord]] = {}
    for entry in listed:
        name, size, sha = entry
        key, _ = base_plus_ext(name)
        by_key.setdefault(key, []).append(MemberRecord(str(name), int(size), str(sha)))
    return by_key


def expected_count(stats: Mapping[str, Any] | None, members: Mapping[str, Any] | None) -> int | None:
    """Samples a shard should hold: its members list's keys (format 2 on) or its stats ``count`` (format 1)."""
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


_SHAPE_HEADER = struct.Struct("<II")  # height, width of the uint16 array that follows
_ZSTD_LEVEL = 1


def _zstd_compress(payload: bytes) -> bytes:
    """Level 1 with the frame's content checksum (4 bytes): a damaged frame fails to decode instead of decoding to
    a label that differs everywhere below and right of the damage (the 2-D prediction spreads one wrong byte)."""
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).compress(payload)


def _png_encode(codes: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _png_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"label PNG is mode {image.mode!r}, not 16-bit: its values were cut to 8 bits")
        return np.asarray(image, dtype=np.uint16).copy()


def _delta_planes(codes: np.ndarray) -> bytes:
    """2-D prediction residual (x - left - up + up_left, modulo 2**16), zigzag-coded so that small residuals of
    either sign become small numbers, then high bytes and low bytes in two planes: smooth maps become runs
    of zeros that zstd compresses well. Undone exactly by two cumulative sums modulo 2**16."""
    residual = codes.astype(np.uint16, copy=True)
    residual[:, 1:] -= codes[:, :-1]
    residual[1:] -= residual[:-1].copy()
    signed = residual.view(np.int16)
    zigzag = ((signed << 1) ^ (signed >> 15)).view(np.uint16)
    little = zigzag.astype("<u2").view(np.uint8).reshape(-1, 2)
    return little[:, 1].tobytes() + little[:, 0].tobytes()


def _undo_delta_planes(payload: bytes, height: int, width: int) -> np.ndarray:
    planes = np.frombuffer(payload, dtype=np.uint8)
    count = height * width
    if planes.size != 2 * count:
        raise ValueError(f"label payload holds {planes.size} bytes, expected {2 * count} for {height}x{width}")
    zigzag = np.empty((height, width), dtype="<u2")
    zigzag_bytes = zigzag.view(np.uint8).reshape(-1)
    zigzag_bytes[1::2] = planes[:count]  # high bytes
    zigzag_bytes[0::2] = planes[count:]  # low bytes
    residual = zigzag >> 1
    residual ^= np.uint16(0) - (zigzag & 1)
    values = np.cumsum(residual, axis=1, dtype=np.uint16)
    for row in range(1, height):  # row by row: 3x faster than np.cumsum(axis=0) on uint16, identical modulo 2**16
        np.add(values[row - 1], values[row], out=values[row])
    return values


def _zstd_delta_encode(codes: np.ndarray) -> bytes:
    header = _SHAPE_HEADER.pack(*codes.shape)
    return header + _zstd_compress(_delta_planes(codes))


def _zstd_delta_decode(data: bytes) -> np.ndarray:
    height, width = _SHAPE_HEADER.unpack_from(data)
    payload = zstandard.ZstdDecompressor().decompress(data[_SHAPE_HEADER.size :], max_output_size=2 * height * width)
    return _undo_delta_planes(payload, height, width)


def _zstd_raw_encode(codes: np.ndarray) -> bytes:
    header = _SHAPE_HEADER.pack(*codes.shape)
    return header + _zstd_compress(codes.astype("<u2").tobytes())


def _zstd_raw_decode(data: bytes) -> np.ndarray:
    height, width = _SHAPE_HEADER.unpack_from(data)
    payload = zstandard.ZstdDecompressor().decompress(data[_SHAPE_HEADER.size :], max_output_size=2 * height * width)
    return np.frombuffer(payload, dtype="<u2").reshape(height, width).astype(np.uint16)


def _npy_encode(codes: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, codes.astype("<u2"), allow_pickle=False)
    return buffer.getvalue()


def _npy_decode(data: bytes) -> np.ndarray:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype != np.dtype("<u2") or array.ndim != 2:
        raise ValueError(f"label .npy holds {array.dtype} {array.shape}, expected uint16 (H, W)")
    return array.astype(np.uint16)


@dataclass(frozen=True)
class LabelCodec:
    """Encoder and decoder of a uint16 (H, W) code array; ``extension`` is the shard member's extension."""

    extension: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]


LABEL_CODECS: dict[str, LabelCodec] = {
    codec.extension: codec
    for codec in (
        LabelCodec("depth16.dzst", _zstd_delta_encode, _zstd_delta_decode),
        LabelCodec("depth16.zst", _zstd_raw_encode, _zstd_raw_decode),
        LabelCodec("depth16.npy", _npy_encode, _npy_decode),
        LabelCodec("depth16.png", _png_encode, _png_decode),
    )
}
DEFAULT_LABEL_CODEC = "depth16.dzst"
#: The codec names as a type, so that configs list them as choices; kept equal to ``LABEL_CODECS``'s keys.
LabelCodecName = Literal["depth16.dzst", "depth16.zst", "depth16.npy", "depth16.png"]
if set(get_args(LabelCodecName)) != set(LABEL_CODECS):  # a codec added to one table and not the other
    raise ImportError(f"LabelCodecName {get_args(LabelCodecName)} differs from LABEL_CODECS {sorted(LABEL_CODECS)}")


def label_codec(extension: str) -> LabelCodec:
    try:
        return LABEL_CODECS[extension]
    except KeyError:
        raise ValueError(f"unknown label codec {extension!r}; known: {sorted(LABEL_CODECS)}") from None


def find_label_member(raw: Mapping[str, Any]) -> str:
    """The first label's member extension in a raw sample (index 0, ``depth16.<codec>``); exactly one must be
    present, whatever labels follow it."""
    found = [name for name in raw if (parsed := parse_label_member(name)) is not None and parsed[1] == 0]
    if len(found) != 1:
        members = sorted(k for k in raw if not k.startswith("__"))
        raise ValueError(f"sample {raw.get('__key__')!r} holds {len(found)} first label members (members: {members})")
    return found[0]


def label_members(raw: Mapping[str, Any]) -> list[str]:
    """Every label member extension in a raw sample, sorted by codec and index."""
    return sorted((name for name in raw if parse_label_member(name) is not None), key=parse_label_member)


def decode_depth16(data: bytes, member: str, label_range: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """One label member's bytes -> (float32 (H, W) values, 0 where invalid; bool (H, W) valid mask). ``member``: its
    extension (``depth16.dzst``, ``depth16_1.npy`` ...); ``label_range``: its entry's range in the json.
    docs/shards.md gives the same function with no project import (numpy, zstandard, PIL), for plain WebDataset
    pipelines; ``tests/shards/test_public_reader.py`` checks the two agree on every codec."""
    parsed = parse_label_member(member)
    if parsed is None:
        raise ValueError(f"{member!r} is not a label member (depth16[_<i>].<codec>, codecs {sorted(LABEL_CODECS)})")
    codes = label_codec(parsed[0]).decode(data)
    return decode_label_codes(codes, (float(label_range[0]), float(label_range[1])))


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"an image is uint8 (H, W, 3), got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # no copy for the usual RGB JPEG


def sample_members(
    key: str, jpg: bytes, codes: np.ndarray, label_range: tuple[float, float], meta: SampleMeta,
    codec: str = DEFAULT_LABEL_CODEC, more_labels: Sequence[ExtraLabel] = (),
) -> dict[str, bytes | str]:
    """One sample's WebDataset members from an encoded JPEG and label codes already computed (the pseudo-labeller
    makes the JPEG in a DataLoader worker and the codes beside the teacher). The first label is the meta's teacher's
    and kind's; ``more_labels`` are the next teachers' (members ``depth16_1.<codec>`` ...). Fills the meta's label
    fields and its ``labels`` list."""
    check_key(key)
    for index, label_codes in enumerate([codes, *(extra.codes for extra in more_labels)]):
        if label_codes.dtype != np.uint16 or label_codes.ndim != 2 or label_codes.shape != codes.shape:
            raise ValueError(f"label {index} of {key!r} is {label_codes.dtype} {label_codes.shape}; labels are uint16 "
                             f"(H, W), all of one size ({codes.shape})")
    label = label_codec(codec)
    meta.label_range = (float(label_range[0]), float(label_range[1]))
    meta.depth_codec = label.extension
    meta.size = (int(codes.shape[1]), int(codes.shape[0]))
    meta.labels = [meta.first_label()]
    members: dict[str, bytes | str] = {"__key__": key, "jpg": jpg, label.extension: label.encode(codes)}
    for index, extra in enumerate(more_labels, start=1):
        member = label_member(codec, index)
        extra_range = (float(extra.label_range[0]), float(extra.label_range[1]))
        meta.labels.append(LabelRecord(member, extra.teacher, extra.kind, extra_range))
        members[member] = label.encode(extra.codes)
    members["json"] = meta.to_json()
    return members


def encode_sample(
    key: str,
    image: np.ndarray,
    depth: np.ndarray,
    meta: SampleMeta,
    valid: np.ndarray | None = None,
    codec: str = DEFAULT_LABEL_CODEC,
    more_labels: Sequence[ExtraLabel] = (),
) -> dict[str, bytes | str]:
    """One sample as WebDataset members. Raises ``LabelError`` for labels that cannot be stored. ``more_labels``:
    the next teachers' labels (:meth:`ExtraLabel.from_depth` makes one from a float map)."""
    check_key(key)
    if image.shape[:2] != depth.shape:
        raise ValueError(f"image {image.shape[:2]} and label {depth.shape} differ in size for {key!r}")
    codes, label_range = encode_label_codes(depth, valid)
    jpg = encode_jpeg(image, meta.jpeg_quality)
    return sample_members(key, jpg, codes, label_range, meta, codec, more_labels)


def _decode_labels(raw: Mapping[str, Any], meta: SampleMeta, first_only: bool) -> list[DecodedLabel]:
    """The labels the json lists, decoded (only the first with ``first_only``); the sample's label members must be
    exactly those the json lists, each of the json's size."""
    listed = [label.member for label in meta.labels]
    present = label_members(raw)
    if sorted(listed) != sorted(present):
        raise ValueError(f"sample {raw.get('__key__')!r} holds label members {present}, its json lists {listed}")
    expected = (meta.size[1], meta.size[0])
    decoded = []
    for label in meta.labels[:1] if first_only else meta.labels:
        depth, valid = decode_depth16(raw[label.member], label.member, label.label_range)
        if depth.shape != expected:
            raise ValueError(f"label .{label.member} of {raw.get('__key__')!r} is {depth.shape}, its json says "
                             f"{expected}")
        decoded.append(DecodedLabel(label.teacher, label.kind, depth, valid, label.member))
    return decoded


def decode_labels(raw: Mapping[str, Any]) -> list[DecodedLabel]:
    """Raw members -> every label of the sample, in the json's order (the first is the one readers of one label
    see), without touching the image."""
    return _decode_labels(raw, SampleMeta.from_json(raw["json"]), first_only=False)


def decode_label(raw: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, SampleMeta]:
    """Raw members -> (float32 first label, its bool valid mask, metadata), without touching the image."""
    meta = SampleMeta.from_json(raw["json"])
    (first,) = _decode_labels(raw, meta, first_only=True)
    return first.depth, first.valid, meta


def decode_sample(raw: Mapping[str, Any], all_labels: bool = True) -> DepthSample:
    """Raw WebDataset members -> :class:`DepthSample`. Raises on any inconsistency; the reader's handler counts it.
    ``all_labels=False`` decodes only the first label (``labels`` then holds it alone): a reader that trains on the
    first teacher need not pay for the others' decoding."""
    meta = SampleMeta.from_json(raw["json"])
    labels = _decode_labels(raw, meta, first_only=not all_labels)
    image = decode_jpeg(raw["jpg"])
    if image.shape[:2] != labels[0].depth.shape:
        raise ValueError(f"image {image.shape[:2]} and label {labels[0].depth.shape} differ for {raw.get('__key__')!r}")
    return DepthSample(raw["__key__"], image, labels[0].depth, labels[0].valid, meta, labels)
