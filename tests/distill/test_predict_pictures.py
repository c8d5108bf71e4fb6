"""Issue 29, ``distill.predict``: its pictures follow the one convention and say what they show, and its options say
when they do not apply.

- Each ``_depth.png`` is the map at the picture's size with its colour bar to the right: a relative model's output
  on turbo, a metric model's metres on the reversed map (near = warm in both).
- ``--shared_scale true`` draws every picture of the run on one scale, the percentiles of them all.
- ``--smooth`` with still pictures, and ``--shared_scale`` with videos, say once that they do not apply to them.
- ``--help`` names every model form predict runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import distill.deploy.predict as predict  # noqa: E402
from distill.deploy.export import export_onnx  # noqa: E402
from distill.deploy.model import DepthModel  # noqa: E402
from distill.students import create_student  # noqa: E402
from shards.tools.pictures import colorize_depth  # noqa: E402
from shards.tools.scenes import render_scene  # noqa: E402
from tests.distill.conftest import tiny_student_config  # noqa: E402
from tests.shards.conftest import locate  # noqa: E402

SIZE = (96, 64)  # the models' input (W, H)
PICTURES = {"a.png": (120, 90), "b.png": (100, 70)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class GreyMetres(torch.nn.Module):
    """A metric model: metres = 10 x the picture's grey level, (B, 1, H, W)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 10.0 * image.mean(1, keepdim=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    student = create_student(tiny_student_config())
    return {
        "relative": export_onnx(student, folder / "relative.onnx", height=SIZE[1], width=SIZE[0]),
        "metric": export_onnx(GreyMetres(), folder / "metres.onnx", height=SIZE[1], width=SIZE[0]),
    }


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pictures")
    for seed, (name, (width, height)) in enumerate(PICTURES.items()):
        Image.fromarray(render_scene(seed + 3, width=width, height=height).image).save(folder / name)
    return folder


def _predict(model: Path, inputs: list[Path], out: Path, *extra: str) -> None:
    assert predict.main(["--model", str(model), *map(str, inputs), "--out", str(out), *extra]) == 0


def _values(model: Path, picture: Path, kind: str | None = None) -> np.ndarray:
    """The model's map of one picture, by the Python API (the code predict runs)."""
    return DepthModel.from_pretrained(str(model), kind=kind).predict(Image.open(picture)).values


def _map_in(drawn: Path, expected: np.ndarray) -> np.ndarray:
    """The map region of a depth picture, found where ``expected`` fits it best: left-aligned, full height."""
    with Image.open(drawn) as picture:
        grid = np.asarray(picture.convert("RGB"))
    top, left, _ = locate(grid, expected, step=3)
    assert left == 0 and grid.shape[1] > expected.shape[1] + 20  # the colour bar, to the right
    bar = grid[top + 2 : top + expected.shape[0] - 2, expected.shape[1] : expected.shape[1] + 20]
    assert max(len(np.unique(bar[:, x], axis=0)) for x in range(bar.shape[1])) > 10  # a colour ramp
    return grid[top : top + expected.shape[0], : expected.shape[1]]


def test_a_relative_picture_is_its_map_with_a_colour_bar(models: dict, pictures: Path, tmp_path: Path) -> None:
    _predict(models["relative"], [pictures / "a.png"], tmp_path)
    values = _values(models["relative"], pictures / "a.png")
    expected = colorize_depth(values, value_range=tuple(map(float, predict.colour_range(values))))
    assert expected.scale.units == "relative inverse depth" and expected.scale.colormap == "turbo"
    assert np.array_equal(_map_in(tmp_path / "a_depth.png", np.asarray(expected)), expected)


def test_a_metric_model_is_drawn_in_metres(models: dict, pictures: Path, tmp_path: Path) -> None:
    _predict(models["metric"], [pictures / "a.png"], tmp_path, "--kind", "metric_depth")
    metres = _values(models["metric"], pictures / "a.png", kind="metric_depth")
    value_range = tuple(map(float, predict.colour_range(metres)))
    expected = np.asarray(colorize_depth(metres, value_range=value_range, inverse=False))  # turbo_r: near = warm
    drawn = _map_in(tmp_path / "a_depth.png", expected)
    assert np.abs(drawn.astype(int) - expected.astype(int)).mean() < 0.5
    inverse = 1.0 / metres
    as_inverse = colorize_depth(inverse, value_range=tuple(map(float, predict.colour_range(inverse))))
    assert np.abs(drawn.astype(int) - np.asarray(as_inverse).astype(int)).mean() > 2  # not 1 / m any more


def test_shared_scale_draws_every_picture_on_one_scale(
    models: dict, pictures: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=predict.__name__)
    _predict(models["relative"], [pictures], tmp_path / "shared", "--shared_scale", "true")
    _predict(models["relative"], [pictures], tmp_path / "own")
    values = {name: _values(models["relative"], pictures / name) for name in PICTURES}
    pooled = np.concatenate([predict._value_sample(v) for v in values.values()])
    shared = tuple(map(float, predict.colour_range(pooled)))
    assert f"one colour scale for 2 pictures: {shared[0]:.4g} to {shared[1]:.4g}" in caplog.messages
    for name, map_values in values.items():
        stem = Path(name).stem
        on_shared = np.asarray(colorize_depth(map_values, value_range=shared))
        on_own = np.asarray(colorize_depth(map_values, value_range=tuple(map(float, predict.colour_range(map_values)))))
        assert not np.array_equal(on_shared, on_own)
        assert np.array_equal(_map_in(tmp_path / "shared" / f"{stem}_depth.png", on_shared), on_shared)
        assert np.array_equal(_map_in(tmp_path / "own" / f"{stem}_depth.png", on_own), on_own)


def test_smooth_on_still_pictures_is_said_once(
    models: dict, pictures: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _predict(models["relative"], [pictures], tmp_path, "--smooth", "ema")
    said = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert said == ["--smooth averages the frames of a video: the 2 still picture(s) are predicted one by one, "
                    "unsmoothed"]


def test_shared_scale_with_a_video_says_the_video_keeps_its_own(
    models: dict, pictures: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    with predict.VideoWriter(clip, fps=10) as writer:
        for seed in range(3):
            writer.write(render_scene(seed, width=80, height=60).image)
    _predict(models["relative"], [pictures / "a.png", clip], tmp_path / "out", "--shared_scale", "true")
    said = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert said == ["--shared_scale puts the still pictures on one scale: the frames of the 1 video(s) keep their own"]


def test_help_names_every_model_form(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10000")
    with pytest.raises(SystemExit):
        predict.COMMAND.parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a student folder or hub id, an exported .onnx / .tflite / .pte file, or a teacher folder or hub id" in text
