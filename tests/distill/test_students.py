"""Every student architecture and every recipe config: builds, trains, saves, exports, and refuses what it cannot do.

The architecture tests run each family at its real size (no ImageNet weights: random init, as offline) at the
student's 256x192 and at another size divisible by 32; the recipe tests train every file of configs/distill for
three steps on tiny shards through the real command.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchvision

from distill.cli import main as distill_main
from distill.deploy.export import check_parity, export_onnx, parity_inputs
from distill.students import (
    ARCHITECTURES,
    StudentConfig,
    create_student,
    load_student,
    read_student_config,
    save_student,
)
from distill.training.config import DistillConfig, LossConfig
from distill.training.losses import build_loss
from shards.cli.config import load_config
from tests.distill.conftest import torch_threads

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "configs" / "distill").glob("*.yaml"))


def _config(architecture: str, **overrides) -> StudentConfig:
    return StudentConfig(architecture=architecture, pretrained=False, **overrides)


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    with torch_threads(2):
        yield


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("height, width", [(192, 256), (160, 224)])
def test_every_architecture_runs_forward_and_backward(architecture: str, height: int, width: int) -> None:
    torch.manual_seed(0)
    model = create_student(_config(architecture)).train()
    images = torch.rand(2, 3, height, width)
    out = model(images)
    assert out.shape == (2, 1, height, width) and bool(torch.isfinite(out).all())
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0.0
    if ARCHITECTURES[architecture].output_activation == "softplus":
        assert float(out.min()) >= 0.0


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_saves_loads_and_exports_with_parity(architecture: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_student(_config(architecture)).eval()
    folder = save_student(model, _config(architecture), tmp_path / "student")
    record = json.loads((folder / "config.json").read_text())
    assert record["architecture"] == architecture and record["upsample"] in ("bilinear", "nearest")  # resolved
    loaded, config = load_student(folder)
    images = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    onnx_path = export_onnx(loaded, tmp_path / "student.onnx", height=96, width=128)
    report = check_parity(loaded, onnx_path, parity_inputs(96, 128))
    assert report.passed


def test_architectures_differ_as_described() -> None:
    """Sizes that only the described structure gives: ResNet-18 + decoder, DeepLabv3-R50, RT-MonoDepth > its S."""
    params = {
        name: sum(p.numel() for p in create_student(_config(name)).parameters()) for name in sorted(ARCHITECTURES)
    }
    assert 11e6 < params["resnet_additive"] < 16e6  # ResNet-18 (11.2M without fc) + a light decoder
    assert 38e6 < params["deeplabv3"] < 42e6  # torchvision deeplabv3_resnet50 with a 1-class head: 39.6M
    assert params["rt_monodepth_s"] < params["rt_monodepth"] < 3e6  # the paper's real-time models are ~1-3M
    resnet = create_student(_config("resnet_additive"))
    assert [m[0].in_channels for m in resnet.laterals] == [512, 256, 128, 64, 64]  # coarsest level first
    small = create_student(_config("rt_monodepth_s"))
    assert small.stem[0].kernel_size == (7, 7) and not small.fuse


def test_rt_monodepth_fuses_encoder_features() -> None:
    """The full model adds the stride-8 and stride-4 features and concatenates the stride-2 one (the refine conv
    at stride 2 is wider by the stem's 64 channels); the small one fuses none."""
    full, small = create_student(_config("rt_monodepth")), create_student(_config("rt_monodepth_s"))
    assert full.fuse and not small.fuse
    assert full.refine[2][1].in_channels == 32 + 64 and small.refine[2][1].in_channels == 32
    torch.manual_seed(0)
    images = torch.rand(1, 3, 64, 64)
    features = {}
    full.stem.register_forward_hook(lambda module, args, out: features.setdefault("stem", out))
    with torch.no_grad():
        full.eval()(images)
    assert features["stem"].shape == (1, 64, 32, 32)  # stride 2


def test_coarse_head_gives_a_coarse_map_and_a_loss_term() -> None:
    torch.manual_seed(0)
    model = create_student(_config("rt_monodepth", coarse_head=True))
    images = torch.rand(2, 3, 64, 96)
    prediction, aux = model(images, return_aux=True)
    assert aux["coarse"].shape == (2, 1, 4, 6)  # the stride-16 bottleneck
    assert torch.equal(model(images), prediction)  # the plain call is the exported one: no aux
    target = torch.rand(2, 1, 64, 96) + 0.5
    valid = torch.ones_like(target, dtype=torch.bool)
    with_coarse = build_loss(LossConfig(name="l1", coarse_weight=0.5))(prediction, target, valid, aux=aux)
    without = build_loss(LossConfig(name="l1"))(prediction, target, valid)
    assert float(with_coarse["loss"]) == pytest.approx(float(without["loss"]) + 0.5 * float(with_coarse["coarse"]))
    with_coarse["loss"].backward()
    assert float(model.coarse.weight.grad.abs().sum()) > 0.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(architecture="rt_monodepth", pretrained=True), "no ImageNet encoder"),
        (dict(architecture="rt_monodepth", encoder="resnet18"), "does not apply"),
        (dict(architecture="fastdepth", coarse_head=True), "coarse_head"),
        (dict(architecture="deeplabv3", encoder="mobilenetv3_large_100"), "resnet50"),
        (dict(architecture="deeplabv3", decoder_widths=[64, 32]), "does not apply"),
        (dict(architecture="resnet_additive", decoder_widths=[64, 32]), "5 widths"),
        (dict(architecture="rt_monodepth_s", decoder_widths=[64, 32, 16, 8, 4]), "4 widths"),
        (dict(architecture="unet"), "unknown student architecture"),
        (dict(prediction="disparity"), "prediction"),
    ],
)
def test_config_errors_name_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StudentConfig(**overrides)


