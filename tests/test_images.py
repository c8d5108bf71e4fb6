"""One 16-bit-grey to 8-bit rule (``shards.images``) for every reader of pictures: the teacher's input, an RGB-D
frame and a picture to predict on give the same pixels for the same file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.deploy.runtime import load_picture
from pseudolabel.config import PreprocessConfig
from pseudolabel.preprocess import InputRejected, preprocess_image
from shards.images import sixteen_to_eight_bit
from shards.tools.rgbd import read_rgb

#: 16-bit value -> its 8-bit value: the ends, exact multiples of 257, and values either side of a half step
#: (1927 / 257 = 7.498 -> 7; 1928 / 257 = 7.502 -> 8, where flooring would give 7).
SIXTEEN_TO_EIGHT = {0: 0, 1: 0, 257 * 3: 3, 257 * 100: 100, 1927: 7, 1928: 8, 257 * 7 + 200: 8, 65534: 255, 65535: 255}


def _teacher_input(path: Path) -> np.ndarray:
    """The teacher's crop of the whole picture at its own size (no resampling)."""
    with Image.open(path) as picture:
        width, height = picture.size
    config = PreprocessConfig(width=width, height=height, min_short_side=1)
    return preprocess_image(path.read_bytes(), "picture", config).image


#: The three call paths that read a picture: pseudolabel's preprocessing, import-rgbd / evaluation, predict / export.
READERS: dict[str, Callable[[Path], np.ndarray]] = {
    "pseudolabel": _teacher_input,
    "rgbd_frame": read_rgb,
    "predict": load_picture,
}


def test_the_rule_divides_by_257_and_rounds_to_nearest() -> None:
    values = np.array(list(SIXTEEN_TO_EIGHT), dtype=np.uint16)
    assert sixteen_to_eight_bit(values).tolist() == list(SIXTEEN_TO_EIGHT.values())
    every = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(sixteen_to_eight_bit(every), np.rint(every / 257).astype(np.uint8))
    assert np.array_equal(sixteen_to_eight_bit(np.arange(256, dtype=np.uint16) * 257), np.arange(256))


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_gives_the_same_pixels_for_a_sixteen_bit_grey_png(reader: str, tmp_path: Path) -> None:
    values = np.array([list(SIXTEEN_TO_EIGHT)] * 2, dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")  # really read back as 16-bit grey
    rgb = READERS[reader](path)
    assert rgb.dtype == np.uint8 and rgb.shape == (*values.shape, 3)
    assert (rgb == rgb[..., :1]).all()  # grey stays grey
    assert rgb[0, :, 0].tolist() == list(SIXTEEN_TO_EIGHT.values())  # PIL's convert would give 0, 255, 255, ...


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_composites_alpha_onto_white(reader: str, tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque; the rest fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    rgb = READERS[reader](path)
    assert rgb[0, 0].tolist() == [200, 0, 0] and rgb[1, 1].tolist() == [255, 255, 255]


def test_a_float_picture_has_no_eight_bit_meaning(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(InputRejected, match="mode F"):
        _teacher_input(path)
    for reader in (read_rgb, load_picture):
        with pytest.raises(ValueError, match="mode F"):
            reader(path)
