"""``import-rgbd``: pairs by stem, the documented resize-and-crop, exact metric depth and holes, named rejects."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from shards.format import METRIC_DEPTH, SAMPLE_SIZE
from shards.reader import build_pipeline
from shards.tools.commands import main
from shards.tools.rgbd import CropPlan, crop_nearest, plan_crop
from shards.tools.scenes import render_scene
from shards.tools.verify import verify_shards
from shards.writer import read_stats
from tests.shards.conftest import read_png


def _read_all(folder) -> dict:
    return {sample.key: sample for sample in build_pipeline(str(folder), training=False, split=False)}


@pytest.mark.parametrize(
    ("source", "scaled", "box"),
    [
        ((640, 480), (512, 384), (0, 0, 512, 384)),
        ((512, 512), (512, 512), (0, 64, 512, 448)),  # a square image stays square: 512x512, not 384x384
        ((320, 240), (512, 384), (0, 0, 512, 384)),
        ((1000, 500), (768, 384), (128, 0, 640, 384)),
        ((300, 600), (512, 1024), (0, 320, 512, 704)),
    ],
)
def test_plan_crop_scales_by_the_larger_ratio_then_centre_crops(source, scaled, box):
    plan = plan_crop(source)
    assert plan.scale == pytest.approx(max(512 / source[0], 384 / source[1]))
    assert plan.scaled_size == scaled and plan.crop_box == box


def test_random_crop_is_seeded_and_inside():
    boxes = [plan_crop((1000, 500), crop="random", rng=np.random.default_rng(3)).crop_box for _ in range(2)]
    assert boxes[0] == boxes[1]
    left, top, right, bottom = boxes[0]
    assert 0 <= left and right <= 768 and (right - left, bottom - top) == SAMPLE_SIZE and top == 0


def test_nearest_is_exact_never_averaged():
    """Every output value exists in the source (no interpolation), and upscaling by 2 repeats each pixel twice."""
    source = np.arange(12, dtype=np.float32).reshape(3, 4)
    plan = CropPlan(2.0, (8, 6), (0, 0, 8, 6))
    out = crop_nearest(source, plan)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(source, 2, axis=0), 2, axis=1))
    shrink = crop_nearest(np.arange(100, dtype=np.float32).reshape(10, 10), CropPlan(0.5, (5, 5), (0, 0, 5, 5)))
    np.testing.assert_array_equal(shrink, np.arange(100).reshape(10, 10)[1::2, 1::2])  # centre pixels 1, 3, 5, ...


def test_import_generated_scenes_round_trip(scene_folder, tmp_path, capsys):
    out = tmp_path / "shards"
    code = main(["import-rgbd", "--images", str(scene_folder / "rgb"), "--depths", str(scene_folder / "depth"),
                 "--depth_scale", "1000", "--out", str(out), "--samples_per_shard", "4"])
    assert code == 0
    assert "wrote 6 samples in 2 shards; rejected 0" in capsys.readouterr().out
    report = verify_shards(str(out))
    assert report.ok, report.summary()
    assert report.samples == 6 and report.kinds == {METRIC_DEPTH: 6}

    samples = _read_all(out)
    assert sorted(samples) == [f"scene_{i:06d}" for i in range(10, 16)]
    sample = samples["scene_000012"]
    assert sample.meta.source == "scene_000012.png" and sample.meta.source_size == (320, 240)
    assert sample.meta.scale == pytest.approx(1.6) and sample.meta.crop_box == (0, 0, 512, 384)
    assert sample.meta.depth_scale == 1000.0 and sample.meta.teacher is None
    # The expected label: the millimetre PNG, nearest-upscaled by exactly 1.6 (rows/cols floor((i + 0.5) / 1.6)).
    stored = read_png(scene_folder / "depth" / "scene_000012.png")
    rows = np.floor((np.arange(384) + 0.5) / 1.6).astype(int)
    cols = np.floor((np.arange(512) + 0.5) / 1.6).astype(int)
    expected = stored[rows][:, cols] / 1000.0
    expected_valid = expected > 0
    np.testing.assert_array_equal(sample.valid, expected_valid)
    low, high = sample.meta.label_range
    assert np.abs(sample.depth - expected)[expected_valid].max() <= (high - low) / 65535
    assert (~sample.valid).any() and np.all(sample.depth[~sample.valid] == 0)
    # And the depth is the scene's metric depth (to the millimetre of the PNG).
    scene = render_scene(12, 320, 240, holes=True)
    np.testing.assert_allclose(expected[expected_valid], scene.depth[rows][:, cols][expected_valid], atol=0.5e-3 + 1e-6)
    assert sample.image.shape == (384, 512, 3)


def test_rejects_are_named_in_stats_and_listed(scene_folder, tmp_path, capsys):
    images, depths = tmp_path / "images", tmp_path / "depths"
    shutil.copytree(scene_folder / "rgb", images)
    shutil.copytree(scene_folder / "depth", depths)
    (depths / "scene_000010.png").unlink()  # image without depth
    (images / "scene_000011.png").unlink()  # depth without image
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(images / "scene_000012.png")  # size mismatch
    (images / "scene_000013.png").write_bytes(b"not a png")  # unreadable
    Image.fromarray(np.full((240, 320), 1000, np.uint16)).save(depths / "scene_000014.png")  # constant
    shutil.copy(images / "scene_000015.png", images / "scene_000015.jpg")  # x.png beside x.jpg: one key
    code = main(["import-rgbd", "--images", str(images), "--depths", str(depths), "--depth_scale", "1000",
                 "--out", str(tmp_path / "out"), "--prefix", "gt"])
    out = capsys.readouterr().out
    assert code == 0
    assert "wrote 1 samples in 1 shards; rejected 6" in out
    expected = {
        "no_depth_for_image": ["scene_000010.png"],
        "no_image_for_depth": ["scene_000011.png"],
        "size_mismatch": ["scene_000012.png"],
        "unreadable": ["scene_000013.png"],
        "constant_label": ["scene_000014.png"],
        "duplicate_key": ["scene_000015.png"],
    }
    for reason, names in expected.items():
        assert f"{reason} (1): {names[0]}" in out
    stats = read_stats(tmp_path / "out" / "gt-000-000000.tar")
    assert stats["rejects"] == expected and stats["count"] == 1
    assert list(_read_all(tmp_path / "out")) == ["scene_000015"]  # the .jpg sorts first and keeps the key


def test_npy_depth_in_metres_and_subfolder_keys(tmp_path):
    images, depths = tmp_path / "images" / "room.a", tmp_path / "depths" / "room.a"
    images.mkdir(parents=True)
    depths.mkdir(parents=True)
    scene = render_scene(1, 160, 120, holes=True)
    Image.fromarray(scene.image).save(images / "frame.001.jpg", quality=98)
    np.save(depths / "frame.001.npy", np.where(scene.valid, scene.depth, np.nan).astype(np.float32))
    code = main(["import-rgbd", "--images", str(tmp_path / "images"), "--depths", str(tmp_path / "depths"),
                 "--depth_scale", "1", "--out", str(tmp_path / "out"), "--crop_position", "random", "--seed", "5"])
    assert code == 0
    (sample,) = _read_all(tmp_path / "out").values()
    assert sample.key == "room.a/frame_001"  # dots in folders kept, in the file name replaced
    assert sample.meta.source == "room.a/frame.001.jpg"
    assert sample.valid.mean() == pytest.approx(scene.valid.mean(), abs=0.02)
    assert sample.depth[sample.valid].max() <= scene.depth.max() + 1e-3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "a", "--depths", "b"], "--depth_scale"),
        (["--data", "x.mat"], "--splits"),
        (["--images", "a", "--data", "x.mat"], "either"),
        (["--images", "a", "--depths", "b", "--depth_scale", "0"], "positive"),
        (["--pairs", "list.txt", "--diode", "root"], "either"),
        (["--diode", "root", "--depth_scale", "kitti"], "does not apply to DIODE or NYU"),
    ],
)
def test_bad_usage_exits_2_with_a_message(tmp_path, capsys, argv, message):
    assert main(["import-rgbd", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_a_wrong_depth_scale_stops_the_import(tmp_path, capsys):
    """Depth in millimetres imported with --depth_scale 1 reads as kilometres in every frame: the import stops
    (exit 2, nothing written) and says the scale is wrong, instead of rejecting the whole set frame by frame."""
    (tmp_path / "i").mkdir()
    (tmp_path / "d").mkdir()
    scene = render_scene(2, 64, 48)
    Image.fromarray(scene.image).save(tmp_path / "i" / "x.png")
    Image.fromarray((scene.depth * 1000).astype(np.uint16)).save(tmp_path / "d" / "x.png")
    assert main(["import-rgbd", "--images", str(tmp_path / "i"), "--depths", str(tmp_path / "d"),
                 "--depth_scale", "1", "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().err
    assert "all have implausible depth" in out and "x.png: depth median" in out and "KITTI 256" in out
    assert not list((tmp_path / "o").glob("*.tar"))


def test_one_implausible_frame_among_good_ones_is_a_counted_reject(scene_folder, tmp_path):
    images, depths = tmp_path / "images", tmp_path / "depths"
    shutil.copytree(scene_folder / "rgb", images)
    shutil.copytree(scene_folder / "depth", depths)
    np.save(depths / "scene_000013.npy", read_png(depths / "scene_000013.png").astype(np.float32))  # mm as "metres"
    (depths / "scene_000013.png").unlink()
    assert main(["import-rgbd", "--images", str(images), "--depths", str(depths), "--depth_scale", "mm",
                 "--out", str(tmp_path / "o")]) == 0
    stats = json.loads((tmp_path / "o" / "rgbd-000-000000.stats.json").read_text())
    assert stats["count"] == 5 and stats["rejects"] == {"implausible_depth": ["scene_000013.png"]}
    assert stats["depth_scale"] == 1000.0


def test_nyu_training_split_import(tmp_path, capsys):
    from shards.tools.testing import write_nyu_labeled, write_nyu_splits

    scenes = [render_scene(seed, 640, 480, holes=True) for seed in range(4)]
    images = np.stack([scene.image for scene in scenes])
    raw = np.stack([scene.depth for scene in scenes])  # holes are 0
    inpainted = np.where(raw > 0, raw, np.float32(2.5))
    labeled = write_nyu_labeled(tmp_path / "nyu_depth_v2_labeled.mat", images, inpainted, raw)
    splits = write_nyu_splits(tmp_path / "splits.mat", train_1based=[1, 3, 4], test_1based=[2])
    code = main(["import-rgbd", "--data", str(labeled), "--splits", str(splits), "--out", str(tmp_path / "o")])
    assert code == 0
    assert "wrote 3 samples in 1 shards" in capsys.readouterr().out
    assert (tmp_path / "o" / "nyutrain-000-000000.tar").exists()
    report = verify_shards(str(tmp_path / "o"))
    assert report.ok, report.summary()
    samples = _read_all(tmp_path / "o")
    assert sorted(samples) == ["nyu/train/00000", "nyu/train/00002", "nyu/train/00003"]
    sample = samples["nyu/train/00002"]
    # 640x480 scaled by 0.8 is exactly 512x384: nearest picks rows / cols floor((i + 0.5) * 1.25).
    rows = np.floor((np.arange(384) + 0.5) * 1.25).astype(int)
    cols = np.floor((np.arange(512) + 0.5) * 1.25).astype(int)
    expected = raw[2][rows][:, cols]
    np.testing.assert_array_equal(sample.valid, expected > 0)  # raw depth: holes stay invalid
    low, high = sample.meta.label_range
    assert np.abs(sample.depth - expected)[sample.valid].max() <= (high - low) / 65535
    assert sample.meta.extra["nyu_depth"] == "raw" and sample.meta.source == "nyu_depth_v2_labeled.mat#2"
    assert sample.meta.eval_split is None  # the training split is not marked

    code = main(["import-rgbd", "--data", str(labeled), "--splits", str(splits), "--split", "test",
                 "--depth_source", "inpainted", "--out", str(tmp_path / "t")])
    assert code == 0
    (test_sample,) = _read_all(tmp_path / "t").values()
    assert test_sample.key == "nyu/test/00001" and test_sample.valid.all()
    assert test_sample.meta.eval_split == "nyu_test"  # the test split marks itself: training refuses it


def test_a_pair_list_import_marks_its_evaluation_split(scene_folder, tmp_path):
    """``--eval_split NAME`` marks every sample of any import (KITTI's Eigen test from its pair list, say)."""
    pairs = tmp_path / "pairs.txt"
    names = sorted(path.name for path in (scene_folder / "rgb").iterdir())
    pairs.write_text("".join(f"{scene_folder / 'rgb' / name} {scene_folder / 'depth' / name}\n" for name in names))
    argv = ["import-rgbd", "--pairs", str(pairs), "--depth_scale", "1000"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    assert {s.meta.eval_split for s in _read_all(tmp_path / "plain").values()} == {None}
    assert main([*argv, "--eval_split", "kitti_eigen_test", "--out", str(tmp_path / "marked")]) == 0
    marked = _read_all(tmp_path / "marked")
    assert marked and {s.meta.eval_split for s in marked.values()} == {"kitti_eigen_test"}
    assert verify_shards(str(tmp_path / "marked")).ok


def test_refuses_an_output_that_already_holds_shards_of_the_prefix(scene_folder, tmp_path, capsys):
    argv = ["import-rgbd", "--images", str(scene_folder / "rgb"), "--depths", str(scene_folder / "depth"),
            "--depth_scale", "1000", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "already holds 1 shard(s) named rgbd-*.tar" in capsys.readouterr().err
    assert main([*argv, "--prefix", "second"]) == 0


def _photos_as_jpeg(scene_folder, folder):
    """The scenes' pictures as .jpg (what a camera writes), beside the 16-bit .png depth maps."""
    folder.mkdir()
    for path in sorted((scene_folder / "rgb").glob("*.png")):
        Image.open(path).convert("RGB").save(folder / f"{path.stem}.jpg", quality=95)
    return folder


@pytest.mark.parametrize("photos", ["jpg", "png"])
def test_swapped_folders_stop_with_both_named_and_write_nothing(scene_folder, tmp_path, capsys, photos):
    """Issue 24: --images and --depths swapped wrote 0 samples with exit 0. With .jpg photos nothing pairs (the depth
    folder holds no depth file): one line naming both folders and a file of each. With .png photos every pair reads
    a colour picture as depth: the probe stops after the first frames, naming the swap."""
    rgb = _photos_as_jpeg(scene_folder, tmp_path / "rgb") if photos == "jpg" else scene_folder / "rgb"
    depth = scene_folder / "depth"
    out = tmp_path / "out"
    argv = ["import-rgbd", "--images", str(depth), "--depths", str(rgb), "--depth_scale", "1000", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    if photos == "jpg":
        assert f"--images {depth} (e.g. scene_000010.png)" in err
        assert f"--depths {rgb} (e.g. scene_000010.jpg, not of these kinds)" in err and "swapped" in err
    else:
        assert "the first 5 frame(s) checked all could not be read" in err and "swapped" in err
        assert "depth image is mode 'RGB'" in err
    assert not out.exists() or not any(out.iterdir())
    argv = ["import-rgbd", "--images", str(rgb), "--depths", str(depth), "--depth_scale", "1000", "--out", str(out)]
    assert main(argv) == 0  # the right way round: every frame
    assert read_stats(out / "rgbd-000-000000.tar")["count"] == 6


def test_names_that_differ_beyond_the_extension_do_not_pair(tmp_path, capsys):
    """Issue 24: x.jpg with x.mm.png wrote 0 samples with exit 0; now one line names both folders and both files."""
    images, depths = tmp_path / "images", tmp_path / "depths"
    images.mkdir()
    depths.mkdir()
    scene = render_scene(3, 64, 48)
    Image.fromarray(scene.image).save(images / "x.jpg")
    Image.fromarray((scene.depth * 1000).astype(np.uint16)).save(depths / "x.mm.png")
    out = tmp_path / "out"
    code = main(["import-rgbd", "--images", str(images), "--depths", str(depths), "--depth_scale", "1000",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"no pairs: no image under --images {images} (e.g. x.jpg)" in err
    assert f"--depths {depths} (e.g. x.mm.png)" in err and "names differ beyond the extension" in err
    assert not out.exists()
