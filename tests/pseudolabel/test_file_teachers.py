"""An exported depth file as the teacher (``--teacher.model teacher.onnx``): labels equal to the file's own runtime
output on the stretched crop, the kind rule shared with ``DepthModel``, and a run that labels, distils and
evaluates. The LiteRT (uint8 in and out) case is in ``tests/deploy_runtimes/test_file_teachers.py``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from distill.deploy.export import export
from distill.deploy.runtime import EXPORTED_SUFFIXES, unknown_kind_message
from distill.students import create_student
from pseudolabel.teachers import TEACHER_FILE_SUFFIXES, FileTeacher, load_teacher
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH
from shards.reader import build_pipeline
from shards.tools.scenes import write_scene_folder
from tests.distill.conftest import tiny_student_config
from tests.pseudolabel.file_teacher_checks import (
    CROP,
    check_labels_are_the_files_output,
    distil_and_evaluate,
    label_with,
)

#: The size the tiny student is exported at: 3:2, so the 4:3 crop is stretched to it.
FILE_SIZE = (96, 64)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 generated scenes at 160x120 as an rgb/ + depth/ folder (labelled from rgb/, scored against depth/)."""
    folder = tmp_path_factory.mktemp("file_teacher_scenes")
    write_scene_folder(folder, count=6, seed=40, width=160, height=120)
    return folder


@pytest.fixture(scope="module")
def onnx_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny student exported by the project's own export at 96x64 (fp32 ONNX; it states its kind)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("onnx_teacher") / "teacher.onnx"
    export(create_student(tiny_student_config()), "onnx", path, height=FILE_SIZE[1], width=FILE_SIZE[0])
    return path


def silent_copy(path: Path, folder: Path) -> Path:
    """``path`` without what it says about its output: the ONNX metadata cleared, no ``<file>.json`` beside it (a
    file from elsewhere)."""
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    copy = folder / "silent.onnx"
    onnx.save(graph, str(copy))
    return copy


def test_the_teacher_file_endings_are_the_runners(onnx_teacher: Path) -> None:
    assert TEACHER_FILE_SUFFIXES == EXPORTED_SUFFIXES
    assert isinstance(load_teacher(str(onnx_teacher)), FileTeacher)


def test_onnx_labels_are_the_files_own_output_on_the_stretched_crop(
    onnx_teacher: Path, scenes: Path, tmp_path: Path
) -> None:
    assert label_with(onnx_teacher, scenes, tmp_path / "out") == 0
    session = onnxruntime.InferenceSession(str(onnx_teacher), providers=["CPUExecutionProvider"])

    def file_output(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0]

    assert check_labels_are_the_files_output(tmp_path / "out", scenes, file_output, FILE_SIZE) == 6
    teacher = json.loads((tmp_path / "out" / "manifest.json").read_text())["teacher"]
    assert teacher["file_size"] == list(FILE_SIZE) and teacher["network_input"] == [FILE_SIZE[1], FILE_SIZE[0]]
    assert (teacher["input_resize"], teacher["output_resize"]) == ("pil_image_bicubic", "bilinear")
    assert "stretched" in teacher["reference"] and teacher["kind"] == RELATIVE_INVERSE_DEPTH
    assert teacher["teacher_revision"].startswith("sha256:") and teacher["format"] == "onnx"


def test_a_free_size_graph_labels_the_crop_as_it_is(tmp_path: Path) -> None:
    """An ONNX graph whose height and width are free runs at the crop's own size: nothing stretched."""
    torch.manual_seed(4)
    path = tmp_path / "free.onnx"
    export(create_student(tiny_student_config()), "onnx", path, height=64, width=96)
    graph = onnx.load(str(path))
    for tensor in (*graph.graph.input, *graph.graph.output):
        for axis in (2, 3):
            tensor.type.tensor_type.shape.dim[axis].dim_param = f"side{axis}"
    onnx.save(graph, str(path))
    teacher = load_teacher(str(path))
    assert teacher.network_size(CROP[1], CROP[0]) == (CROP[1], CROP[0]) and teacher.info()["file_size"] is None
    crops = torch.randint(0, 256, (2, CROP[1], CROP[0], 3), dtype=torch.uint8)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    direct = session.run(None, {"image": crops.permute(0, 3, 1, 2).numpy().astype(np.float32) / 255})[0][:, 0]
    np.testing.assert_allclose(teacher(crops).numpy(), direct, rtol=1e-5, atol=1e-6)


def test_a_file_that_does_not_say_its_kind_needs_teacher_kind(
    onnx_teacher: Path, scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog
) -> None:
    silent = silent_copy(onnx_teacher, tmp_path)
    assert label_with(silent, scenes, tmp_path / "refused") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and unknown_kind_message(silent, "teacher.kind") in error
    assert not (tmp_path / "refused" / "manifest.json").exists()

    assert label_with(silent, scenes, tmp_path / "metric", "--teacher.kind", METRIC_DEPTH) == 0
    kinds = {sample.meta.kind for sample in build_pipeline(str(tmp_path / "metric"), training=False, split=False)}
    assert kinds == {METRIC_DEPTH}

    # DepthModel (evaluate, predict) assumes, and says which kind with the same sentence
    from distill import DepthModel

    with caplog.at_level(logging.WARNING):
        model = DepthModel.from_pretrained(str(silent))
    assert model.kind == RELATIVE_INVERSE_DEPTH
    assert f"{unknown_kind_message(silent, '--kind')}; assuming {RELATIVE_INVERSE_DEPTH}" in caplog.text


def test_a_kind_that_contradicts_the_file_is_refused(
    onnx_teacher: Path, scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert label_with(onnx_teacher, scenes, tmp_path / "out", "--teacher.kind", METRIC_DEPTH) == 2
    error = capsys.readouterr().err
    assert f"states that it outputs {RELATIVE_INVERSE_DEPTH}, but {METRIC_DEPTH} was given" in error


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [("--teacher.short_side", "96", "teacher.short_side"), ("--teacher.precision", "bf16", "teacher.precision"),
     ("--runtime.compile_teacher", "true", "runtime.compile_teacher")],
)
def test_settings_of_pytorch_teachers_are_refused_for_a_file(
    onnx_teacher: Path, scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str,
    named: str,
) -> None:
    assert label_with(onnx_teacher, scenes, tmp_path / "out", flag, value) == 2
    assert named in capsys.readouterr().err


def test_an_onnx_teacher_labels_distils_and_evaluates(onnx_teacher: Path, scenes: Path, tmp_path: Path) -> None:
    assert label_with(onnx_teacher, scenes, tmp_path / "shards") == 0
    metrics = distil_and_evaluate(tmp_path / "shards", scenes, tmp_path)
    assert metrics["count"] == 6 and np.isfinite(metrics["metrics"]["abs_rel"])
