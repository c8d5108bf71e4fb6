"""The shard contract, end to end: float depth -> sample -> shard -> reader gives the map back within 1/65535 of its
range and the image as its JPEG decodes; every label codec keeps 16 bits where a default 8-bit decode does not;
keys follow the key rule (docs/decisions.md)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from shards.format import (
    LABEL_CODECS,
    METRIC_DEPTH,
    MIN_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    LabelError,
    SampleMeta,
    check_key,
    decode_jpeg,
    decode_label,
    decode_label_codes,
    encode_label_codes,
    encode_sample,
    inverse_depth,
    key_from_relative_path,
)
from shards.reader import build_pipeline
from tests.shards.conftest import full_size_label, write_shard


def _teacher_like_label(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Relative inverse depth with exact zeros (a ReLU head), from a scene's metric depth."""
    inverse = inverse_depth(depth, valid).astype(np.float32)
    return np.maximum(inverse * 7.3 - 0.4, 0.0).astype(np.float32)


@pytest.mark.parametrize("codec", sorted(LABEL_CODECS))
@pytest.mark.parametrize("kind", [METRIC_DEPTH, RELATIVE_INVERSE_DEPTH])
def test_round_trip_through_a_shard_and_the_reader(tmp_path, codec, kind):
    image, depth, valid = full_size_label(seed=3)
    label = depth if kind == METRIC_DEPTH else _teacher_like_label(depth, valid)
    meta = SampleMeta(source="scenes/3.png", kind=kind, teacher=None if kind == METRIC_DEPTH else "tiny/teacher")
    members = encode_sample("scenes/3", image, label, meta, valid=valid, codec=codec)
    assert set(members) == {"__key__", "jpg", "json", codec}
    write_shard(tmp_path, 0, [members])

    (sample,) = list(build_pipeline(str(tmp_path), training=False))
    assert sample.key == "scenes/3" and sample.meta.kind == kind and sample.meta.depth_codec == codec
    np.testing.assert_array_equal(sample.valid, valid)
    low, high = sample.meta.label_range
    assert (low, high) == (float(label[valid].min()), float(label[valid].max()))
    assert np.abs(sample.depth - label)[valid].max() <= (high - low) / 65535
    assert np.all(sample.depth[~valid] == 0.0) and sample.depth.dtype == np.float32
    with Image.open(io.BytesIO(members["jpg"])) as jpeg:  # the same pixels as a direct JPEG decode
        np.testing.assert_array_equal(sample.image, np.asarray(jpeg.convert("RGB")))
    assert np.abs(sample.image.astype(int) - image).mean() < 3  # and close to the original (q95)


def test_default_8_bit_decoders_destroy_the_label_ours_keeps_16_bits():
    image, depth, valid = full_size_label(seed=4)
    members = encode_sample("k", image, depth, SampleMeta("k", METRIC_DEPTH), valid=valid, codec="depth16.png")
    codes, _ = encode_label_codes(depth, valid)
    assert len(np.unique(codes)) > 10_000
    # A default decode: PIL convert("L") and WebDataset's "pil" / "l8" image handlers clip to 8 bits.
    with Image.open(io.BytesIO(members["depth16.png"])) as picture:
        clipped = np.asarray(picture.convert("L"))
    assert len(np.unique(clipped)) <= 256 and np.mean(clipped[valid] == 255) > 0.9  # codes >= 255 all read 255
    for handler in ("pil", "l8"):
        decoded = wds.autodecode.Decoder([wds.autodecode.imagehandler(handler)])(dict(members))["depth16.png"]
        assert np.asarray(decoded).dtype == np.uint8 and len(np.unique(np.asarray(decoded))) <= 256
    # Ours keeps every code.
    back, back_valid, _ = decode_label(members)
    low, high = float(depth[valid].min()), float(depth[valid].max())
    assert np.abs(back - depth)[valid].max() <= (high - low) / 65535
    np.testing.assert_array_equal(back_valid, valid)
    # And the code refuses an 8-bit array outright rather than decoding nonsense.
    with pytest.raises(ValueError, match="8-bit"):
        decode_label_codes(clipped, (low, high))


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_inverse_depth_has_one_floor_and_zeroes_invalid_pixels(as_tensor):
    import torch

    depth = np.array([2.0, 0.5, 1e-3, 1e-4, 0.0, np.nan], dtype=np.float32)
    valid = np.array([True, True, True, True, False, False])
    expected_all = [0.5, 2.0, 1000.0, 1000.0, 1000.0]  # at or below MIN_DEPTH (1 mm) counts as 1 mm
    wrap = torch.from_numpy if as_tensor else np.asarray
    plain = np.asarray(inverse_depth(wrap(depth)))
    np.testing.assert_allclose(plain[:5], expected_all, rtol=1e-6)
    assert MIN_DEPTH == 1e-3 and np.isnan(plain[5])  # no mask: NaN stays NaN, never a made-up depth
    masked = np.asarray(inverse_depth(wrap(depth), wrap(valid)))
    np.testing.assert_allclose(masked, [0.5, 2.0, 1000.0, 1000.0, 0.0, 0.0], rtol=1e-6)
    assert masked.dtype == np.float32


def test_label_code_edges():
    values = np.array([[0.0, 1.0], [np.nan, 3.0]], dtype=np.float32)
    codes, label_range = encode_label_codes(values, np.array([[True, True], [True, False]]))
    assert label_range == (0.0, 1.0)
    np.testing.assert_array_equal(codes, [[1, 65535], [0, 0]])  # NaN and masked -> invalid code 0
    with pytest.raises(LabelError) as constant:
        encode_label_codes(np.ones((4, 4)))
    assert constant.value.reason == "constant_label"
    with pytest.raises(LabelError) as empty:
        encode_label_codes(np.full((4, 4), np.nan))
    assert empty.value.reason == "no_valid_pixels"


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("a/airfield/00000001.jpg", "a/airfield/00000001"),
        ("x.jpg", "x"),
        ("photo.v2.final.png", "photo_v2_final"),  # other dots in the file name -> _
        ("2019.07.holiday/img.jpeg", "2019.07.holiday/img"),  # dots in folder names are harmless
        ("./a/b.png", "a/b"),
        ("a\\b\\c.jpg", "a/b/c"),
        ("noext", "noext"),
    ],
)
def test_key_from_relative_path(path, key):
    assert key_from_relative_path(path) == key
    assert check_key(key) == key


@pytest.mark.parametrize("bad", ["a/b.c", "/abs/x", "a/../b", ""])
def test_check_key_refuses_keys_webdataset_would_split_or_that_escape(bad):
    with pytest.raises(ValueError):
        check_key(bad)


def test_webdataset_splits_keys_as_we_assume(tmp_path):
    """A key with dots in folders comes back whole from WebDataset's own tar reader."""
    image, depth, valid = full_size_label(seed=5)
    key = key_from_relative_path("v1.2/set.a/img.001.jpg")
    write_shard(tmp_path, 0, [encode_sample(key, image, depth, SampleMeta(key, METRIC_DEPTH), valid=valid)])
    (raw,) = list(wds.DataPipeline(wds.SimpleShardList([str(next(tmp_path.glob("*.tar")))]), wds.tarfile_to_samples()))
    assert raw["__key__"] == "v1.2/set.a/img_001"
    assert decode_jpeg(raw["jpg"]).shape == (384, 512, 3)
