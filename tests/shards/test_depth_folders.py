"""RGB + 16-bit depth with a given scale: the one depth reader, pair lists (KITTI's trees, TUM's associated frames),
scale presets, and the errors that name the file and the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.format import METRIC_DEPTH
from shards.reader import build_pipeline
from shards.tools.commands import main
from shards.tools.nyu import NyuFormatError
from shards.tools.rgbd import DEPTH_SCALES, crop_nearest, parse_depth_scale, plan_crop, read_depth, read_pair_list
from shards.tools.scenes import render_scene
from shards.tools.verify import verify_shards
from tests.shards.conftest import KITTI_SIZES, write_kitti_pairs


@pytest.fixture(scope="module")
def kitti(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three frames in KITTI's raw and annotated trees, two frame sizes, with a relative pair list."""
    return write_kitti_pairs(tmp_path_factory.mktemp("kitti"))


def _import_pairs(pairs: Path, out: Path, scale: str, *extra: str) -> int:
    return main(["import-rgbd", "--pairs", str(pairs), "--depth_scale", scale, "--out", str(out), *extra])


def _read_all(folder: Path) -> dict:
    return {sample.key: sample for sample in build_pipeline(str(folder), training=False, split=False)}


# ------------------------------------------------------------------------------------------------ the one reader


def test_read_depth_by_file_type(tmp_path: Path) -> None:
    metres = np.array([[0.0, 1.5], [80.0, np.nan]], np.float32)
    codes = np.array([[0, 384], [20480, 0]], np.uint16)  # KITTI: metres * 256
    Image.fromarray(codes).save(tmp_path / "kitti.png")
    np.save(tmp_path / "diode.npy", metres[..., None])  # (H, W, 1) as DIODE stores it
    Image.fromarray(np.where(np.isnan(metres), -1, metres)).save(tmp_path / "float.tif")
    expected = np.array([[0.0, 1.5], [80.0, 0.0]], np.float32)  # NaN and negative are invalid: 0
    np.testing.assert_array_equal(read_depth(tmp_path / "kitti.png", DEPTH_SCALES["kitti"]), expected)
    np.testing.assert_array_equal(read_depth(tmp_path / "diode.npy", None), expected)
    np.testing.assert_array_equal(read_depth(tmp_path / "float.tif", None), expected)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: Image.fromarray(np.ones((4, 4), np.uint8)).save(p / "d.png"), "mode 'L', not 16-bit or float"),
        (lambda p: np.save(p / "d.npy", np.ones((4, 4), np.uint16)), "integer depth (uint16) needs a depth scale"),
        (lambda p: np.save(p / "d.npy", np.ones((4, 4, 3), np.float32)), "one channel, (H, W) or (H, W, 1)"),
    ],
)
def test_read_depth_refuses_what_cannot_be_depth(tmp_path: Path, write, message: str) -> None:
    write(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(NyuFormatError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        read_depth(path, None)
    assert str(path) in str(error.value)


def test_depth_scale_presets() -> None:
    assert [parse_depth_scale(name) for name in ("kitti", "TUM", "arkitscenes", "mm", "2.5")] == [
        256.0, 5000.0, 1000.0, 1000.0, 2.5,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="neither a number of units per metre nor one of"):
        parse_depth_scale("kiti")


# ------------------------------------------------------------------------------------------------- pair lists


def test_kitti_pair_list_round_trip(kitti, tmp_path: Path, capsys) -> None:
    pairs, truth = kitti
    assert _import_pairs(pairs, tmp_path, "kitti") == 0
    assert "wrote 3 samples in 1 shards; rejected 0" in capsys.readouterr().out
    report = verify_shards(str(tmp_path))
    assert report.ok, report.summary()
    assert report.kinds == {METRIC_DEPTH: 3}
    samples = _read_all(tmp_path)
    assert sorted(samples) == sorted(name.removesuffix(".png") for name in truth)
    sizes = set()
    for name, depth in truth.items():
        sample = samples[name.removesuffix(".png")]
        assert sample.meta.source == name and sample.meta.depth_scale == 256.0
        sizes.add(sample.meta.source_size)
        expected = crop_nearest(depth, plan_crop(sample.meta.source_size))
        np.testing.assert_array_equal(sample.valid, expected > 0)  # lidar's sparse zeros stay invalid
        low, high = sample.meta.label_range
        assert np.abs(sample.depth - expected)[sample.valid].max() <= (high - low) / 65535 + 1e-5
    assert sizes == set(KITTI_SIZES)
    stats = json.loads((tmp_path / "rgbd-000-000000.stats.json").read_text())
    assert stats["depth_scale"] == 256.0 and stats["source"] == str(pairs)


def test_tum_list_with_absolute_paths_comments_and_scale_5000(tmp_path: Path) -> None:
    """TUM RGB-D: depth PNGs at 5000 units per metre, paired by timestamp (associate.py), listed with absolute
    paths, comments and blank lines."""
    scene = render_scene(7, 160, 120, holes=True)
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(scene.image).save(tmp_path / "rgb" / "1305031102.175304.png")
    codes = np.where(scene.valid, np.rint(scene.depth * 5000), 0).astype(np.uint16)  # 10 m -> 50000 fits 16 bits
    Image.fromarray(codes).save(tmp_path / "depth" / "1305031102.160407.png")
    listing = tmp_path / "lists" / "pairs.txt"
    listing.parent.mkdir()
    listing.write_text(
        f"# associated by timestamp\n\n{tmp_path}/rgb/1305031102.175304.png {tmp_path}/depth/1305031102.160407.png"
        "  # 15 ms apart\n"
    )
    assert _import_pairs(listing, tmp_path / "out", "tum") == 0
    (sample,) = _read_all(tmp_path / "out").values()
    assert sample.key == f"{str(tmp_path).lstrip('/')}/rgb/1305031102_175304"  # outside the list's folder
    expected = crop_nearest(codes / 5000.0, plan_crop((160, 120)))
    np.testing.assert_array_equal(sample.valid, expected > 0)
    np.testing.assert_allclose(sample.depth[sample.valid], expected[sample.valid], atol=2e-4)


def test_kitti_read_with_scale_1_stops_naming_the_unit_problem(kitti, tmp_path: Path, capsys) -> None:
    pairs, _ = kitti
    assert _import_pairs(pairs, tmp_path, "1") == 2
    out = capsys.readouterr().err
    assert "first 3 frame(s) checked all have implausible depth" in out
    assert "annotated/val/2011_09_26_drive_0003_sync/proj_depth/groundtruth/image_02/0000000002.png: depth" in out
    assert "looks like millimetres or unscaled integer codes" in out and "KITTI 256" in out
    assert not list(tmp_path.glob("*.tar"))


def test_millimetres_stored_as_float_metres_stop(tmp_path: Path, capsys) -> None:
    scene = render_scene(3, 64, 48)
    Image.fromarray(scene.image).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", scene.depth * 1000)
    (tmp_path / "pairs.txt").write_text("a.png a.npy\n")
    assert _import_pairs(tmp_path / "pairs.txt", tmp_path / "out", "1") == 2
    out = capsys.readouterr().err
    assert f"{tmp_path / 'a.npy'}: depth median" in out and "looks like millimetres" in out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("raw/only_one.png", "pairs.txt:2: expected 'image_path depth_path', got 1 field(s)"),
        ("1.0 rgb/a.png 1.1 depth/a.png", "got 4 field(s)"),
        ("a.png missing.png", "pairs.txt:2: "),
    ],
)
def test_a_malformed_list_stops_naming_line_and_file(tmp_path: Path, capsys, line: str, message: str) -> None:
    scene = render_scene(3, 64, 48)
    Image.fromarray(scene.image).save(tmp_path / "a.png")
    Image.fromarray(np.rint(scene.depth * 1000).astype(np.uint16)).save(tmp_path / "d.png")
    (tmp_path / "pairs.txt").write_text(f"a.png d.png\n{line}\n")
    assert _import_pairs(tmp_path / "pairs.txt", tmp_path / "out", "mm") == 2
    out = capsys.readouterr().err
    assert message in out
    if "missing" in line:
        assert f"{tmp_path / 'missing.png'}" in out and "do not exist" in out
    if "4 field" in message:
        assert "associate.py" in out


