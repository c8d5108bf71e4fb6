"""Running an exported file needs only its runtime: without it, the commands name the runtime's small extra
(``onnx``, ``litert``, ``executorch``), never the exporter's (``export-onnx``, ``export-litert``)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from distill.deploy import predict  # noqa: E402
from distill.deploy.export import export_onnx  # noqa: E402
from distill.evaluation import evaluate  # noqa: E402
from distill.students import create_student  # noqa: E402
from shards.tools.scenes import render_scene, write_scene_folder  # noqa: E402
from tests.distill.conftest import tiny_student_config  # noqa: E402

#: suffix -> (the runtime's modules, hidden as not installed, and the extra the message must name)
RUNTIMES = {
    ".onnx": (("onnxruntime",), "onnx"),
    ".tflite": (("ai_edge_litert", "ai_edge_litert.interpreter"), "litert"),
    ".pte": (("executorch", "executorch.runtime"), "executorch"),
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real tiny .onnx; the .tflite and .pte stand-ins are never read (the runtime is imported before the file is
    opened), and this environment may have no exporter for them."""
    folder = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    files = {".onnx": export_onnx(create_student(tiny_student_config()), folder / "s.onnx", height=64, width=96)}
    for suffix in (".tflite", ".pte"):
        files[suffix] = folder / f"s{suffix}"
        files[suffix].write_bytes(b"not read: the runtime is missing")
    return files


def _hide(monkeypatch: pytest.MonkeyPatch, modules: tuple[str, ...]) -> None:
    for module in modules:  # None in sys.modules: ``import module`` raises ImportError, as when it is not installed
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("suffix", list(RUNTIMES))
def test_predict_without_the_runtime_names_the_small_extra(
    suffix: str, model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    modules, extra = RUNTIMES[suffix]
    _hide(monkeypatch, modules)
    picture = tmp_path / "room.png"
    Image.fromarray(render_scene(1, width=96, height=64).image).save(picture)
    assert predict.main(["--model", str(model_files[suffix]), str(picture), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m distill.predict: error: --model {model_files[suffix]}")
    assert err[0].count("pip install") == 1 and f"pip install 'depth-distill[{extra}]'" in err[0], err
    assert "export-" not in err[0]


def test_evaluate_without_litert_names_the_small_extra(
    model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _hide(monkeypatch, RUNTIMES[".tflite"][0])
    write_scene_folder(tmp_path / "val", count=1, seed=5, width=96, height=64)
    argv = ["--model", str(model_files[".tflite"]), "--data", str(tmp_path / "val"), "--out", str(tmp_path / "rep")]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'depth-distill[litert]' (ai-edge-litert)" in err and "export-litert" not in err
