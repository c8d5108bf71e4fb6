"""A teacher's row in ``distill.evaluate`` is the teacher's own inference: the whole 480x640 frame at the family's
own settings, its map resized once to the frame's size, as its authors run it (docs/evaluation.md, "A teacher's
row"); checked against the authors' reference written in tests/pseudolabel/references.py, and against the old path
(the frame resized to 512x384 and rounded to uint8 first, the map resized twice), which it must not be."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.evaluation.evaluate import main
from shards.tools.scenes import render_scene
from shards.tools.testing import write_nyu_labeled, write_nyu_splits
from tests.pseudolabel.references import (
    depth_anything_input,
    depth_anything_reference,
    dpt_processor,
)

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def nyu(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two generated 640x480 scenes in the official files; the test split is the first."""
    folder = tmp_path_factory.mktemp("nyu")
    scenes = [render_scene(seed, holes=True) for seed in range(2)]
    images = np.stack([scene.image for scene in scenes])
    depths = np.stack([render_scene(seed).depth for seed in range(2)])
    raw = np.stack([np.where(scene.valid, scene.depth, 0.0) for scene in scenes]).astype(np.float32)
    labeled = write_nyu_labeled(folder / "nyu_depth_v2_labeled.mat", images, depths, raw)
    splits = write_nyu_splits(folder / "splits.mat", [2], [1])
    return {"labeled": str(labeled), "splits": str(splits), "frame": images[0]}


def _teacher_row(folder: Path, nyu: dict, out: Path) -> tuple[dict, np.ndarray]:
    argv = ["--model", str(folder), "--data", nyu["labeled"], "--splits", nyu["splits"], "--out", str(out),
            "--save_predictions", "true", "--precision", "fp32"]
    assert main(argv) == 0
    with np.load(out / "predictions.npz") as saved:
        assert str(saved["resize"]).startswith("teacher: ")
        return json.loads((out / "metrics.json").read_text()), saved["predictions"][0]


def _varied_depth_anything(folder: Path) -> torch.nn.Module:
    """The tiny Depth Anything with its last bias raised past the ReLU's zero: a map that varies everywhere."""
    from pseudolabel.tiny_teacher import build_tiny_teacher, save_teacher

    model = build_tiny_teacher("depth_anything")
    with torch.no_grad():
        model.head.conv3.bias.add_(250.0)
    save_teacher(model, folder)
    return model


def _old_depth_anything_path(model: torch.nn.Module, frame: np.ndarray) -> np.ndarray:
    """What the row was: the frame resized to 512x384 (bicubic) and rounded to uint8, the teacher at short side 384
    (378x504, bicubic antialiased), its map resized bicubically to 512x384 and clamped, then again to 640x480."""
    pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    crop = F.interpolate(pixels, (384, 512), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    crop = (crop * 255).round() / 255
    network = F.interpolate(crop, (378, 504), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        depth = model(pixel_values=(network - mean) / std).predicted_depth[:, None]
    depth = F.interpolate(depth, (384, 512), mode="bicubic", align_corners=False).clamp(min=0)
    return F.interpolate(depth, (480, 640), mode="bicubic", align_corners=False)[0, 0].numpy()


def test_a_depth_anything_row_is_infer_image_on_the_whole_frame(nyu: dict, tmp_path: Path) -> None:
    model = _varied_depth_anything(tmp_path / "depth_anything")
    record, prediction = _teacher_row(tmp_path / "depth_anything", nyu, tmp_path / "out")
    assert record["model"]["input_size"] is None and record["model"]["teacher"]["size"] == 518
    assert record["resize"] == {"input": "teacher: cv2_cubic", "output": "teacher: bilinear_align_corners"}
    assert "| own (lower_bound 518, /14) |" in (tmp_path / "out" / "table_row.md").read_text()
    frame = nyu["frame"]
    assert depth_anything_input(frame).shape == (1, 3, 518, 686)  # the whole 640x480 frame at the lower bound 518
    reference = depth_anything_reference(model, frame)
    span = float(np.ptp(reference))
    assert prediction.shape == reference.shape == (480, 640)
    assert np.abs(prediction - reference).max() < 1e-4 * span  # OpenCV's and torch's cubic agree to ~0.005 grey
    old = _old_depth_anything_path(model, frame)
    assert np.abs(old - reference).max() > 0.05 * span, "the old 512x384 path must not pass for the reference"


def test_a_dpt_row_is_the_processor_on_the_whole_frame(nyu: dict, tmp_path: Path) -> None:
    """DPT: transformers' processor on the whole frame (640x480 -> 512x384, uint8 bicubic), the network, its map
    resized bicubically once to 640x480. The network forward is the grid-aware one the teacher runs (equal to
    transformers' own where that one runs: tests/pseudolabel/test_dpt_grid.py); the input and output around it are
    the processor's."""
    from transformers.modeling_outputs import DepthEstimatorOutput

    from pseudolabel.teachers import dpt_depth
    from pseudolabel.tiny_teacher import build_tiny_teacher, save_teacher

    model = build_tiny_teacher("dpt")
    save_teacher(model, tmp_path / "dpt")
    record, prediction = _teacher_row(tmp_path / "dpt", nyu, tmp_path / "out")
    assert record["resize"]["output"] == "teacher: bicubic" and record["model"]["teacher"]["family"] == "dpt"
    pixels = dpt_processor()(images=nyu["frame"], return_tensors="pt").pixel_values  # the uint8 frame, whole
    assert tuple(pixels.shape) == (1, 3, 384, 512)
    processor = dpt_processor()
    with torch.no_grad():
        outputs = DepthEstimatorOutput(predicted_depth=dpt_depth(model, pixels))
    reference = processor.post_process_depth_estimation(outputs, target_sizes=[(480, 640)])[0]["predicted_depth"]
    reference = reference.numpy()
    assert np.abs(prediction - reference).max() < 1e-4 * float(np.ptp(reference))
