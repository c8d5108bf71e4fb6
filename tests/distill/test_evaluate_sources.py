"""Issue 29, evaluation side: ``evaluate`` reads the data a user has at hand, says what is wrong in words that fit, and
draws its picture in the one convention.

- ``--data SHARDS``: the ground truth ``python -m shards import-rgbd`` writes, scored with no crop under the default
  preset (the figures equal the constant baseline worked out in numpy from the shards' own labels); shards of a
  teacher's relative labels are refused, naming the sample.
- ``--images DIR --depths DIR``: a folder pair under any names scores as the same frames in ``rgb/`` + ``depth/``.
- ``--limit 0`` says the limit is 0.
- ``best_median_worst.png``: rows named by the frame, with its AbsRel; every colour bar with its unit; the legend
  tells holes from pixels outside the crop (``metrics.json``'s ``picture``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.evaluation import evaluate as evaluation
from shards import samples
from shards.tools import commands as shard_commands
from shards.tools.pictures import HOLE_LEGEND, OUTSIDE_LEGEND
from shards.tools.scenes import write_scene_folder

FRAMES = 3


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated RGB-D frames (16-bit millimetres, sensor holes) in rgb/ + depth/, and their import as shards."""
    root = tmp_path_factory.mktemp("rgbd")
    write_scene_folder(root / "folder", FRAMES, seed=20, width=320, height=240, depth_scale=1000.0, holes=True)
    argv = ["import-rgbd", "--images", str(root / "folder" / "rgb"), "--depths", str(root / "folder" / "depth")]
    assert shard_commands.main([*argv, "--depth_scale", "1000", "--out", str(root / "shards")]) == 0
    return {"folder": root / "folder", "shards": root / "shards"}


def _evaluate(out: Path, *argv: str) -> dict:
    assert evaluation.main(["--model", "constant", "--out", str(out), *argv]) == 0
    return json.loads((out / "metrics.json").read_text())


def _error(capsys: pytest.CaptureFixture, out: Path, *argv: str) -> str:
    assert evaluation.main(["--model", "constant", "--out", str(out), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m distill.evaluate: error: ")
    return lines[0].removeprefix("python -m distill.evaluate: error: ")


def test_shards_of_ground_truth_are_scored_whole(rgbd: dict[str, Path], tmp_path: Path) -> None:
    """No crop, 0 < d < 10 m, the constant after the reference alignment: 1 / mean(1 / d) per frame."""
    record = _evaluate(tmp_path, "--data", str(rgbd["shards"]))
    assert record["data"]["source"] == "shards" and record["data"]["ground_truth"] == ["ground_truth"]
    assert record["count"] == FRAMES and record["protocol"]["crop"] is None
    assert "shards under the default preset: no crop" in record["protocol_note"]
    expected = []
    for sample in samples(rgbd["shards"]):
        assert sample.kind == "metric_depth"
        d = sample.label[sample.valid & (sample.label < 10)].astype(np.float64)
        constant = 1.0 / max(np.mean(1.0 / d), 0.1)
        expected.append(np.mean(np.abs(constant - d) / d))
    assert record["metrics"]["abs_rel"] == pytest.approx(np.mean(expected), rel=1e-4)
    keys = [sample.key for sample in samples(rgbd["shards"])]
    names = [row.split("\n")[0] for row in record["picture"]["rows"]]
    assert set(names) <= {key.rsplit("/", 1)[-1] for key in keys}  # the frame's name, not its path


def test_shard_frames_read_in_any_order_give_the_same_frames(rgbd: dict[str, Path]) -> None:
    from distill.evaluation.shard_frames import ShardFrames

    frames = ShardFrames(str(rgbd["shards"]))
    in_order = [frames[position] for position in range(len(frames))]
    for position in (2, 0, 1, 1, 2):
        frame = frames[position]
        assert frame.name == in_order[position].name and frame.index == position
        assert np.array_equal(frame.depth, in_order[position].depth)
    assert [frame.name for frame in in_order] == [sample.key for sample in samples(rgbd["shards"])]
    assert len(ShardFrames(str(rgbd["shards"]), limit=2)) == 2


def test_a_crop_given_with_shards_is_kept(rgbd: dict[str, Path], tmp_path: Path) -> None:
    record = _evaluate(tmp_path, "--data", str(rgbd["shards"]), "--crop", "40,340,60,460")
    assert record["protocol"]["crop"] == [40, 340, 60, 460] and record["protocol_note"] == "as given"
    assert record["picture"]["legend"] == [HOLE_LEGEND, OUTSIDE_LEGEND]


def test_shards_of_relative_labels_are_refused_naming_the_sample(
    relative_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    said = _error(capsys, tmp_path / "out", "--data", str(relative_shards))
    first = next(iter(samples(relative_shards))).key
    assert said.startswith(f"--data {relative_shards}: sample {first} holds no metric depth")
    assert "python -m shards import-rgbd" in said
    assert not (tmp_path / "out").exists()


def test_a_folder_pair_under_any_names_scores_as_rgb_and_depth(rgbd: dict[str, Path], tmp_path: Path) -> None:
    photos, truth = tmp_path / "photos", tmp_path / "truth_mm"
    shutil.copytree(rgbd["folder"] / "rgb", photos)
    shutil.copytree(rgbd["folder"] / "depth", truth)
    pair = _evaluate(tmp_path / "pair", "--images", str(photos), "--depths", str(truth), "--crop", "none")
    folder = _evaluate(tmp_path / "folder", "--data", str(rgbd["folder"]), "--crop", "none")
    assert pair["data"]["images"] == str(photos) and pair["data"]["depths"] == str(truth)
    assert pair["count"] == folder["count"] == FRAMES and pair["metrics"] == folder["metrics"]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--images", "photos"], "--images and --depths go together, without --data"),
        (["--images", "photos", "--depths", "nowhere"], "--depths nowhere: no such folder"),
        ([], "give --data (it reads nyu_depth_v2_labeled.mat"),
    ],
)
def test_folder_pair_mistakes_are_one_line(
    given: list[str], said: str, rgbd: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(rgbd["folder"] / "rgb", tmp_path / "photos")
    assert said in _error(capsys, tmp_path / "out", *given)


def test_limit_zero_says_the_limit_is_zero(rgbd: dict[str, Path], tmp_path: Path, capsys) -> None:
    said = _error(capsys, tmp_path / "out", "--data", str(rgbd["shards"]), "--limit", "0")
    assert said == (
        "--limit is 0, so no frame would be read: give --limit 1 or more, or leave it out to read every frame"
    )


def test_the_picture_names_its_rows_units_and_legend(rgbd: dict[str, Path], tmp_path: Path) -> None:
    """NYU-style frames under a crop: ground truth and prediction in metres, the error in metres too, rows named by
    the frame with its AbsRel, holes and outside-the-crop both in the legend."""
    record = _evaluate(tmp_path, "--data", str(rgbd["folder"]), "--crop", "20,220,30,290")
    picture = record["picture"]
    assert picture["file"] == "best_median_worst.png" and (tmp_path / picture["file"]).is_file()
    assert picture["columns"] == ["RGB", "ground truth (m)", "prediction (m)", "|error| (m)"]
    assert picture["colour_bars"] == ["depth (m)", "|error| (m)"] * 3
    assert picture["legend"] == [HOLE_LEGEND, OUTSIDE_LEGEND]
    names = sorted(path.stem for path in (rgbd["folder"] / "rgb").iterdir())
    for row, which in zip(picture["rows"], ("best", "median", "worst")):
        name, score = row.split("\n")
        assert name in names and score.startswith(f"{which}, AbsRel ")
