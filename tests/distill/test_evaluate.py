"""The evaluation command end to end: student folder, ONNX export and tiny teachers on generated scenes written in
the official NYU layout, with the reference protocol recomputed independently from the saved predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.deploy.model import detect_source
from distill.evaluation.evaluate import COMMAND, main, resolve_protocol
from distill.evaluation.protocols import PRESETS
from distill.students import create_student, save_student
from shards.cli.errors import UserError
from shards.tools.scenes import render_scene
from shards.tools.testing import write_nyu_labeled, write_nyu_splits
from tests.distill.conftest import tiny_student_config

TEST_1BASED = [2, 3, 4]  # frame ids 1, 2, 3


@pytest.fixture(scope="module")
def nyu(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four generated 640x480 scenes in the official files: in-painted depth whole, raw depth with sensor holes."""
    folder = tmp_path_factory.mktemp("nyu")
    holes = [render_scene(seed, holes=True) for seed in range(4)]
    images = np.stack([scene.image for scene in holes])
    depths = np.stack([render_scene(seed).depth for seed in range(4)])
    raw = np.stack([np.where(scene.valid, scene.depth, 0.0) for scene in holes]).astype(np.float32)
    labeled = write_nyu_labeled(folder / "nyu_depth_v2_labeled.mat", images, depths, raw)
    splits = write_nyu_splits(folder / "splits.mat", [1], TEST_1BASED)
    return {"labeled": str(labeled), "splits": str(splits), "raw": raw, "depths": depths}


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = tiny_student_config()
    return save_student(create_student(config), config, tmp_path_factory.mktemp("student") / "student")


