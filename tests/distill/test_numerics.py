"""The numerics review's findings (issue 15): predictions enter the alignment as they are, the least-squares fit
is centred, evaluation and validation score one prediction the same way, and evaluation runs in fp32 by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.align import align_scale_shift, solve_scale_shift
from distill.deploy.model import DepthModel
from distill.deploy.runtime import autocast_dtype, resize_prediction
from distill.evaluation.evaluate import EvaluateConfig, evaluate_frames, main
from distill.evaluation.protocols import get_protocol, predicted_depth, valid_mask
from distill.metrics import batch_depth_metrics, inverse_depth_metrics
from distill.students import create_student, save_student
from distill.training.config import LossConfig
from distill.training.losses import build_loss
from shards.cli.errors import UserError
from shards.tools.nyu import DepthFrame
from shards.tools.scenes import render_scene
from tests.distill.conftest import tiny_student_config

SCENE = 3


def _depth(width: int = 640, height: int = 480) -> torch.Tensor:
    return torch.from_numpy(render_scene(SCENE, width, height).depth.astype(np.float32))


def test_a_relative_prediction_below_zero_enters_the_fit_unclamped() -> None:
    """Issue 15 item 1: 2 / depth - 0.6 is an exact affine map of inverse depth with a third of its pixels below 0;
    after the resize back and the alignment it scores as nearly perfect (clamped at 0 first: AbsRel 0.092)."""
    small = _depth(320, 240)

    def predict(images: torch.Tensor) -> torch.Tensor:
        return (2.0 / small - 0.6)[None].expand(images.shape[0], -1, -1)

    model = DepthModel("offset", "student", "relative_inverse_depth", 320, 240, predict)
    scene = render_scene(SCENE)
    frame = DepthFrame(image=scene.image, depth=scene.depth.astype(np.float32), index=0, name="scene")
    result = evaluate_frames(model, get_protocol("reference"), [frame], "cpu")
    assert float(result.metrics["abs_rel"][0]) < 0.025
    assert float(result.metrics["delta1"][0]) > 0.999
    assert float((result.raw < 0).float().mean()) > 0.3  # the raw prediction is the model's output, unclamped


def test_resize_prediction_clamps_only_what_is_non_negative_by_definition() -> None:
    relative = np.full((4, 4), -0.5, dtype=np.float32)
    relative[:, 2:] = 1.0
    resized = resize_prediction(relative, 8, 8)
    assert resized.min() < -0.5  # bicubic overshoot below the input is the kernel's, kept
    assert resize_prediction(np.abs(relative), 8, 8, non_negative=True).min() >= 0.0


@pytest.mark.parametrize("offset", [100.0, 24.0])
def test_a_large_offset_with_a_small_spread_is_fitted_not_called_constant(offset: float) -> None:
    """Issue 15 item 2: offset + 0.01 / depth in float32 (spread 3e-5 of the mean at offset 100) is an affine map of
    inverse depth; the uncentred test scored it as constant (scale 0, AbsRel 0.357 on this scene)."""
    depth = _depth()[None]
    prediction = (offset + 0.01 / depth).float()
    protocol = get_protocol("reference", crop=None)
    valid = valid_mask(protocol, depth)
    aligned, scale, _, _ = predicted_depth(protocol, prediction, "relative_inverse_depth", depth, valid)
    assert float(scale[0]) == pytest.approx(100.0, rel=1e-4)
    assert float(batch_depth_metrics(aligned, depth.double(), valid)["abs_rel"][0]) < 1e-3  # float32 rounding only
    validation = inverse_depth_metrics(prediction, torch.where(valid, 1.0 / depth, 0.0), valid, metric_label=True)
    assert float(validation["abs_rel"][0]) < 1e-3
    loss = build_loss(LossConfig(name="ssi_lsq", gradient_weight=0.0))
    parts = loss(prediction[:, None], (1.0 / depth)[:, None], valid[:, None])
    assert float(parts["ssi_mse"]) < 1e-4  # the training loss shares the solve (a constant map: ~0.5)


def test_a_constant_prediction_still_gets_scale_zero_and_the_best_constant() -> None:
    depth = _depth()[None]
    valid = depth > 0
    inverse = 1.0 / depth
    for value in (1.0, 100.0, 3e-4):
        scale, shift = solve_scale_shift(torch.full_like(depth, value), inverse, valid)
        assert float(scale[0]) == 0.0
        assert float(shift[0]) == pytest.approx(float(inverse[valid].double().mean()), rel=1e-6)
    # a constant map resized bicubically carries float32 noise only: still constant
    resized = torch.from_numpy(resize_prediction(np.ones((192, 256), np.float32), 640, 480))[None]
    assert float(solve_scale_shift(resized, inverse, valid)[0][0]) == 0.0


def test_invalid_pixels_never_reach_the_fit() -> None:
    depth = _depth()[None]
    valid = torch.zeros_like(depth, dtype=torch.bool)
    valid[:, 100:300, 100:400] = True
    prediction = torch.where(valid, 3.0 / depth + 2.0, torch.full_like(depth, float("nan")))
    target = torch.where(valid, 1.0 / depth, torch.full_like(depth, float("inf")))
    aligned = align_scale_shift(prediction, target, valid)
    assert torch.allclose(aligned[valid], target[valid], rtol=1e-5)


def test_evaluation_and_validation_score_one_prediction_alike() -> None:
    """One prediction and one ground truth under a matched protocol (every pixel in 0 < d < 10 m, no crop, the
    10 m cap, no lower clamp): the evaluation's protocol path and training validation give the same numbers (float64
    inputs, so that neither side's own rounding of 1 / depth shows)."""
    depth = torch.stack([_depth(160, 120), torch.from_numpy(render_scene(5, 160, 120).depth)]).double()
    generator = torch.Generator().manual_seed(0)
    prediction = 0.7 / depth - 0.2 + 0.05 * torch.randn(depth.shape, generator=generator)  # not exact: real error
    protocol = get_protocol("reference", crop=None)
    valid = valid_mask(protocol, depth)
    aligned, _, _, _ = predicted_depth(protocol, prediction, "relative_inverse_depth", depth, valid)
    evaluation = batch_depth_metrics(aligned, depth.double(), valid)
    validation = inverse_depth_metrics(
        prediction, torch.where(valid, 1.0 / depth, 0.0), valid, metric_label=True, depth_cap=protocol.depth_cap
    )
    assert float(evaluation["abs_rel"][0]) > 0.01  # a prediction with real error, so agreement means something
    for name, values in evaluation.items():
        torch.testing.assert_close(validation[name], values, rtol=1e-12, atol=1e-12, msg=name)


