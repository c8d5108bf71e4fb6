"""DIODE as released: ``import-rgbd --diode`` writes verified metric shards with the mask applied, and a tree that
is wrong as a whole stops with the file and the problem named, while a bad frame is a counted reject."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.format import METRIC_DEPTH
from shards.reader import build_pipeline
from shards.tools.commands import main
from shards.tools.nyu import NyuFormatError
from shards.tools.rgbd import DiodeSplit, crop_nearest, find_diode_scans, is_diode_tree, plan_crop, read_diode_scan
from shards.tools.verify import verify_shards
from tests.shards.conftest import DIODE_SIZE, write_diode_tree

SMALL = (64, 48)  # frames for the malformed cases: the layout is what matters there


@pytest.fixture(scope="module")
def diode_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """val/: one indoor and one outdoor frame at the released 1024x768, depth (768, 1024, 1) with its mask."""
    root = tmp_path_factory.mktemp("diode")
    return root, write_diode_tree(root, [("indoors", 3), ("outdoor", 4)])


def _import(root: Path, out: Path, *extra: str) -> int:
    return main(["import-rgbd", "--diode", str(root), "--split", "val", "--out", str(out), *extra])


def _read_all(folder: Path) -> dict:
    return {sample.key: sample for sample in build_pipeline(str(folder), training=False, split=False)}


def test_released_layout_is_written_as_released(diode_root) -> None:
    root, truth = diode_root
    (scan,) = [s for s in find_diode_scans(root, "val", ("indoors",))]
    assert scan.relative == "val/indoors/scene_00003/scan_00103/00003_00103_indoors_000_003.png"
    assert np.load(scan.depth).shape == (768, 1024, 1) and np.load(scan.mask).shape == (768, 1024)
    assert np.load(scan.mask).dtype == np.float32 and is_diode_tree(root) and is_diode_tree(root / "val")


def test_import_round_trip_keeps_the_mask(diode_root, tmp_path: Path, capsys) -> None:
    root, truth = diode_root
    assert _import(root, tmp_path / "out") == 0
    assert "wrote 2 samples in 1 shards; rejected 0" in capsys.readouterr().out
    report = verify_shards(str(tmp_path / "out"))
    assert report.ok, report.summary()
    assert report.kinds == {METRIC_DEPTH: 2} and (tmp_path / "out" / "diodeval-000-000000.tar").exists()
    samples = _read_all(tmp_path / "out")
    assert sorted(samples) == sorted(truth)
    for key, depth in truth.items():
        sample = samples[key]
        assert sample.meta.source == key.removeprefix("diode/") + ".png" and sample.meta.source_size == DIODE_SIZE
        assert sample.meta.extra["diode_scene"] in key and sample.meta.depth_scale is None
        assert sample.meta.eval_split == "diode_val"  # the validation split marks itself: training refuses it
        expected = crop_nearest(depth, plan_crop(DIODE_SIZE))  # 1024x768 -> exactly 512x384, nearest
        np.testing.assert_array_equal(sample.valid, expected > 0)  # mask-0 pixels (holding 4.5 / 30 m) stay invalid
        low, high = sample.meta.label_range
        assert np.abs(sample.depth - expected)[sample.valid].max() <= (high - low) / 65535 + 1e-6


def test_one_scene_type_and_its_prefix(diode_root, tmp_path: Path) -> None:
    root, truth = diode_root
    assert _import(root, tmp_path, "--diode_scene", "outdoor") == 0
    assert list(_read_all(tmp_path)) == [key for key in truth if "/outdoor/" in key]
    assert (tmp_path / "diodevaloutdoor-000-000000.tar").exists()


def test_depth_as_h_w_is_read_like_h_w_1(tmp_path: Path) -> None:
    write_diode_tree(tmp_path, [("indoors", 1)], size=SMALL)
    (scan,) = find_diode_scans(tmp_path, "val", ("indoors",))
    first = read_diode_scan(scan)
    np.save(scan.depth, np.load(scan.depth)[..., 0])  # (H, W): accepted too
    second = read_diode_scan(scan)
    np.testing.assert_array_equal(first.depth, second.depth)
    assert (first.depth[np.load(scan.mask) == 0] == 0).all()


def test_evaluation_source_reads_the_same_frames(diode_root) -> None:
    """The evaluation's source shares the reader; outdoor depth beyond NYU's indoor 20 m passes its unit check."""
    root, truth = diode_root
    source = DiodeSplit(root, "val", ("indoors", "outdoor"))
    assert len(source) == 2 and source.describe()["scenes"] == ["indoors", "outdoor"]
    for position, (key, depth) in enumerate(sorted(truth.items())):
        frame = source[position]
        assert frame.name == key and frame.index == position
        np.testing.assert_array_equal(frame.depth, depth)


# ------------------------------------------------------------------------------------------- a tree that is wrong


def _small_tree(root: Path) -> list:
    write_diode_tree(root, [("indoors", 1), ("indoors", 2), ("outdoor", 3)], size=SMALL)
    return find_diode_scans(root, "val")


def _break_missing_mask(root: Path, scans: list) -> str:
    scans[1].mask.unlink()
    return f"{scans[1].image}: its validity mask {scans[1].mask.name} is missing"


def _break_missing_depth(root: Path, scans: list) -> str:
    scans[0].depth.unlink()
    return f"{scans[0].image}: its depth {scans[0].depth.name} is missing"


def _break_orphan(root: Path, scans: list) -> str:
    scans[2].image.unlink()
    return "has no image beside it (2 such file(s))"


def _break_layout(root: Path, scans: list) -> str:
    shutil.copy(scans[0].image, root / "val" / "indoors" / "stray.png")
    return f"{root / 'val' / 'indoors' / 'stray.png'} is outside DIODE's layout"


def _break_scene_folder(root: Path, scans: list) -> str:
    shutil.rmtree(root / "val" / "outdoor")
    return "outdoor is missing"


def _break_no_frames(root: Path, scans: list) -> str:
    for scan in scans:
        for path in (scan.image, scan.depth, scan.mask):
            path.unlink()
    return "no DIODE frames"


@pytest.mark.parametrize(
    "breaks",
    [_break_missing_mask, _break_missing_depth, _break_orphan, _break_layout, _break_scene_folder, _break_no_frames],
)
def test_a_broken_tree_stops_before_writing(tmp_path: Path, capsys, breaks) -> None:
    root = tmp_path / "diode"
    message = breaks(root, _small_tree(root))
    assert _import(root, tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*"))


def test_a_missing_split_and_a_non_diode_folder_are_named(tmp_path: Path, capsys) -> None:
    _small_tree(tmp_path)
    assert main(["import-rgbd", "--diode", str(tmp_path), "--split", "train", "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path} is not a DIODE root: it has no train/ folder" in capsys.readouterr().err
    with pytest.raises(NyuFormatError, match="not a DIODE root"):
        DiodeSplit(tmp_path / "val" / "indoors", "val")


# --------------------------------------------------------------------------------------------- a frame that is bad


def test_bad_frames_are_counted_rejects_named_in_the_log(tmp_path: Path, caplog) -> None:
    root = tmp_path / "diode"
    write_diode_tree(root, [("indoors", seed) for seed in range(1, 7)], size=SMALL)
    scans = find_diode_scans(root, "val", ("indoors",))  # sorted: scene_00001 ... scene_00006
    np.save(scans[1].mask, np.ones((SMALL[1], SMALL[0] - 1), np.float32))  # mask narrower than the depth
    scans[2].image.write_bytes(b"not a png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(scans[3].image)  # image smaller than depth and mask
    np.save(scans[4].depth, np.load(scans[4].depth) * 1000)  # millimetres stored as float "metres"
    np.save(scans[5].mask, np.load(scans[5].mask) * 255)  # not a 0/1 mask
    with caplog.at_level(logging.WARNING, logger="shards.tools.rgbd"):
        assert _import(root, tmp_path / "out", "--diode_scene", "indoors") == 0
    stats = json.loads((tmp_path / "out" / "diodevalindoors-000-000000.stats.json").read_text())
    assert stats["count"] == 1 and stats["split"] == "val" and stats["scenes"] == ["indoors"]
    assert stats["rejects"] == {
        "size_mismatch": [scans[1].relative, scans[3].relative],
        "unreadable": [scans[2].relative, scans[5].relative],
        "implausible_depth": [scans[4].relative],
    }
    log = caplog.text
    assert f"{scans[1].mask}: mask (48, 63) and depth (48, 64) differ" in log
    assert f"{scans[3].depth}: image 10x10 and depth 64x48 differ in size" in log
    assert "looks like millimetres or unscaled integer codes" in log
    assert f"{scans[5].mask}: a validity mask holds 0 and 1" in log

