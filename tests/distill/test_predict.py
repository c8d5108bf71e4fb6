"""``distill.predict`` on generated picture folders and a generated video: the files, their sizes and values, temporal
smoothing, and unreadable inputs skipped and reported."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import distill.deploy.predict as predict  # noqa: E402
from distill.deploy.export import export_onnx  # noqa: E402
from distill.deploy.model import load_runner  # noqa: E402
from distill.deploy.predict import VideoWriter, read_frames, video_info  # noqa: E402
from distill.students import create_student, save_student  # noqa: E402
from shards.format import decode_label_codes  # noqa: E402
from shards.tools.scenes import render_scene  # noqa: E402
from tests.distill.conftest import tiny_student_config  # noqa: E402

MODEL_SIZE = ["--size", "96x64"]
#: Pictures of odd sizes and aspect ratios (W, H), one in a sub-folder: outputs must come back at these sizes.
PICTURES = {"room.png": (120, 90), "sub/tall.jpg": (45, 70), "sub/deeper/wide.png": (151, 33)}
VIDEO_FRAMES, VIDEO_SIZE = 7, (80, 60)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny student as a folder and as an ONNX export."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = tiny_student_config()
    model = create_student(config)
    student = save_student(model, config, folder / "student")
    return {"folder": student, "onnx": export_onnx(model, folder / "student.onnx", height=64, width=96)}


@pytest.fixture(scope="module")
def picture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pictures")
    for seed, (name, (width, height)) in enumerate(PICTURES.items()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_scene(seed, width=width, height=height).image).save(folder / name)
    (folder / "notes.txt").write_text("not a picture: ignored inside folders")
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, fps=10) as writer:
        for seed in range(VIDEO_FRAMES):
            writer.write(render_scene(seed, width=VIDEO_SIZE[0], height=VIDEO_SIZE[1]).image)
    return path


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as picture:
        return picture.size


def _drawn_at(path: Path, size: tuple[int, int]) -> bool:
    """Whether a depth picture holds a map of ``size`` (W, H): as high (up to the colour bar's tick margins), and
    wider by its colour bar."""
    width, height = _size(path)
    return width > size[0] and size[1] <= height < size[1] + 20


@pytest.mark.parametrize("model_kind", ["folder", "onnx"])
@pytest.mark.parametrize("raw", ["png16", "npy"])
def test_picture_folder_gives_colour_and_raw_maps_at_input_size(
    model_kind: str, raw: str, models: dict, picture_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    size_args = MODEL_SIZE if model_kind == "folder" else []
    assert predict.main(["--model", str(models[model_kind]), str(picture_folder), "--out", str(out),
                         "--save_raw", raw, "--batch_size", "2", *size_args]) == 0  # fmt: skip
    for name, size in PICTURES.items():
        stem = out / Path(name).with_suffix("")
        colour = stem.with_name(stem.name + "_depth.png")
        assert _drawn_at(colour, size) and Image.open(colour).mode == "RGB"  # the map, its colour bar to the right
        raw_stem = stem.with_name(stem.name + "_inverse_depth")
        if raw == "npy":
            values = np.load(raw_stem.with_suffix(".npy"))
        else:
            codes = np.asarray(Image.open(raw_stem.with_suffix(".png")))
            assert codes.dtype == np.uint16 and codes.max() == 65535 and codes.min() == 1  # the full 16-bit code
            record = json.loads(raw_stem.with_suffix(".json").read_text())
            values, valid = decode_label_codes(codes, tuple(record["label_range"]))
            assert valid.all() and record["size"] == list(size)
        assert values.shape == (size[1], size[0]) and values.dtype == np.float32
        assert (values >= 0).all() and values.std() > 0
    assert not (out / predict.SKIPPED_LIST).exists()


def test_raw_outputs_hold_the_model_prediction(models: dict, picture_folder: Path, tmp_path: Path) -> None:
    """The .npy is the model's map resized back; the 16-bit PNG decodes to it within one code step."""
    for raw in ("npy", "png16"):
        argv = ["--model", str(models["onnx"]), str(picture_folder / "room.png"), "--out", str(tmp_path / raw)]
        assert predict.main([*argv, "--save_raw", raw]) == 0
    from_npy = np.load(tmp_path / "npy" / "room_inverse_depth.npy")
    record = json.loads((tmp_path / "png16" / "room_inverse_depth.json").read_text())
    codes = np.asarray(Image.open(tmp_path / "png16" / "room_inverse_depth.png"))
    from_png, _ = decode_label_codes(codes, tuple(record["label_range"]))
    low, high = record["label_range"]
    assert np.abs(from_png - from_npy).max() <= (high - low) / 65534 + 1e-6

    runner = load_runner(models["onnx"])
    picture = np.asarray(Image.open(picture_folder / "room.png").convert("RGB"))
    from distill.deploy.runtime import images_to_batch, resize_prediction

    expected = resize_prediction(runner(images_to_batch([picture], runner.width, runner.height))[0], 120, 90)
    np.testing.assert_allclose(from_npy, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("video_out", predict.VIDEO_OUTPUTS)
@pytest.mark.parametrize("smooth", [None, "ema", "mean"])
def test_video_gives_a_depth_video_or_frames(
    video_out: str, smooth: str | None, models: dict, video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["--model", str(models["onnx"]), str(video), "--out", str(out), "--video_out", video_out]
    argv += ["--save_raw", "npy"]
    if smooth:
        argv += ["--smooth", smooth, "--smooth_window", "3", "--smooth_alpha", "0.3"]
    assert predict.main(argv) == 0
    if video_out == "mp4":
        info = video_info(out / "clip_depth.mp4")
        assert (info.width, info.height) == VIDEO_SIZE
        assert len(list(read_frames(out / "clip_depth.mp4"))) == VIDEO_FRAMES
    else:
        frames = sorted((out / "clip_depth").glob("*.png"))
        assert len(frames) == VIDEO_FRAMES and all(_size(frame) == VIDEO_SIZE for frame in frames)
    raw = sorted((out / "clip_inverse_depth").glob("*.npy"))
    assert [path.name for path in raw] == [f"{index:06d}.npy" for index in range(VIDEO_FRAMES)]
    assert np.load(raw[0]).shape == (VIDEO_SIZE[1], VIDEO_SIZE[0])


def test_smoothing_changes_only_what_it_should(models: dict, video: Path, tmp_path: Path) -> None:
    """The first frame is untouched; later ones are the EMA of the unsmoothed maps (up to the resize back)."""
    runs = {}
    for name, extra in (("plain", []), ("ema", ["--smooth", "ema", "--smooth_alpha", "0.5"])):
        out = tmp_path / name
        argv = ["--model", str(models["onnx"]), str(video), "--out", str(out), "--video_out", "frames"]
        assert predict.main([*argv, "--save_raw", "npy", *extra]) == 0
        runs[name] = [np.load(path) for path in sorted((out / "clip_inverse_depth").glob("*.npy"))]
    np.testing.assert_allclose(runs["ema"][0], runs["plain"][0], atol=1e-6)
    second = 0.5 * runs["plain"][1] + 0.5 * runs["plain"][0]
    interior = (slice(4, -4), slice(4, -4))  # bicubic resizing and the clamp at 0 do not commute exactly with a mean
    assert np.abs(runs["ema"][1] - second)[interior].mean() < 0.02 * np.ptp(second)
    assert not np.allclose(runs["ema"][1], runs["plain"][1])


@pytest.mark.parametrize("mode", predict.SMOOTHING)
def test_temporal_smoother(mode: str) -> None:
    smoother = predict.TemporalSmoother(mode, window=2, alpha=0.25)
    outputs = [float(smoother(np.array([value]))[0]) for value in (4.0, 0.0, 8.0)]
    expected = {"ema": [4.0, 3.0, 4.25], "mean": [4.0, 2.0, 4.0]}[mode]
    assert outputs == pytest.approx(expected)


def test_unreadable_inputs_are_skipped_and_listed(models: dict, picture_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    (broken / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video either")
    out = tmp_path / "out"
    missing = tmp_path / "missing.jpg"
    argv = ["--model", str(models["onnx"]), str(picture_folder / "room.png"), str(broken), str(missing)]
    assert predict.main([*argv, "--out", str(out)]) == 0
    assert (out / "room_depth.png").is_file()
    listed = (out / predict.SKIPPED_LIST).read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(
        [str(broken / "corrupt.mp4"), str(broken / "corrupt.png"), str(missing)]
    )


def test_exit_status_is_non_zero_only_when_nothing_was_processed(models: dict, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"garbage")
    out = tmp_path / "out"
    assert predict.main(["--model", str(models["onnx"]), str(corrupt), "--out", str(out)]) == 1
    assert str(corrupt) in (out / predict.SKIPPED_LIST).read_text()


def test_video_without_pyav_is_a_clear_error(
    models: dict, video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def missing() -> None:
        raise predict.VideoSupportMissing("video input and output need PyAV: pip install 'depth-distill[video]'")

    monkeypatch.setattr(predict, "require_av", missing)
    assert predict.main(["--model", str(models["onnx"]), str(video), "--out", str(tmp_path / "out")]) == 2
    assert "depth-distill[video]" in capsys.readouterr().err


def test_name_clashes_never_overwrite(models: dict, picture_folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(render_scene(9, width=40, height=30).image).save(other / "room.png")
    out = tmp_path / "out"
    argv = ["--model", str(models["onnx"]), str(picture_folder / "room.png"), str(other / "room.png")]
    assert predict.main([*argv, "--out", str(out)]) == 0
    assert _drawn_at(out / "room_depth.png", PICTURES["room.png"]) and _drawn_at(out / "room_2_depth.png", (40, 30))


def test_a_filled_out_folder_is_refused_unless_overwrite(
    models: dict, picture_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A second run into the same ``--out`` would replace the first run's maps: refused in one line listing what is
    there, the maps untouched, unless ``--overwrite true``."""
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(render_scene(9, width=40, height=30).image).save(other / "room.png")
    out = tmp_path / "out"
    model = ["--model", str(models["onnx"]), "--out", str(out)]
    assert predict.main([*model, str(picture_folder / "room.png")]) == 0
    first = (out / "room_depth.png").read_bytes()
    capsys.readouterr()
    assert predict.main([*model, str(other / "room.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m distill.predict: error: --out {out} already holds config.yaml, room_depth.png: choose "
                   "an empty folder, or pass --overwrite true to write over it"]
    assert (out / "room_depth.png").read_bytes() == first and _drawn_at(out / "room_depth.png", PICTURES["room.png"])
    assert predict.main([*model, str(other / "room.png"), "--overwrite", "true"]) == 0
    assert _drawn_at(out / "room_depth.png", (40, 30))