# ------------------------------------------------------------------------------------------------- precision


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = tiny_student_config()
    return save_student(create_student(config), config, tmp_path_factory.mktemp("student") / "student")


def _forward_precision(model: DepthModel) -> tuple[set[torch.dtype], bool]:
    """The dtypes the network's convolutions produced in one call, and whether any of them ran under autocast."""
    dtypes: set[torch.dtype] = set()
    autocast = []

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            dtypes.add(output.dtype)
            autocast.append(torch.is_autocast_enabled("cpu"))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        model.predict(torch.rand(1, 3, model.height, model.width))
    finally:
        handle.remove()
    assert autocast, "no convolution ran"
    return dtypes, any(autocast)


def test_evaluation_runs_students_in_fp32_unless_asked(student: Path) -> None:
    """Issue 15 item 3: no autocast on the default path, on any device (the CUDA default was bf16 autocast)."""
    evaluation_default = EvaluateConfig.precision  # what evaluate and compare run in unless asked
    model = DepthModel.from_pretrained(str(student), device="cpu", precision=evaluation_default)
    assert model.precision == "fp32" and _forward_precision(model) == ({torch.float32}, False)
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    assert autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16  # predict / benchmarks keep theirs
    asked = DepthModel.from_pretrained(str(student), device="cpu", precision="bf16")
    assert asked.precision == "bf16" and _forward_precision(asked) == ({torch.bfloat16}, True)


def test_the_report_states_the_precision(student: Path, tmp_path: Path) -> None:
    from shards.tools.scenes import write_scene_folder

    write_scene_folder(tmp_path / "scenes", 2, width=128, height=96)
    argv = ["--model", str(student), "--data", str(tmp_path / "scenes"), "--crop", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["precision"] == "fp32"
    assert "Precision: fp32." in (tmp_path / "out" / "table_row.md").read_text()
    assert main([*argv, "--out", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    assert json.loads((tmp_path / "bf16" / "metrics.json").read_text())["precision"] == "bf16"


def test_an_onnx_graph_cannot_be_asked_for_another_precision(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read")
    with pytest.raises(UserError, match="runs as exported"):
        DepthModel.from_pretrained(str(onnx), precision="bf16")