def test_none_fields_take_the_architecture_defaults_and_are_saved_resolved(tmp_path: Path) -> None:
    config = StudentConfig(architecture="rt_monodepth_s")
    assert config.decoder_widths is None  # the config keeps None: a recipe changing only the architecture works
    resolved = config.resolved()
    assert resolved.decoder_widths == [96, 64, 32, 16] and resolved.pretrained is False
    assert resolved.upsample == "nearest" and resolved.encoder is None
    save_student(create_student(config), config, tmp_path)
    assert read_student_config(tmp_path) == resolved


def test_depth_prediction_is_saved_as_metric(tmp_path: Path) -> None:
    config = _config("resnet_additive", prediction="depth")
    save_student(create_student(config), config, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["output"] == "metric_depth"


def test_deeplab_backbone_weights_from_a_local_file(tmp_path: Path) -> None:
    """The real loading path: a torchvision ResNet-50 state dict on disk goes into the dilated backbone."""
    torch.manual_seed(3)
    resnet = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    model = create_student(StudentConfig(architecture="deeplabv3", pretrained_file=str(path)))
    assert torch.equal(model.backbone.layer4[0].conv2.weight, resnet.layer4[0].conv2.weight)
    with pytest.raises(FileNotFoundError, match="Download"):
        create_student(StudentConfig(architecture="deeplabv3", pretrained_file=str(tmp_path / "missing.pth")))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not a resnet50 state dict"):
        create_student(StudentConfig(architecture="deeplabv3", pretrained_file=str(tmp_path / "wrong.pth")))


def test_deeplab_without_weights_says_what_to_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(FileNotFoundError, match=r"resnet50-.*\.pth"):
        create_student(StudentConfig(architecture="deeplabv3"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_trains_three_steps(path: Path, tmp_path: Path, relative_shards, metric_shards) -> None:
    """Each recipe file, as written, through the real command; only data, size and length are made tiny, and
    encoder weights are off (offline). Metric-depth students train on metric shards, the others on pseudo-labels."""
    recipe = load_config(DistillConfig, path)
    shards = metric_shards if recipe.student.prediction == "depth" else relative_shards
    out = tmp_path / "run"
    argv = [
        "--config", str(path), "--student.pretrained", "false", "--student.pretrained_file", "null",
        "--data.train", str(shards), "--data.train_weights", "null", "--data.val", str(shards),
        "--data.size", "[64, 64]", "--data.batch_size", "2", "--data.val_batch_size", "4", "--data.num_workers", "0",
        "--data.shuffle_buffer", "4", "--data.epoch_steps", "3", "--optim.warmup_steps", "1",
        "--train.steps", "3", "--checkpoint.every", "3", "--log.every", "1", "--log.images_every", "0",
        "--log.val_every", "0", "--log.tensorboard", "false", "--output.dir", str(out),
    ]
    assert distill_main(argv) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [line["train/loss"] for line in lines if "train/loss" in line]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    saved = read_student_config(out / "student")
    assert saved == dataclasses.replace(recipe.student, pretrained=False, pretrained_file=None).resolved()


def test_a_depth_student_is_read_as_metric_by_every_runtime(tmp_path: Path) -> None:
    """A ``prediction: depth`` student says so in its folder and in its ONNX graph, so evaluation scores it as a
    metric model and predict shows 1 / metres; an inverse-depth student stays relative."""
    from distill.deploy.model import load_runner

    for prediction, kind in (("depth", "metric_depth"), ("inverse_depth", "relative_inverse_depth")):
        config = _config("rt_monodepth_s", prediction=prediction)
        folder = save_student(create_student(config), config, tmp_path / prediction)
        model, _ = load_student(folder)
        onnx_path = export_onnx(model, tmp_path / f"{prediction}.onnx", height=64, width=64)
        assert load_runner(folder, width=64, height=64).kind == kind
        assert load_runner(onnx_path).kind == kind


def test_as_inverse_depth_takes_arrays_and_tensors() -> None:
    """predict hands numpy arrays, training hands tensors: both turn metres into 1 / metres (floor 1 mm)."""
    import numpy as np

    from shards.format import as_inverse_depth

    metres = np.array([0.0, 0.5, 2.0], dtype=np.float32)
    np.testing.assert_allclose(as_inverse_depth(metres, "metric_depth"), [1000.0, 2.0, 0.5])
    assert torch.allclose(as_inverse_depth(torch.from_numpy(metres), "metric_depth"), torch.tensor([1000.0, 2.0, 0.5]))
    with pytest.raises(ValueError, match="unknown depth kind"):
        as_inverse_depth(metres, "depth")
    assert as_inverse_depth(metres, "relative_inverse_depth") is metres


@pytest.mark.parametrize(
    "student, loss, message",
    [
        (dict(architecture="rt_monodepth", coarse_head=False), dict(coarse_weight=0.5), "needs student.coarse_head"),
        (dict(architecture="rt_monodepth", coarse_head=True), dict(coarse_weight=0.0), "nothing uses"),
    ],
)
def test_coarse_head_and_its_loss_come_together(student: dict, loss: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistillConfig(student=StudentConfig(pretrained=False, **student), loss=LossConfig(name="l1", **loss))