def _run(model: str | Path, nyu: dict, out: Path, *extra: str) -> dict:
    argv = ["--model", str(model), "--data", nyu["labeled"], "--splits", nyu["splits"], "--out", str(out)]
    assert main([*argv, "--batch_size", "2", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def _per_image(out: Path) -> list[dict]:
    with open(out / "per_image.csv") as file:
        return list(csv.DictReader(file))


def _reference_protocol_numpy(prediction: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    """The reference protocol written again from its description, in numpy, for one raw inverse-depth map."""
    valid = np.zeros_like(depth, dtype=bool)
    valid[45:471, 41:601] = True
    valid &= (depth > 0) & (depth < 10)
    design = np.stack([prediction[valid], np.ones(valid.sum())], axis=1).astype(np.float64)
    (scale, shift), *_ = np.linalg.lstsq(design, 1.0 / depth[valid].astype(np.float64), rcond=None)
    if scale < 0:  # issue 24: the scale is held at >= 0, so such a frame gets the best constant
        scale, shift = 0.0, float(np.mean(1.0 / depth[valid].astype(np.float64)))
    predicted = 1.0 / np.maximum(scale * prediction[valid] + shift, 0.1)
    d = depth[valid]
    return {
        "abs_rel": float(np.mean(np.abs(predicted - d) / d)),
        "sq_rel": float(np.mean((predicted - d) ** 2 / d)),
        "rmse": float(np.sqrt(np.mean((predicted - d) ** 2))),
        "delta1": float(np.mean(np.maximum(predicted / d, d / predicted) < 1.25)),
    }


@pytest.fixture(scope="module")
def student_run(student: Path, nyu: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The student evaluated once under the default protocol, with its predictions saved."""
    out = tmp_path_factory.mktemp("student_run")
    return out, _run(student, nyu, out, "--save_predictions", "true")


def test_student_report_states_protocol_model_data_and_means(student_run: tuple[Path, dict]) -> None:
    out, record = student_run
    assert record["protocol"] == PRESETS["reference"].to_dict()
    assert record["count"] == 3 and record["data"]["depth_variable"] == "rawDepths"
    assert record["model"] == {"model": "torch:student", "type": "student", "kind": "relative_inverse_depth",
                               "input_size": [256, 192]}  # fmt: skip
    rows = _per_image(out)
    assert [int(row["index"]) for row in rows] == [1, 2, 3]
    for name, mean in record["metrics"].items():
        assert mean == pytest.approx(np.mean([float(row[name]) for row in rows]))  # averaged over images


def test_saved_predictions_reproduce_the_metrics_independently(student_run: tuple[Path, dict], nyu: dict) -> None:
    out, _ = student_run
    saved = np.load(out / "predictions.npz")
    assert saved["predictions"].shape == (3, 480, 640) and saved["predictions"].dtype == np.float32
    assert saved["indices"].tolist() == [1, 2, 3] and saved["names"].tolist() == ["nyu_0001", "nyu_0002", "nyu_0003"]
    for row, prediction, index in zip(_per_image(out), saved["predictions"], saved["indices"]):
        expected = _reference_protocol_numpy(prediction, nyu["raw"][index])
        for name, value in expected.items():
            assert float(row[name]) == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_table_row_and_picture(student_run: tuple[Path, dict]) -> None:
    out, record = student_run
    table = (out / "table_row.md").read_text().splitlines()
    assert table[0].startswith("| Model | Input | AbsRel | SqRel | RMSE | RMSE log | δ<1.25 |")
    assert table[2].startswith("| torch:student | 256x192 | ") and f"{record['metrics']['abs_rel']:.3f}" in table[2]
    with Image.open(out / "best_median_worst.png") as picture:
        assert picture.width > 4 * 192 and picture.height >= 3 * 192  # 3 rows x (RGB, truth, prediction, error)


def test_onnx_export_scores_like_the_folder(student: Path, student_run: tuple[Path, dict], nyu: dict, tmp_path) -> None:
    from distill.deploy.export import export_onnx
    from distill.students import load_student

    model, _ = load_student(student)
    onnx_path = export_onnx(model, tmp_path / "student.onnx")
    assert detect_source(str(onnx_path))[0] == "onnx"
    from_onnx = _run(onnx_path, nyu, tmp_path / "onnx")
    assert from_onnx["model"]["type"] == "onnx" and from_onnx["count"] == 3
    for name, value in student_run[1]["metrics"].items():
        assert from_onnx["metrics"][name] == pytest.approx(value, rel=1e-3, abs=1e-4), name


def test_tiny_teacher_is_measured_by_the_same_command(nyu: dict, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from pseudolabel.tiny_teacher import save_tiny_teacher

    folder = save_tiny_teacher(tmp_path / "tiny-dpt", "dpt")
    record = _run(folder, nyu, tmp_path / "out", "--limit", "1")
    assert record["model"]["type"] == "teacher" and record["model"]["input_size"] is None  # each frame whole
    assert record["model"]["teacher"]["size"] == 384 and record["resize"]["output"] == "teacher: bicubic"
    assert record["model"]["kind"] == "relative_inverse_depth"
    assert record["protocol"]["alignment"] == "lsq_inverse" and record["count"] == 1
    assert 0 < record["metrics"]["abs_rel"] < 1


@pytest.mark.parametrize(
    ("argv", "kind", "alignment"),
    [
        ([], "metric_depth", "none"),  # the model's kind decides under the default preset
        ([], "relative_inverse_depth", "lsq_inverse"),
        (["--protocol", "reference"], "metric_depth", "lsq_inverse"),  # an explicit preset is kept
        (["--alignment", "median_depth"], "metric_depth", "median_depth"),
    ],
)
def test_model_kind_decides_alignment_only_when_nothing_was_chosen(argv: list[str], kind: str, alignment: str) -> None:
    config, _ = COMMAND.parse(["--model", "m", "--data", "d", "--out", "o", *argv])
    protocol, note = resolve_protocol(config, kind)
    assert protocol.alignment == alignment
    assert ("kind decides" in note) == (alignment == "none")


@pytest.mark.slow  # builds and runs a second tiny teacher (about 15 s on 2 busy cores); the rule is tested above
def test_metric_teacher_is_scored_without_alignment_under_the_default(nyu: dict, tmp_path: Path) -> None:
    from pseudolabel.tiny_teacher import save_tiny_teacher

    folder = save_tiny_teacher(tmp_path / "tiny-da", "depth_anything")
    config = json.loads((folder / "config.json").read_text())
    config.update(depth_estimation_type="metric", max_depth=10)
    (folder / "config.json").write_text(json.dumps(config))
    record = _run(folder, nyu, tmp_path / "out", "--limit", "1")
    assert record["model"]["kind"] == "metric_depth"
    assert record["protocol"]["alignment"] == "none" and record["protocol"]["name"] == "reference+custom"
    assert "kind decides" in record["protocol_note"]
    assert float(_per_image(tmp_path / "out")[0]["scale"]) == 1.0


def test_protocol_overrides_reach_the_report(student: Path, nyu: dict, tmp_path: Path) -> None:
    record = _run(student, nyu, tmp_path, "--protocol", "common", "--crop", "none", "--limit", "1")
    protocol = record["protocol"]
    assert protocol["name"] == "common+custom" and protocol["crop"] is None
    assert protocol["depth_source"] == "inpainted" and record["data"]["depth_variable"] == "depths"
    rows = _per_image(tmp_path)
    assert int(rows[0]["valid_pixels"]) == int(((nyu["depths"][1] > 1e-3) & (nyu["depths"][1] < 10)).sum())


def test_folder_source_with_depth_scale(student: Path, tmp_path: Path) -> None:
    from shards.tools.scenes import write_scene_folder

    write_scene_folder(tmp_path / "scenes", count=2, seed=7, width=320, height=240, depth_scale=1000.0, holes=True)
    argv = ["--model", str(student), "--data", str(tmp_path / "scenes"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2  # the Eigen crop is defined on 480x640 only
    assert main([*argv, "--crop", "none"]) == 0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data"]["source"] == "folder" and record["count"] == 2 and record["protocol"]["crop"] is None


def test_dataset_without_raw_depth_stops_the_default_preset(student: Path, tmp_path: Path, capsys) -> None:
    datasets = pytest.importorskip("datasets")
    scenes = [render_scene(seed, width=128, height=96) for seed in range(2)]
    features = datasets.Features({"image": datasets.Image(), "depth_map": datasets.Array2D((96, 128), "float32")})
    rows = {"image": [Image.fromarray(s.image) for s in scenes], "depth_map": [s.depth for s in scenes]}
    path = tmp_path / "hf"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(path))
    argv = ["--model", str(student), "--data", str(path), "--out", str(tmp_path / "out"), "--crop", "none"]
    assert main(argv) == 2
    assert "choose the in-painted depth explicitly" in capsys.readouterr().err
    assert main([*argv, "--protocol", "common"]) == 0
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["data"]["source"] == "huggingface_datasets" and record["count"] == 2


@pytest.mark.parametrize("content", [None, {"model_type": "bert"}])
def test_unknown_model_lists_the_accepted_forms(tmp_path: Path, content: dict | None) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(json.dumps(content))
    with pytest.raises(UserError, match="accepted: a student folder .* .onnx file .* transformers depth model"):
        detect_source(str(tmp_path))[0]


def test_model_detection_by_content(student: Path, tmp_path: Path) -> None:
    assert detect_source(str(student))[0] == "student"
    assert detect_source("Intel/dpt-hybrid-midas")[0] == "teacher"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dpt"}))
    assert detect_source(str(tmp_path))[0] == "teacher"
    with pytest.raises(UserError, match="no such ONNX file"):
        detect_source(str(tmp_path / "missing.onnx"))[0]


def test_constant_baseline_scores_the_best_single_depth_per_image(nyu: dict, tmp_path: Path) -> None:
    """``--model constant``: after the reference alignment each image gets 1 / mean(valid inverse depth), capped at
    10 m; the figures equal that worked out here from the raw depths."""
    assert detect_source("constant")[0] == "constant"
    record = _run("constant", nyu, tmp_path)
    expected = []
    for frame in np.asarray(TEST_1BASED) - 1:
        depth = nyu["raw"][frame].astype(np.float64)
        valid = np.zeros_like(depth, dtype=bool)
        valid[45:471, 41:601] = True
        valid &= (depth > 0) & (depth < 10)
        d = depth[valid]
        constant = 1.0 / max(np.mean(1.0 / d), 0.1)
        expected.append(np.mean(np.abs(constant - d) / d))
    assert record["count"] == len(TEST_1BASED)
    assert record["metrics"]["abs_rel"] == pytest.approx(np.mean(expected), rel=1e-4)


@pytest.mark.parametrize("given", ["runs/no_such_student", "./student", "../student", "a/b/c", "/nowhere/student"])
def test_a_mistyped_student_path_is_not_taken_for_a_hub_id(given: str, tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue 15 item 5: a missing path that can only be local is named as such, with the accepted forms."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="no such student folder or model file; accepted: a student folder"):
        detect_source(given)[0]
    assert main(["--model", given, "--data", "unused.mat", "--out", str(tmp_path / "out")]) == 2
    assert "no such student folder or model file" in capsys.readouterr().err
    assert detect_source("Intel/dpt-hybrid-midas")[0] == "teacher"  # owner/name with no such folder here: a hub id