def test_an_unreadable_or_repeated_pair_is_a_counted_reject(kitti, tmp_path: Path) -> None:
    pairs, truth = kitti
    root = tmp_path / "kitti"
    shutil.copytree(pairs.parent, root)
    lines = (root / pairs.name).read_text().splitlines()
    first_depth = root / lines[1].split()[1]
    first_depth.write_bytes(b"\x89PNG broken")
    (root / pairs.name).write_text("\n".join([*lines, lines[2]]) + "\n")  # the second pair listed twice
    assert _import_pairs(root / pairs.name, tmp_path / "out", "kitti") == 0
    stats = json.loads((tmp_path / "out" / "rgbd-000-000000.stats.json").read_text())
    names = list(truth)
    assert stats["count"] == 2 and stats["rejects"] == {"unreadable": [names[0]], "duplicate_key": [names[1]]}


def test_pair_list_needs_a_depth_scale(kitti, tmp_path: Path, capsys) -> None:
    assert main(["import-rgbd", "--pairs", str(kitti[0]), "--out", str(tmp_path)]) == 2
    assert "--pairs needs --depth_scale" in capsys.readouterr().err
    assert main(["import-rgbd", "--pairs", str(kitti[0]), "--depth_scale", "kiti", "--out", str(tmp_path)]) == 2


def test_read_pair_list_resolves_relative_to_its_folder(kitti) -> None:
    pairs, truth = kitti
    listed = read_pair_list(pairs)
    assert [pair.name for pair in listed] == list(truth) and [pair.line for pair in listed] == [2, 3, 4]
    assert all(pair.image.is_absolute() and pair.depth.is_file() for pair in listed)
