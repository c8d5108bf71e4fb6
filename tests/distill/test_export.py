"""ONNX export: graph contract, parity with PyTorch (and a broken export tripping it), int8, and evaluation of the
exported model through ``distill.evaluate`` on generated scenes in the official NYU layout."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

import distill.students  # noqa: E402
from distill.deploy import export  # noqa: E402
from distill.deploy.model import load_runner  # noqa: E402
from distill.deploy.runtime import INPUT_NAME, OUTPUT_NAME, onnx_session  # noqa: E402
from distill.students import StudentConfig, create_student, save_student  # noqa: E402
from distill.training.config import DistillConfig  # noqa: E402
from shards.cli.config import load_config  # noqa: E402
from shards.tools.scenes import render_scene  # noqa: E402
from tests.distill.conftest import tiny_student_config  # noqa: E402

HEIGHT, WIDTH = 64, 96  # small, multiples of 32, not square (catches a swapped H / W)
RECIPES = Path(__file__).resolve().parents[2] / "configs" / "distill"


def recipe_student(name: str) -> StudentConfig:
    """The student of a recipe, randomly initialised (no download)."""
    return dataclasses.replace(load_config(DistillConfig, RECIPES / name).student, pretrained=False)


#: Students the export must handle: a tiny one (fast), the reference MobileNetV3-Large FastDepth, and the original
#: FastDepth architecture (MobileNet v1 encoder, nearest upsampling), all randomly initialised.
STUDENT_CONFIGS = {
    "tiny": lambda: tiny_student_config(),
    "reference": lambda: recipe_student("places365_fastdepth.yaml"),
    "fastdepth_original": lambda: recipe_student("fastdepth_original.yaml"),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ExportDiffers(nn.Module):
    """Computes one thing in PyTorch and another in the exported graph: what the parity check exists to catch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        inverse_depth = self.model(image)
        if torch.onnx.is_in_onnx_export():
            return inverse_depth * 1.01 + 0.01
        return inverse_depth


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = tiny_student_config()
    return save_student(create_student(config), config, tmp_path_factory.mktemp("student") / "tiny")


