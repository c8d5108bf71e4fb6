"""A published-style LiteRT file (uint8 RGB in, uint8 depth codes times a scale out) as the labelling teacher: its
labels are what the interpreter gives on the stretched crop, dequantised with the file's own scale, and a run with it
labels, distils and evaluates. The file says nothing of its kind, so ``--teacher.kind`` is required."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.deploy.export import export
from distill.students import load_student
from shards.format import RELATIVE_INVERSE_DEPTH
from shards.tools.scenes import write_scene_folder
from tests.deploy_runtimes.conftest import SIZE, needs
from tests.pseudolabel.file_teacher_checks import check_labels_are_the_files_output, distil_and_evaluate, label_with


@needs("tflite")
def test_a_uint8_tflite_teacher_labels_distils_and_evaluates(
    student: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from tests.deploy_runtimes.uint8_model import to_uint8_io

    model, _ = load_student(student)
    record = export(model, "tflite", tmp_path / "student.tflite", height=SIZE[1], width=SIZE[0], int8=True)
    teacher = to_uint8_io(Path(record["int8"]["file"]), tmp_path / "published.tflite")
    scenes = tmp_path / "scenes"
    write_scene_folder(scenes, count=6, seed=60, width=160, height=120)

    assert label_with(teacher, scenes, tmp_path / "refused") == 2  # a file from elsewhere: its kind is unknown
    assert "teacher.kind" in capsys.readouterr().err
    assert label_with(teacher, scenes, tmp_path / "shards", "--teacher.kind", RELATIVE_INVERSE_DEPTH) == 0

    interpreter = Interpreter(model_path=str(teacher))
    interpreter.allocate_tensors()
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.uint8 and taken["dtype"] == np.uint8

    def file_output(batch: np.ndarray) -> np.ndarray:
        """float (1, 3, h, w) in [0, 1] -> the raw pixels the file takes -> its codes times its scale."""
        interpreter.set_tensor(given["index"], np.rint(batch * 255).astype(np.uint8))
        interpreter.invoke()
        scale, zero_point = taken["quantization"]
        return (scale * (interpreter.get_tensor(taken["index"]).astype(np.float32) - zero_point))[0, 0]

    assert check_labels_are_the_files_output(tmp_path / "shards", scenes, file_output, SIZE) == 6
    metrics = distil_and_evaluate(tmp_path / "shards", scenes, tmp_path)
    assert metrics["count"] == 6 and np.isfinite(metrics["metrics"]["abs_rel"])
