"""The sample format: keys, sizes, label kinds, the 16-bit label code and the metadata record.

This module is the contract between the pseudo-labelling and the distillation stages. Everything a shard
holds is defined here; ``codec.py`` turns it into bytes, ``writer.py`` and ``reader.py`` move it on disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Size of every sample in a shard, (width, height). The reference recipe's 512x384 crop.
SAMPLE_WIDTH = 512
SAMPLE_HEIGHT = 384
SAMPLE_SIZE = (SAMPLE_WIDTH, SAMPLE_HEIGHT)

#: The student's training resolution, (width, height).
STUDENT_SIZE = (256, 192)

#: JPEG quality of the stored image (recorded in every sample's json as well).
JPEG_QUALITY = 95

#: Label kinds. A relative teacher's output is unitless inverse depth; a sensor gives metres.
RELATIVE_INVERSE_DEPTH = "relative_inverse_depth"
METRIC_DEPTH = "metric_depth"
LABEL_KINDS = (RELATIVE_INVERSE_DEPTH, METRIC_DEPTH)

#: Depth (metres) at or below which :func:`inverse_depth` counts it as this: 1 mm, nearer than any camera focuses,
#: so no real depth changes, and no inverse depth is above 1000 per metre (nothing divides by zero).
MIN_DEPTH = 1e-3

#: Sides of a student's input must be multiples of this: the largest encoder output stride of any student.
INPUT_MULTIPLE = 32

#: The 16-bit code: 0 marks an invalid pixel; valid values map linearly onto 1..65535 over ``label_range``.
INVALID_CODE = 0
FIRST_VALID_CODE = 1
LAST_VALID_CODE = 65535
VALID_CODE_STEPS = LAST_VALID_CODE - FIRST_VALID_CODE  # 65534 intervals between min and max

#: How invalid pixels are marked, written into every sample's json so a reader never guesses.
MASK_POLICY = "code_0_is_invalid"

#: Version of the shard format, in every sample json and stats json. 2 added the checksums (each sample json holds
#: the sha256 of its other members; each stats json lists every member with its size and sha256). A record without
#: the field was written before it (version 1: no checksums) and still reads.
FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1

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


def check_input_size(width: int, height: int, what: str = "model input") -> None:
    """Refuse a student input size whose sides are not positive multiples of :data:`INPUT_MULTIPLE`: the encoder
    halves the picture five times and the decoder adds its skips back at each scale, so the sizes must divide."""
    if width <= 0 or height <= 0 or width % INPUT_MULTIPLE or height % INPUT_MULTIPLE:
        raise ValueError(
            f"{what} {width}x{height} (W x H): both sides must be positive multiples of {INPUT_MULTIPLE}"
        )


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
    scaled = (filled - low) / (high - low) * VALID_CODE_STEPS
    np.rint(scaled, out=scaled)
    scaled += FIRST_VALID_CODE
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

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"unknown label kind {self.kind!r}; expected one of {LABEL_KINDS}")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> SampleMeta:
        """Parse a record strictly: every field the writers have always written must be present, and a field this
        version does not know is an error, never moved to ``extra`` (writers put their own fields into ``extra``,
        so an unknown top-level name is a damaged one, e.g. ``depth]codec``, whose value would silently be lost)."""
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
        return cls(**record)


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
class DepthSample:
    """One decoded sample: what the reader yields and the writer takes.

    ``image``: uint8 (H, W, 3) RGB. ``depth``: float32 (H, W), inverse depth or metres per ``meta.kind``,
    0 where invalid. ``valid``: bool (H, W).
    """

    key: str
    image: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    meta: SampleMeta
