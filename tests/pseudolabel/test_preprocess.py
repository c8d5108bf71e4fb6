"""Preprocessing: the scale and crop rule, odd image modes, EXIF, and named rejects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pseudolabel.config import PreprocessConfig
from pseudolabel.preprocess import InputRejected, choose_crop_box, preprocess_image, scaled_size
from shards.images import to_rgb
from tests.pseudolabel.conftest import SALTED, encode, exif_rotated_jpeg, gradient_rgb, salted_bytes


@pytest.mark.parametrize(
    ("source", "scale", "scaled"),
    [
        ((640, 480), 0.8, (512, 384)),
        ((512, 512), 1.0, (512, 512)),  # not squashed to 384x384: max of the two ratios
        ((1242, 375), 384 / 375, (1272, 384)),  # a street frame is upscaled, not dropped
        ((4000, 3000), 0.128, (512, 384)),
        ((300, 1000), 512 / 300, (512, 1707)),
    ],
)
def test_scale_is_the_max_ratio_and_covers_the_crop(source, scale, scaled):
    got_scale, got_scaled = scaled_size(source, 512, 384)
    assert got_scale == pytest.approx(scale)
    assert got_scaled == scaled


@pytest.mark.parametrize("size", [(1242, 375), (683, 512), (300, 200)])
def test_crop_is_pil_bicubic_resize_then_crop(size):
    """torch's antialiased uint8 bicubic stands in for PIL's (ten times faster): the same pixels within 2 levels."""
    image = gradient_rgb(*size, seed=1)
    crop = preprocess_image(encode(Image.fromarray(image), "PNG"), "k", PreprocessConfig(jpeg_draft=False))
    _, scaled = scaled_size(size, 512, 384)
    whole = np.asarray(Image.fromarray(image).resize(scaled, Image.Resampling.BICUBIC))
    left, top, right, bottom = crop.crop_box
    assert (right - left, bottom - top) == (512, 384)
    assert (left, top) == ((scaled[0] - 512) // 2, (scaled[1] - 384) // 2)
    difference = np.abs(whole[top:bottom, left:right].astype(int) - crop.image.astype(int))
    assert difference.max() <= 2 and (difference > 0).mean() < 0.01


def test_random_crop_is_drawn_per_key_and_reproducible():
    boxes = {key: choose_crop_box((900, 384), 512, 384, "random", seed=7, key=key) for key in ("a", "b", "c", "d")}
    assert boxes == {key: choose_crop_box((900, 384), 512, 384, "random", seed=7, key=key) for key in boxes}
    assert len({box[0] for box in boxes.values()}) > 1
    assert all(0 <= box[0] <= 900 - 512 and box[1] == 0 for box in boxes.values())
    config = PreprocessConfig(crop="random", crop_seed=7, jpeg_draft=False)
    crop = preprocess_image(encode(Image.fromarray(gradient_rgb(900, 384)), "PNG"), "b", config)
    assert crop.crop_box == boxes["b"]
    assert crop.extra["crop"] == "random"


def test_exif_orientation_is_applied_first():
    crop = preprocess_image(exif_rotated_jpeg(160, 120), "r", PreprocessConfig(width=96, height=128))
    assert crop.source_size == (120, 160)  # displayed upright: portrait
    assert crop.image.shape == (128, 96, 3)
    assert crop.extra["exif_orientation"] == 6


def test_sixteen_bit_grey_is_divided_by_257_not_clipped():
    values = np.array([[0, 257 * 100, 65535, 257 * 3]], dtype=np.uint16)
    image = Image.open(io.BytesIO(encode(Image.fromarray(values), "PNG")))
    image.load()
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 100, 255, 3]  # PIL's convert("L") would give 0, 255, 255, 255


def test_alpha_is_composited_onto_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red-ish; the rest fully transparent -> white
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert rgb[1, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "1", "YCbCr"])
def test_every_common_mode_becomes_rgb(mode):
    image = Image.fromarray(gradient_rgb(64, 48)).convert(mode)
    assert to_rgb(image).mode == "RGB"


@pytest.mark.parametrize("name", sorted(SALTED))
def test_salted_inputs_are_labeled_or_rejected_by_name(name):
    data = salted_bytes()[name]
    expected = SALTED[name][1]
    config = PreprocessConfig(width=128, height=96)
    if expected in (None, "duplicate_key"):  # a duplicate is only a duplicate in a list
        crop = preprocess_image(data, name, config)
        assert crop.image.shape == (96, 128, 3) and crop.image.dtype == np.uint8
        assert crop.image.std() > 1  # not a blank conversion
    else:
        with pytest.raises(InputRejected) as rejected:
            preprocess_image(data, name, config)
        assert rejected.value.reason == expected


def test_too_large_and_min_short_side_are_configurable():
    data = encode(Image.fromarray(gradient_rgb(200, 40)), "PNG")
    with pytest.raises(InputRejected, match="shorter side below 50"):
        preprocess_image(data, "k", PreprocessConfig(min_short_side=50))
    assert preprocess_image(data, "k", PreprocessConfig(min_short_side=32)).image.shape == (384, 512, 3)
    with pytest.raises(InputRejected) as rejected:
        preprocess_image(data, "k", PreprocessConfig(max_pixels=7999))
    assert rejected.value.reason == "too_large"


def test_jpeg_draft_decodes_big_jpegs_reduced_but_close():
    data = encode(Image.fromarray(gradient_rgb(2048, 1536, seed=2)), "JPEG", quality=95)
    drafted = preprocess_image(data, "k", PreprocessConfig(jpeg_draft=True))
    full = preprocess_image(data, "k", PreprocessConfig(jpeg_draft=False))
    assert drafted.extra["jpeg_draft_size"] == [512, 384]  # 1/4 still covers 512x384
    assert (drafted.scale, drafted.crop_box, drafted.source_size) == (full.scale, full.crop_box, full.source_size)
    assert np.abs(drafted.image.astype(int) - full.image.astype(int)).mean() < 3
