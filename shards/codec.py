"""Bytes for one sample: the JPEG image, the 16-bit label under a named codec, and the json record.

One table, ``LABEL_CODECS``, maps a member extension to its encoder and decoder, so the extension in the
shard names the codec and the reader never guesses. The default was chosen by measurement
(``benchmarks/label_codecs.py``, figures in BENCHMARKS.md).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import zstandard
from PIL import Image

from shards.format import (
    JPEG_QUALITY,
    DepthSample,
    SampleMeta,
    check_key,
    decode_label_codes,
    encode_label_codes,
)

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


def find_label_member(raw: dict) -> str:
    """The label's member extension in a raw sample; exactly one must be present."""
    found = [name for name in raw if name in LABEL_CODECS]
    if len(found) != 1:
        members = sorted(k for k in raw if not k.startswith("__"))
        raise ValueError(f"sample {raw.get('__key__')!r} holds {len(found)} label members (members: {members})")
    return found[0]


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
    codec: str = DEFAULT_LABEL_CODEC,
) -> dict[str, bytes | str]:
    """One sample's WebDataset members from an encoded JPEG and label codes already computed (the pseudo-labeller
    makes the JPEG in a DataLoader worker and the codes beside the teacher). Fills the meta's label fields."""
    check_key(key)
    if codes.dtype != np.uint16 or codes.ndim != 2:
        raise ValueError(f"label codes are uint16 (H, W), got {codes.dtype} {codes.shape} for {key!r}")
    label = label_codec(codec)
    meta.label_range = (float(label_range[0]), float(label_range[1]))
    meta.depth_codec = label.extension
    meta.size = (int(codes.shape[1]), int(codes.shape[0]))
    return {"__key__": key, "jpg": jpg, label.extension: label.encode(codes), "json": meta.to_json()}


def encode_sample(
    key: str,
    image: np.ndarray,
    depth: np.ndarray,
    meta: SampleMeta,
    valid: np.ndarray | None = None,
    codec: str = DEFAULT_LABEL_CODEC,
) -> dict[str, bytes | str]:
    """One sample as WebDataset members. Raises ``LabelError`` for labels that cannot be stored."""
    check_key(key)
    if image.shape[:2] != depth.shape:
        raise ValueError(f"image {image.shape[:2]} and label {depth.shape} differ in size for {key!r}")
    codes, label_range = encode_label_codes(depth, valid)
    return sample_members(key, encode_jpeg(image, meta.jpeg_quality), codes, label_range, meta, codec)


def decode_label(raw: dict) -> tuple[np.ndarray, np.ndarray, SampleMeta]:
    """Raw members -> (float32 label, bool valid mask, metadata), without touching the image."""
    meta = SampleMeta.from_json(raw["json"])
    extension = find_label_member(raw)
    codes = label_codec(extension).decode(raw[extension])
    expected = (meta.size[1], meta.size[0])
    if codes.shape != expected:
        raise ValueError(f"label of {raw.get('__key__')!r} is {codes.shape}, its json says {expected}")
    depth, valid = decode_label_codes(codes, meta.label_range)
    return depth, valid, meta


def decode_sample(raw: dict) -> DepthSample:
    """Raw WebDataset members -> :class:`DepthSample`. Raises on any inconsistency; the reader's handler counts it."""
    depth, valid, meta = decode_label(raw)
    image = decode_jpeg(raw["jpg"])
    if image.shape[:2] != depth.shape:
        raise ValueError(f"image {image.shape[:2]} and label {depth.shape} differ for {raw.get('__key__')!r}")
    return DepthSample(key=raw["__key__"], image=image, depth=depth, valid=valid, meta=meta)