@pytest.mark.parametrize("name", list(STUDENT_CONFIGS))
def test_export_matches_pytorch_at_batch_1_and_3(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_student(STUDENT_CONFIGS[name]())
    path = export.export_onnx(model, tmp_path / f"{name}.onnx", height=HEIGHT, width=WIDTH)

    session = onnx_session(path, providers=["CPUExecutionProvider"], spinning=False)
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    assert isinstance(graph_input.shape[0], str) and graph_input.shape[1:] == [3, HEIGHT, WIDTH]  # dynamic batch
    (output,) = session.run(None, {INPUT_NAME: np.zeros((2, 3, HEIGHT, WIDTH), np.float32)})
    assert output.shape == (2, 1, HEIGHT, WIDTH)
    del session

    inputs = export.parity_inputs(HEIGHT, WIDTH)
    assert {"random", "scene"} <= set(inputs)
    report = export.check_parity(model, path, inputs)
    assert report.passed
    assert {case.batch for case in report.cases} == set(export.PARITY_BATCHES)
    assert {case.name for case in report.cases} == set(inputs)
    assert all(case.output_range > 0 for case in report.cases)  # a varying output, so the check means something


def test_parity_inputs_are_generated_unless_the_user_names_pictures(tmp_path: Path) -> None:
    assert set(export.parity_inputs(HEIGHT, WIDTH)) == {"random", "scene"}  # the same on every machine
    mine = tmp_path / "mine.png"
    Image.fromarray(render_scene(7, width=80, height=60).image).save(mine)
    inputs = export.parity_inputs(HEIGHT, WIDTH, pictures=[mine])
    assert len(inputs["pictures"]) >= max(export.PARITY_BATCHES) and inputs["pictures"][0].shape == (60, 80, 3)


def test_parity_holds_on_the_real_nyu_frame(real_sample: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_student(tiny_student_config())
    path = export.export_onnx(model, tmp_path / "tiny.onnx", height=HEIGHT, width=WIDTH)
    inputs = export.parity_inputs(HEIGHT, WIDTH, pictures=[real_sample / "rgb.png"])
    assert inputs["pictures"][0].shape == (224, 224, 3)  # the frame as the user's own picture
    assert export.check_parity(model, path, inputs).passed


def test_a_broken_export_trips_the_parity_check(tmp_path: Path) -> None:
    torch.manual_seed(0)
    broken = ExportDiffers(create_student(tiny_student_config()))
    path = export.export_onnx(broken, tmp_path / "broken.onnx", height=HEIGHT, width=WIDTH)
    with pytest.raises(export.ParityError, match="parity check FAILED"):
        export.check_parity(broken, path, export.parity_inputs(HEIGHT, WIDTH))
    report = export.check_parity(broken, path, export.parity_inputs(HEIGHT, WIDTH), raise_on_failure=False)
    assert not report.passed and report.worst.relative_difference > export.PARITY_TOLERANCE


def test_command_writes_the_model_and_its_report(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "student.onnx"
    argv = ["--model", str(tiny_folder), "--format", "onnx", "--out", str(out), "--size", "96x64"]
    assert export.main(argv) == 0
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["parity"]["passed"] and record["input"]["shape"] == ["batch", 3, HEIGHT, WIDTH]
    runner = load_runner(out)
    assert (runner.width, runner.height) == (WIDTH, HEIGHT)


def test_command_fails_loudly_and_hides_a_broken_export(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    load = distill.students.load_student

    def load_broken(folder: str, **options) -> tuple[nn.Module, StudentConfig]:
        model, config = load(folder, **options)
        return ExportDiffers(model), config

    monkeypatch.setattr(distill.students, "load_student", load_broken)
    out = tmp_path / "student.onnx"
    argv = ["--model", str(tiny_folder), "--out", str(out), "--size", "96x64"]
    assert export.main(argv) == 1
    assert "parity check FAILED" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "student.failed-parity.onnx").is_file()
    assert json.loads(Path(f"{out}.json").read_text())["parity"]["passed"] is False


@pytest.mark.parametrize("mode", export.INT8_MODES)
def test_int8_model_runs_and_stays_close_to_fp32(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    fp32 = export.export_onnx(create_student(tiny_student_config()), tmp_path / "fp32.onnx", HEIGHT, WIDTH)
    calibration = export.calibration_pictures(None, 4, WIDTH, HEIGHT)
    int8 = export.quantize_int8(fp32, tmp_path / "int8.onnx", mode=mode, calibration=calibration)
    (output,) = onnx_session(int8).run(None, {INPUT_NAME: np.random.rand(3, 3, HEIGHT, WIDTH).astype(np.float32)})
    assert output.shape == (3, 1, HEIGHT, WIDTH) and np.isfinite(output).all()
    change = export.compare_outputs(fp32, int8, export.parity_inputs(HEIGHT, WIDTH)["scene"])
    assert 0 < change["mean_relative_to_range"] < 0.1  # quantised (not identical), yet the same map
    assert not list(tmp_path.glob("*.prepared.onnx"))  # the intermediate file is cleaned up


def test_exported_models_evaluate_like_the_student(tiny_folder: Path, tmp_path: Path) -> None:
    """The fp32 export scores what the PyTorch student scores on NYU-layout files; int8 evaluates too."""
    from distill.evaluation import evaluate
    from shards.tools.scenes import render_scene
    from shards.tools.testing import write_nyu_labeled, write_nyu_splits

    scenes = [render_scene(seed, holes=True) for seed in range(3)]
    images = np.stack([scene.image for scene in scenes])
    depths = np.stack([np.where(scene.valid, scene.depth, 0.0) for scene in scenes]).astype(np.float32)
    labeled = write_nyu_labeled(tmp_path / "nyu_depth_v2_labeled.mat", images, depths, depths)
    splits = write_nyu_splits(tmp_path / "splits.mat", [1], [2, 3])
    out = tmp_path / "student.onnx"
    argv = ["--model", str(tiny_folder), "--out", str(out), "--size", "96x64", "--int8", "true"]
    assert export.main([*argv, "--count", "4"]) == 0

    metrics = {}
    for name, model in (("torch", tiny_folder), ("fp32", out), ("int8", tmp_path / "student.int8.onnx")):
        report = tmp_path / f"eval_{name}"
        data = ["--data", str(labeled), "--splits", str(splits), "--size", "96x64"]
        assert evaluate.main(["--model", str(model), *data, "--out", str(report)]) == 0
        record = json.loads((report / "metrics.json").read_text())
        assert record["count"] == 2
        metrics[name] = record["metrics"]
    for key in ("abs_rel", "rmse", "delta1"):
        assert metrics["fp32"][key] == pytest.approx(metrics["torch"][key], rel=1e-4, abs=1e-6)
        assert np.isfinite(metrics["int8"][key])


def test_command_gates_an_int8_onnx_on_validation_data(tiny_folder: Path, tmp_path: Path, capsys) -> None:
    """``--int8 true --validation DATA``: fp32 and int8 scored on DATA; above ``--max_abs_rel_drop`` exit 1 and the
    int8 file is renamed so that nothing ships it."""
    from shards.tools.scenes import write_scene_folder

    write_scene_folder(tmp_path / "val", count=3, seed=4000, width=128, height=96)
    argv = ["--model", str(tiny_folder), "--size", "96x64", "--int8", "true", "--validation", str(tmp_path / "val")]
    assert export.main([*argv, "--out", str(tmp_path / "ok" / "student.onnx")]) == 0
    gate = json.loads((tmp_path / "ok" / "student.onnx.json").read_text())["int8"]["gate"]
    assert gate["frames"] == 3 and gate["abs_rel_drop"] == pytest.approx(gate["abs_rel_int8"] - gate["abs_rel_fp32"])
    assert gate["passed"] == (gate["abs_rel_drop"] <= 0.005)
    bad = tmp_path / "bad" / "student.onnx"
    assert export.main([*argv, "--out", str(bad), "--max_abs_rel_drop", "-1"]) == 1
    assert "above the limit -1.0" in capsys.readouterr().err
    assert (bad.parent / "student.int8.failed-gate.onnx").is_file() and not (bad.parent / "student.int8.onnx").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # the default format with another format's ending: both fixes named
        (["--out", "x.tflite"], "--out x.tflite: --format onnx (the default) writes a .onnx file; give --format tflite "
                                "to write a .tflite file, or --out x.onnx"),
        (["--format", "tflite", "--out", "student.onnx"], "--format tflite writes a .tflite file; give --format onnx "
                                                          "to write a .onnx file, or --out student.tflite"),
        (["--out", "student"], "give --out student.onnx"),
        (["--format", "coreml", "--int8", "true", "--out", "s.mlpackage"], "Core ML files are converted in fp32"),
    ],
)
def test_command_names_a_wrong_format_request(
    tiny_folder: Path, tmp_path: Path, monkeypatch, capsys, options: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert export.main(["--model", str(tiny_folder), *options]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("format", "absent", "extra"),
    [
        ("tflite", "litert_torch", "export-litert"),  # the exporter's extra, not the interpreter's small `litert`
        ("onnx", "onnx", "export-onnx"),
        ("executorch", "executorch", "executorch"),
        ("coreml", "coremltools", "coreml"),
    ],
)
def test_a_format_without_its_toolchain_names_its_export_extra_before_any_file(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    format: str, absent: str, extra: str,
) -> None:
    """The toolchain is checked with the other inputs, so the one line comes before any file is written; the package
    is hidden here (None in ``sys.modules`` reads as not installed) so that the check runs where it is installed."""
    monkeypatch.setitem(sys.modules, absent, None)
    out = tmp_path / "out" / f"s{export.SUFFIXES[format]}"
    assert export.main(["--model", str(tiny_folder), "--format", format, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--format {format} needs {absent}" in err[0], err
    assert err[0].endswith(f"pip install 'depth-distill[{extra}]'")
    assert not out.parent.exists()


def test_int8_validation_that_cannot_be_scored_stops_before_any_file(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--validation photos/`` (pictures without depth): one line and exit 2 before the fp32 export, not an int8 file
    left behind after the export ran."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        Image.fromarray(render_scene(seed, width=96, height=64).image).save(photos / f"p{seed}.jpg")
    out = tmp_path / "out" / "s.onnx"
    argv = ["--model", str(tiny_folder), "--size", "96x64", "--int8", "true", "--validation", str(photos)]
    assert export.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m distill.export: error: --validation {photos} cannot be")
    assert "evaluate --data" in err[0] and "none of the forms" in err[0]
    assert not out.parent.exists() and not list(tmp_path.rglob("*.onnx*"))  # no s.onnx, no s.int8.onnx, no record


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--calibration", "no_such_folder", "no such folder"),
        ("--parity_image", "missing.jpg", "missing.jpg"),
        ("--int8_out", "s.int8.tflite", "--format onnx (the default) writes a .onnx file; give --int8_out s.int8.onnx"),
    ],
)
def test_every_export_input_is_checked_before_the_first_file(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    flag: str, value: str, message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["--model", str(tiny_folder), "--size", "96x64", "--int8", "true", "--out", "out/s.onnx", flag, value]
    assert export.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m distill.export: error: {flag}") and message in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("interruption", [RuntimeError("scoring crashed"), KeyboardInterrupt()])
def test_an_interrupted_gate_leaves_no_int8_file(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interruption: BaseException
) -> None:
    """The int8 file waits for its gate under another name: a gate that raises (or is interrupted) leaves no
    ``*.int8.onnx``, not even one an earlier run left there, and the fp32 file that passed parity stays."""
    from shards.tools.scenes import write_scene_folder

    write_scene_folder(tmp_path / "val", count=2, seed=4000, width=128, height=96)
    scored: list[Path] = []

    def interrupted(fp32_path: Path, int8_path: Path, *args, **kwargs) -> dict:
        scored.append(int8_path)
        assert int8_path.is_file() and not int8_path.name.endswith(".int8.onnx")
        raise interruption

    monkeypatch.setattr(export, "abs_rel_gate", interrupted)
    out = tmp_path / "out" / "s.onnx"
    out.parent.mkdir()
    (out.parent / "s.int8.onnx").write_bytes(b"an earlier run's int8 file")
    argv = ["--model", str(tiny_folder), "--size", "96x64", "--int8", "true", "--count", "2"]
    with pytest.raises(type(interruption)):
        export.main([*argv, "--validation", str(tmp_path / "val"), "--out", str(out)])
    assert scored == [out.parent / "s.int8.ungated.onnx"]
    assert sorted(path.name for path in out.parent.iterdir() if "int8" in path.name) == []
    assert out.is_file()
