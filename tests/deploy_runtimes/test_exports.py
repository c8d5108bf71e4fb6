"""Every export format whose runtime runs here: fp32 parity against PyTorch, int8 with its accuracy gate, the
exported files loaded back by ``DepthModel`` and ``evaluate``, and a published-style uint8 TFLite model scored with
the file's own scaling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill import DepthModel
from distill.deploy.export import EXPORT_PARITY_TOLERANCE, MAX_ABS_REL_DROP, SUFFIXES, GateError, export
from distill.deploy.model import load_runner
from distill.deploy.runtime import images_to_batch
from distill.evaluation.evaluate import evaluate
from distill.evaluation.protocols import get_protocol, resize_images
from distill.students import load_student
from shards.tools.rgbd import DepthFolder
from shards.tools.scenes import render_scene
from tests.deploy_runtimes.conftest import SIZE, needs

WIDTH, HEIGHT = SIZE
RUNNABLE = [pytest.param(f, marks=needs(f)) for f in ("onnx", "tflite", "executorch")]


def _export(student: Path, format: str, folder: Path, **options) -> dict:
    model, _ = load_student(student)
    return export(model, format, folder / f"student{SUFFIXES[format]}", height=HEIGHT, width=WIDTH, **options)


@pytest.mark.parametrize("format", RUNNABLE)
def test_fp32_export_matches_pytorch_and_loads_back(student: Path, format: str, tmp_path: Path) -> None:
    record = _export(student, format, tmp_path)
    parity = record["parity"]
    assert parity["passed"] and {case["name"] for case in parity["cases"]} >= {"random", "scene"}
    assert max(case["relative_difference"] for case in parity["cases"]) < EXPORT_PARITY_TOLERANCE
    exported = DepthModel.from_pretrained(record["file"])
    assert (exported.width, exported.height, exported.kind) == (WIDTH, HEIGHT, "relative_inverse_depth")
    picture = render_scene(77, width=150, height=110).image
    from_file = exported.predict(picture).values
    from_folder = DepthModel.from_pretrained(student, input_size=SIZE).predict(picture).values
    assert from_file.shape == (110, 150)
    assert np.abs(from_file - from_folder).max() < EXPORT_PARITY_TOLERANCE * np.ptp(from_folder)


@pytest.mark.parametrize("format", RUNNABLE)
def test_int8_export_reports_its_abs_rel_drop_within_the_gate(
    student: Path, held_out_scenes: Path, format: str, tmp_path: Path
) -> None:
    record = _export(student, format, tmp_path, int8=True, validation=str(held_out_scenes))
    gate = record["int8"]["gate"]
    assert gate["frames"] == 8 and gate["protocol"].startswith("reference")
    assert gate["abs_rel_drop"] == pytest.approx(gate["abs_rel_int8"] - gate["abs_rel_fp32"])
    print(f"{format} int8: ΔAbsRel {gate['abs_rel_drop']:+.4f} (fp32 {gate['abs_rel_fp32']:.4f})")
    assert gate["passed"] and gate["abs_rel_drop"] <= MAX_ABS_REL_DROP
    int8 = DepthModel.from_pretrained(record["int8"]["file"])
    assert int8.predict(render_scene(3, width=100, height=80).image).values.shape == (80, 100)


@needs("onnx")
def test_an_int8_model_over_the_limit_fails_and_is_set_aside(
    student: Path, held_out_scenes: Path, tmp_path: Path
) -> None:
    with pytest.raises(GateError, match="above the limit"):
        _export(student, "onnx", tmp_path, int8=True, validation=str(held_out_scenes), max_abs_rel_drop=-1.0)
    assert not (tmp_path / "student.int8.onnx").exists()
    assert (tmp_path / "student.int8.failed-gate.onnx").is_file()


@needs("coreml")
def test_coreml_converts_and_says_why_parity_is_not_checked(student: Path, tmp_path: Path) -> None:
    record = _export(student, "coreml", tmp_path)
    assert Path(record["file"]).is_dir() and record["parity"]["runtime"] == "coreml"
    if sys.platform != "darwin":
        assert "macOS" in record["parity"]["note"] and not record["parity"]["cases"]


@needs("tflite")
def test_a_uint8_tflite_model_is_scored_with_the_files_own_scaling(
    student: Path, held_out_scenes: Path, tmp_path: Path
) -> None:
    """uint8 RGB in, uint8 depth out with a scale and zero point: ``load_runner`` and ``evaluate`` give exactly
    what the interpreter gives on the raw pixels, dequantised with the file's output scale."""
    from ai_edge_litert.interpreter import Interpreter

    from tests.deploy_runtimes.uint8_model import to_uint8_io

    record = _export(student, "tflite", tmp_path, int8=True)
    path = to_uint8_io(Path(record["int8"]["file"]), tmp_path / "published.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.uint8 and taken["dtype"] == np.uint8 and taken["quantization"][0] > 0

    def direct(pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) at the model's size -> the file's output, dequantised with its scale and zero point."""
        interpreter.set_tensor(given["index"], np.ascontiguousarray(pixels.transpose(2, 0, 1)[None]))
        interpreter.invoke()
        scale, zero_point = taken["quantization"]
        codes = interpreter.get_tensor(taken["index"]).astype(np.float32)
        return (scale * (codes - zero_point)).reshape(HEIGHT, WIDTH)

    def resized(picture: np.ndarray) -> np.ndarray:  # the PIL resize of predict and the runners
        return np.asarray(Image.fromarray(picture).resize((WIDTH, HEIGHT), Image.BICUBIC))

    pictures = [render_scene(seed, width=128, height=96).image for seed in (11, 12)]
    runner = load_runner(path)
    assert (runner.width, runner.height) == (WIDTH, HEIGHT)
    batch = runner(images_to_batch(pictures, WIDTH, HEIGHT))
    for picture, values in zip(pictures, batch):
        np.testing.assert_array_equal(values, direct(resized(picture)))
    assert np.ptp(batch) > 0  # the codes vary: the scaling is not trivially right

    # evaluate resizes with its protocol (torch bicubic on floats), so the interpreter gets those pixels
    protocol = get_protocol("reference", crop=None)
    source = DepthFolder(str(held_out_scenes), depth_scale=1000.0, limit=2)
    out = tmp_path / "evaluate"
    evaluate(DepthModel.from_pretrained(str(path)), source, protocol, out, save_predictions=True)
    saved = np.load(out / "predictions.npz")["predictions"]
    for index in range(2):
        image = torch.from_numpy(source[index].image).permute(2, 0, 1)[None].float() / 255.0
        floats = resize_images(image, HEIGHT, WIDTH, protocol.input_resize).clamp(0.0, 1.0)[0]
        pixels = np.rint(floats.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        expected = torch.from_numpy(direct(pixels))[None, None]
        expected = resize_images(expected, 96, 128, protocol.output_resize)[0, 0].numpy()  # relative: not clamped
        np.testing.assert_allclose(saved[index], expected, rtol=1e-5, atol=1e-6)


@needs("tflite")
def test_the_export_command_writes_a_gated_int8_tflite(
    student: Path, held_out_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``python -m distill.export --format tflite --int8 true --validation DATA``: exit 0 with the gate's record,
    exit 1 and the int8 file set aside when the limit is exceeded."""
    import json

    from distill.deploy.export import main

    argv = ["--model", str(student), "--format", "tflite", "--size", f"{WIDTH}x{HEIGHT}", "--int8", "true",
            "--validation", str(held_out_scenes)]
    assert main([*argv, "--out", str(tmp_path / "ok" / "student.tflite")]) == 0
    record = json.loads((tmp_path / "ok" / "student.tflite.json").read_text())
    assert record["parity"]["passed"] and record["int8"]["gate"]["passed"]
    assert "ΔAbsRel" in capsys.readouterr().out
    assert DepthModel.from_pretrained(tmp_path / "ok" / "student.int8.tflite").width == WIDTH
    failing = [*argv, "--out", str(tmp_path / "bad" / "student.tflite"), "--max_abs_rel_drop", "-1"]
    assert main(failing) == 1
    assert "above the limit" in capsys.readouterr().err
    assert (tmp_path / "bad" / "student.int8.failed-gate.tflite").is_file()
    assert not (tmp_path / "bad" / "student.int8.tflite").exists()


@needs("tflite")
def test_litert_int8_keeps_the_sums_and_hard_swish_in_fp32(tmp_path: Path) -> None:
    """The measured LiteRT rules (``distill.deploy.litert.FLOAT_OPS``) on the reference recipe's architecture
    (MobileNetV3-Large FastDepth, random weights: which op computes in which type does not depend on them), where
    both occur: every ADD and HARD_SWISH of the int8 file computes in float32, every convolution in int8."""
    import dataclasses

    from ai_edge_litert.interpreter import Interpreter

    from distill.deploy.litert import FLOAT_OPS
    from distill.students import create_student
    from distill.training.config import DistillConfig
    from shards.cli.config import load_config

    recipe = Path(__file__).resolve().parents[2] / "configs" / "distill" / "places365_fastdepth.yaml"
    config = dataclasses.replace(load_config(DistillConfig, recipe).student, pretrained=False, pretrained_file=None)
    torch.manual_seed(0)
    model = create_student(config).eval()
    record = export(model, "tflite", tmp_path / "student.tflite", height=HEIGHT, width=WIDTH, int8=True,
                    calibration_count=2)
    interpreter = Interpreter(model_path=record["int8"]["file"])
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in interpreter.get_tensor_details()}
    computed_in: dict[str, set] = {}
    for op in interpreter._get_ops_details():
        computed_in.setdefault(op["op_name"], set()).add(dtypes[op["outputs"][0]])
    assert set(FLOAT_OPS) == {"ADD", "HARD_SWISH"}
    for name in FLOAT_OPS:
        assert computed_in.get(name) == {np.float32}, name
    assert computed_in["CONV_2D"] == {np.int8}
    assert computed_in["DEPTHWISE_CONV_2D"] == {np.int8}
