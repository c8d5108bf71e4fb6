"""Issue 24, evaluation side: no silent wrong score, no lost report.

- A model that outputs metres, read as relative inverse depth, fits a negative scale; evaluate and compare hold the
  scale at >= 0, so such frames score as the best constant, and the report and stderr count them.
- A depth scale that makes a folder's depth implausible is refused naming the scale used and the ones that fit.
- ``--out`` that already holds files is refused before any model is loaded, unless ``--overwrite true``.

The metres model is an ONNX graph that reads depth off pictures whose grey level is depth / 10 m, so its output is
the frame's depth (up to the grey level's 4 cm steps and the resizes): a metric model whose right reading is known.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.deploy.export import export_onnx
from distill.evaluation import compare
from distill.evaluation import evaluate as evaluation
from shards.tools.scenes import render_scene, write_scene_folder

SIZE = (128, 96)
FRAMES = 3
GREY_METRES = 10.0  # grey level 255 = 10 m
NOTE = f"{FRAMES} of {FRAMES} frames fit a negative scale: the output looks like depth, not inverse depth; see --kind"


class GreyMetres(torch.nn.Module):
    """A 'metric model' for pictures whose grey level is depth: outputs metres, (B, 1, H, W)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return GREY_METRES * image.mean(1, keepdim=True)


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rgb/ + depth/ (16-bit millimetres) of generated scenes; each picture's grey level is its depth / 10 m."""
    folder = tmp_path_factory.mktemp("grey")
    (folder / "rgb").mkdir()
    (folder / "depth").mkdir()
    for seed in range(FRAMES):
        depth = render_scene(seed, *SIZE).depth
        grey = np.rint(np.clip(depth / GREY_METRES, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / "rgb" / f"f{seed}.png")
        Image.fromarray(np.rint(depth * 1000).astype(np.uint16)).save(folder / "depth" / f"f{seed}.png")
    return folder


@pytest.fixture(scope="module")
def metres_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(GreyMetres(), tmp_path_factory.mktemp("model") / "metres.onnx", height=SIZE[1], width=SIZE[0])


def _evaluate(model: str | Path, data: Path, out: Path, *extra: str) -> dict:
    argv = ["--model", str(model), "--data", str(data), "--crop", "none", "--out", str(out), *extra]
    assert evaluation.main([*argv, "--size", f"{SIZE[0]}x{SIZE[1]}"] if model == "constant" else argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings logged (the command's logging writes them to stderr, one line each; pytest captures them)."""
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


def test_metres_read_as_inverse_depth_score_as_a_constant_and_are_counted(
    metres_onnx: Path, grey_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every frame fitted a negative scale and scored better than a constant, silently."""
    constant = _evaluate("constant", grey_folder, tmp_path / "constant")
    wrong = _evaluate(metres_onnx, grey_folder, tmp_path / "wrong")  # kind not given: inverse depth assumed
    assumed, negative = _warnings(caplog)  # the file says nothing of its kind: the assumption is said, then its result
    assert "does not say what it outputs" in assumed and assumed.endswith("assuming relative_inverse_depth")
    assert negative == f"onnx:metres.onnx: {NOTE}"
    caplog.clear()
    assert wrong["negative_scale_frames"] == FRAMES and wrong["count"] == FRAMES
    assert constant["negative_scale_frames"] == 0  # a constant's zero scale is not a negative one
    for name, value in constant["metrics"].items():
        assert wrong["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    with open(tmp_path / "wrong" / "per_image.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(float(row["scale"]), row["negative_scale"]) for row in rows] == [(0.0, "True")] * FRAMES
    for kind_args in (["--kind", "metric_depth"], ["--kind", "metric_depth", "--protocol", "reference"]):
        right = _evaluate(metres_onnx, grey_folder, tmp_path / "_".join(kind_args), *kind_args)
        assert right["negative_scale_frames"] == 0
        assert right["metrics"]["abs_rel"] < 0.05 < constant["metrics"]["abs_rel"]
    assert not any(NOTE in line for line in _warnings(caplog))


def test_compare_counts_negative_scale_frames(metres_onnx: Path, grey_folder: Path, tmp_path: Path) -> None:
    argv = ["--model", "constant", "--model", str(metres_onnx), "--data", str(grey_folder), "--latency", "false"]
    argv += ["--size", f"{SIZE[0]}x{SIZE[1]}", "--picture_frames", "0", "--out", str(tmp_path)]
    assert compare.main(argv) == 0
    record = json.loads((tmp_path / "compare.json").read_text())
    constant, metres = (model["results"][grey_folder.name] for model in record["models"])
    assert (constant["negative_scale_frames"], metres["negative_scale_frames"]) == (0, FRAMES)
    assert metres["metrics"]["abs_rel"] == pytest.approx(constant["metrics"]["abs_rel"], rel=1e-9)
    assert f"- metres.onnx on {grey_folder.name}: {NOTE}" in (tmp_path / "compare.md").read_text()


def test_a_depth_scale_that_makes_depth_implausible_names_the_ones_that_fit(tmp_path: Path, capsys) -> None:
    """Millimetres read with --depth_scale 1 (kilometres) or, close up, with tum (centimetres): one line with the
    scale used, its median and each named scale that fits. Float depth (metres by definition) gets no such hint."""
    write_scene_folder(tmp_path / "mm", count=2, width=SIZE[0], height=SIZE[1])
    codes = np.asarray(Image.open(tmp_path / "mm" / "depth" / "scene_000000.png"))
    median = float(np.median(codes[codes > 0]))
    argv = ["--model", "constant", "--data", str(tmp_path / "mm"), "--crop", "none", "--out", str(tmp_path / "out")]
    assert evaluation.main([*argv, "--depth_scale", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"median valid depth {median:.3g} m with --depth_scale 1;" in err
    assert f"1000 (arkitscenes, mm) {median / 1000:.3g} m" in err

    near = tmp_path / "near"  # a table top: 1/8 of the scenes' depth, in millimetres
    write_scene_folder(near, count=1, width=SIZE[0], height=SIZE[1])
    path = near / "depth" / "scene_000000.png"
    Image.fromarray((np.asarray(Image.open(path)) // 8).astype(np.uint16)).save(path)
    argv = ["--model", "constant", "--data", str(near), "--crop", "none", "--out", str(tmp_path / "out")]
    assert evaluation.main([*argv, "--depth_scale", "tum"]) == 2
    err = capsys.readouterr().err
    assert "with --depth_scale 5000;" in err and "1000 (arkitscenes, mm) " in err

    np.save(near / "depth" / "scene_000000.npy", np.asarray(Image.open(path), dtype=np.float32))  # mm as "metres"
    path.unlink()
    assert evaluation.main([*argv, "--depth_scale", "tum"]) == 2
    err = capsys.readouterr().err
    assert "looks like millimetres" in err and "with --depth_scale" not in err
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_filled_out_before_loading_the_model(grey_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    _evaluate("constant", grey_folder, out, "--save_predictions", "true")
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    argv = ["--model", "no/such_model", "--data", str(grey_folder), "--crop", "none", "--out", str(out)]
    assert evaluation.main(argv) == 2  # refused before the (missing) model is looked at
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {out} already holds best_median_worst.png, config.yaml" in err
    assert "pass --overwrite true" in err and (out / "metrics.json").read_text() == before
    again = _evaluate("constant", grey_folder, out, "--overwrite", "true", "--limit", "1")
    assert again["count"] == 1 and not (out / "predictions.npz").exists()  # the earlier run's file is gone


def test_compare_refuses_a_filled_out_and_overwrites_its_own(grey_folder: Path, tmp_path: Path, capsys) -> None:
    argv = ["--model", "constant", "--data", str(grey_folder), "--latency", "false", "--size", "128x96"]
    argv += ["--picture_frames", "1", "--out", str(tmp_path)]
    assert compare.main(argv) == 0
    capsys.readouterr()
    assert compare.main([*argv, "--model", "no/such_model"]) == 2  # refused before any model is loaded
    assert f"--out {tmp_path} already holds compare.json, compare.md" in capsys.readouterr().err
    assert compare.main([*argv, "--overwrite", "true", "--limit", "1", "--picture_frames", "0"]) == 0
    record = json.loads((tmp_path / "compare.json").read_text())
    assert record["datasets"][0]["count"] == 1 and not (tmp_path / "compare.png").exists()
    report = json.loads((tmp_path / "reports" / "constant" / grey_folder.name / "metrics.json").read_text())
    assert report["count"] == 1  # compare's own evaluation wrote over its earlier cell
