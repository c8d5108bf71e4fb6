"""``runtime.decode_device`` end to end, in-process: the device path (``model``: on the teacher's device, here the
CPU) writes the shards today's path (``cpu``) writes, routes the odd files to today's path with their reasons
counted, resumes a folder today's path wrote, and a batch that does not fit says which key to lower."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.pseudolabel.conftest import encode, gradient_rgb, salted_bytes
from tests.pseudolabel.test_run import label, read_samples, small


def inputs_folder(root):
    """Baseline JPEGs the device takes (colour and grey), the salted folder's odd files, a progressive JPEG and one
    big enough for today's path to decode at a reduced scale."""
    folder = root / "inputs"
    folder.mkdir()
    for index in range(6):
        picture = Image.fromarray(gradient_rgb(160, 120, seed=10 + index))
        (folder / f"scene{index}.jpg").write_bytes(encode(picture.convert("L") if index == 5 else picture, "JPEG",
                                                          quality=90))
    for name, data in salted_bytes().items():
        (folder / f"salted_{name}.{'png' if 'png' in name or name == 'one_pixel' else 'jpg'}").write_bytes(data)
    (folder / "progressive.jpg").write_bytes(encode(Image.fromarray(gradient_rgb(seed=7)), "JPEG", progressive=True))
    (folder / "big.jpg").write_bytes(encode(Image.fromarray(gradient_rgb(700, 500, seed=8)), "JPEG", quality=90))
    return folder


def test_the_device_path_writes_todays_shards(tmp_path) -> None:
    folder = inputs_folder(tmp_path)
    assert label(folder, "identity", tmp_path / "today", *small("--runtime.decode_device", "cpu")) == 0
    assert label(folder, "identity", tmp_path / "device", *small("--runtime.decode_device", "model",
                                                                  "--runtime.num_workers", "2")) == 0
    today, device = read_samples(tmp_path / "today"), read_samples(tmp_path / "device")
    assert sorted(today) == sorted(device) and len(today) >= 10
    for key, sample in today.items():
        assert np.array_equal(device[key].image, sample.image), key  # the stored JPEGs read back alike
        assert np.array_equal(device[key].depth, sample.depth) and device[key].meta == sample.meta, key
    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("today", "device")]
    assert summaries[0]["rejected_by_reason"] == summaries[1]["rejected_by_reason"]
    assert summaries[0]["this_run"]["decode"] == {"device": ["cpu"], "decoded_on_device": 0, "fallbacks": {}}
    decode = summaries[1]["this_run"]["decode"]
    assert decode["decoded_on_device"] == 6 + 1  # the scenes and the salted folder's good JPEG
    assert decode["fallbacks"] == {"cmyk": 1, "exif_orientation": 1, "incomplete": 1, "jpeg_draft": 1,
                                   "not_jpeg": 4, "progressive": 1}  # 4 PNGs; the 1-pixel one is too small first


def test_a_folder_labelled_by_todays_path_resumes_on_the_device_path(tmp_path) -> None:
    folder = inputs_folder(tmp_path)
    out = tmp_path / "out"
    options = small("--output.samples_per_shard", "4")
    assert label(folder, "identity", out, *options, "--runtime.decode_device", "cpu") == 0
    manifest = (out / "manifest.json").read_bytes()
    assert b"decode_device" not in manifest
    shards = sorted(out.glob("*.tar"))
    first_keys = sorted(sample for sample in read_samples(out))
    shards[-1].with_name(shards[-1].name.replace(".tar", ".stats.json")).unlink()  # unfinished: scenes 3-5
    assert label(folder, "identity", out, *options, "--runtime.decode_device", "model") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["this_run"]["jobs"] == 1
    assert summary["this_run"]["decode"]["decoded_on_device"] > 0
    assert (out / "manifest.json").read_bytes() == manifest
    assert sorted(read_samples(out)) == first_keys


def test_a_batch_that_does_not_fit_names_the_batch_size_key(tmp_path, monkeypatch, capsys) -> None:
    import pseudolabel.run

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(pseudolabel.run, "teacher_batch", out_of_memory)
    folder = inputs_folder(tmp_path)
    assert label(folder, "identity", tmp_path / "out", *small("--runtime.decode_device", "model")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "lower runtime.batch_size (now" in error[0], error


@pytest.mark.parametrize("value", ["gpu", "CPU"])
def test_an_unknown_decode_device_is_refused_by_name(tmp_path, capsys, value) -> None:
    assert label(tmp_path, "identity", tmp_path / "out", "--runtime.decode_device", value) == 2
    assert "decode_device" in capsys.readouterr().err
