"""``shards.tensor_images`` on CPU tensors: its codecs read and write what PIL does, its header walk names what the
device decoder must not take, and its resampling is the CPU kernels' pixel for pixel (torch's uint8 antialiased
resize) or within one grey level (PIL's bilinear box resize)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from shards.tensor_images import (
    REFUSE_CMYK,
    REFUSE_INCOMPLETE,
    REFUSE_PROGRESSIVE,
    REFUSE_UNUSUAL,
    crop,
    decode_jpegs,
    decode_jpegs_each,
    device_refusal,
    encode_jpegs,
    jpeg_layout,
    resample_boxes,
    resize_antialiased,
)
from shards.tools.scenes import render_scene


def jpeg(image: np.ndarray | Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    picture.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def pil_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"))


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return render_scene(3, 683, 512).image  # sharp edges: where resamplers disagree first


def test_decoding_gives_pils_pixels_for_colour_and_grey(scene) -> None:
    colour, grey = jpeg(scene, quality=90), jpeg(Image.fromarray(scene).convert("L"), quality=90)
    decoded = decode_jpegs([colour, grey], "cpu")
    assert [tuple(picture.shape) for picture in decoded] == [(3, 512, 683)] * 2  # grey repeated into RGB
    for data, picture in zip((colour, grey), decoded):
        assert np.array_equal(picture.permute(1, 2, 0).numpy(), pil_rgb(data))


def test_encoding_reads_back_as_pils_encoding_at_the_same_quality(scene) -> None:
    crop_pixels = np.ascontiguousarray(scene[:384, :512])
    (ours,) = encode_jpegs(torch.from_numpy(crop_pixels).permute(2, 0, 1)[None], quality=95)
    theirs = jpeg(crop_pixels, quality=95)
    difference = np.abs(pil_rgb(ours).astype(int) - pil_rgb(theirs))
    assert difference.max() <= 1  # identical bytes with this libjpeg-turbo; another build may round an IDCT apart
    assert abs(len(ours) - len(theirs)) <= 0.01 * len(theirs)


def test_a_batch_with_a_broken_file_decodes_the_others(scene) -> None:
    good = jpeg(scene)
    broken = bytearray(good)
    table = good.find(b"\xff\xc4")  # a Huffman table with a bogus length
    broken[table + 5 : table + 21] = b"\x00" * 16
    with pytest.raises(RuntimeError):
        decode_jpegs([good, bytes(broken)], "cpu")
    decoded = decode_jpegs_each([good, bytes(broken), good], "cpu")
    assert decoded[1] is None and decoded[0] is not None and torch.equal(decoded[0], decoded[2])


def test_the_header_walk_routes_what_the_device_decoder_must_not_take(scene) -> None:
    baseline = jpeg(scene)
    layout = jpeg_layout(baseline)
    assert layout is not None and (layout.width, layout.height, layout.components) == (683, 512, 3)
    assert device_refusal(layout) is None
    assert device_refusal(jpeg_layout(jpeg(Image.fromarray(scene).convert("L")))) is None
    assert device_refusal(jpeg_layout(jpeg(scene, progressive=True))) == REFUSE_PROGRESSIVE
    assert device_refusal(jpeg_layout(jpeg(Image.fromarray(scene).convert("CMYK")))) == REFUSE_CMYK
    assert device_refusal(jpeg_layout(baseline[: len(baseline) // 2])) == REFUSE_INCOMPLETE
    scan = baseline.find(b"\xff\xda")
    remark = b"\xff\xfe\x00\x06\xff\xd9\x00\x00"  # a comment holding an end marker, before the scan: not the end
    cut_with_remark = baseline[:scan] + remark + baseline[scan : scan + 4000]
    assert device_refusal(jpeg_layout(cut_with_remark)) == REFUSE_INCOMPLETE
    assert device_refusal(jpeg_layout(baseline[:scan] + remark + baseline[scan:])) is None
    buffer = io.BytesIO()
    Image.fromarray(scene).save(buffer, format="PNG")
    assert jpeg_layout(buffer.getvalue()) is None and jpeg_layout(b"\xff\xd8garbage") is None
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # APP14, transform 0: RGB not YCbCr
    assert device_refusal(jpeg_layout(baseline[:2] + adobe_rgb + baseline[2:])) == REFUSE_UNUSUAL
    frame = baseline.find(b"\xff\xc0")
    arithmetic = baseline[:frame] + b"\xff\xc9" + baseline[frame + 2 :]  # the same frame, arithmetic-coded
    assert device_refusal(jpeg_layout(arithmetic)) == REFUSE_UNUSUAL


@pytest.mark.parametrize("kernel", ["bicubic", "bilinear"])
@pytest.mark.parametrize(
    ("source", "size"), [((683, 512), (384, 512)), ((500, 300), (384, 640)), ((512, 683), (683, 512)),
                         ((900, 320), (384, 1080))],
)
def test_resize_is_torchs_uint8_kernel_pixel_for_pixel(kernel, source, size) -> None:
    pictures = torch.stack([torch.from_numpy(render_scene(seed, *source).image).permute(2, 0, 1) for seed in (1, 2)])
    expected = F.interpolate(pictures, size, mode=kernel, antialias=True, align_corners=False)
    assert torch.equal(resize_antialiased(pictures, size, kernel), expected)


def test_a_one_pass_float_resize_is_what_it_replaces(scene) -> None:
    """Why the two passes: the float kernel (what a GPU runs) misses the uint8 one by several grey levels."""
    picture = torch.from_numpy(scene).permute(2, 0, 1)[None]
    expected = F.interpolate(picture, (384, 512), mode="bicubic", antialias=True).int()
    one_pass = F.interpolate(picture.float(), (384, 512), mode="bicubic", antialias=True).round().clamp(0, 255)
    assert (one_pass.int() - expected).abs().max() >= 3


def test_box_resample_is_pils_bilinear_resize_within_one_grey_level() -> None:
    rng = np.random.default_rng(1)
    pictures, boxes = [], []
    for seed in range(8):
        pictures.append(render_scene(seed, 512, 384).image)
        box_width = rng.uniform(60, 512)
        box_height = min(box_width * 0.75 * rng.uniform(0.8, 1.2), 384)
        left, top = rng.uniform(0, 512 - box_width), rng.uniform(0, 384 - box_height)
        boxes.append((left, top, left + box_width, top + box_height))
    boxes[-1] = (10.3, 0.0, 30.1, 10.7)  # enlarged: the filter at its narrowest
    expected = np.stack([np.asarray(Image.fromarray(picture).resize((256, 192), Image.BILINEAR, box=box))
                         for picture, box in zip(pictures, boxes)]).astype(int)
    batch = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)
    ours = resample_boxes(batch, torch.tensor(boxes), (256, 192)).permute(0, 2, 3, 1).numpy()
    difference = np.abs(ours.astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001


def test_crop_is_a_box_view_and_refuses_a_box_outside() -> None:
    picture = torch.arange(2 * 4 * 6).view(2, 4, 6)
    assert torch.equal(crop(picture, (1, 2, 4, 4)), picture[:, 2:4, 1:4])
    with pytest.raises(ValueError, match="outside"):
        crop(picture, (0, 0, 7, 4))
