"""The student: shapes, non-negativity, gradients through the skips, weights from a local file, save / load."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from distill.deploy.benchmark import count_macs, count_parameters
from distill.students import (
    CONFIG_NAME,
    STUDENT_ARCHITECTURE,
    WEIGHTS_NAME,
    StudentConfig,
    create_student,
    is_student_folder,
    load_student,
    read_student_config,
    save_student,
)
from tests.distill.conftest import tiny_student_config

#: Every student recipe we ship, random init (no download here), plus the tiny test student.
STUDENT_CONFIGS = {
    "fastdepth_mobilenetv3": StudentConfig(pretrained=False),
    "fastdepth_original": StudentConfig(
        encoder="mobilenetv1_100", pretrained=False, skip_strides=[2, 4, 8], upsample="nearest"
    ),
    "relu_head_after": StudentConfig(pretrained=False, output_activation="relu", head_before_upsample=False),
    "tiny": tiny_student_config(),
}


@pytest.fixture(params=sorted(STUDENT_CONFIGS))
def student_config(request) -> StudentConfig:
    return STUDENT_CONFIGS[request.param]


@pytest.mark.parametrize("height, width", [(192, 256), (96, 160)])
def test_output_shape_and_non_negative(student_config: StudentConfig, height: int, width: int) -> None:
    torch.manual_seed(0)
    model = create_student(student_config).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 1, height, width)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0.0
    assert float(out.std()) > 0.0  # the map varies with the input, even from random init


def test_rejects_sizes_that_are_not_multiples_of_32(tiny_student) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_student(torch.rand(1, 3, 100, 128))


def test_widths_come_from_feature_info_and_projections_only_where_they_differ() -> None:
    v3 = create_student(StudentConfig(pretrained=False))
    assert list(v3.encoder.feature_info.channels()) == [16, 24, 40, 112, 960]
    # decoder widths at strides 16, 8, 4, 2 are 512, 256, 128, 64; the encoder's 112, 40, 24, 16 all differ
    assert sorted(v3.skip_projections.keys()) == ["16", "2", "4", "8"]
    assert v3.skip_projections["8"].in_channels == 40 and v3.skip_projections["8"].out_channels == 256
    original = create_student(STUDENT_CONFIGS["fastdepth_original"])
    assert len(original.skip_projections) == 0  # MobileNet v1 widths 64/128/256 equal the decoder's: plain adds


def test_encoder_early_layers_get_gradients_through_the_skips(tiny_config) -> None:
    torch.manual_seed(0)
    model = create_student(tiny_config)
    model(torch.rand(2, 3, 64, 96)).mean().backward()
    stem = model.encoder.conv_stem.weight.grad
    assert stem is not None and float(stem.abs().sum()) > 0.0
    assert all(p.grad is not None for p in model.skip_projections.parameters())


def test_skip_path_carries_signal() -> None:
    """Zeroing the stride-4 skip changes the output: the decoder really adds the encoder feature."""
    torch.manual_seed(0)
    model = create_student(tiny_student_config()).eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = model(image)
        model.skip_projections["4"].weight.zero_()
        after = model(image)
    assert float((before - after).abs().max()) > 1e-4
    no_skips = create_student(tiny_student_config(skip_strides=[]))
    assert len(no_skips.skip_projections) == 0


def test_head_before_upsample_is_the_same_function() -> None:
    torch.manual_seed(0)
    before = create_student(tiny_student_config(head_before_upsample=True)).eval()
    after = create_student(tiny_student_config(head_before_upsample=False)).eval()
    after.load_state_dict(before.state_dict())
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(before(image), after(image), atol=1e-5, rtol=1e-5)


def test_normalisation_lives_in_the_model(tiny_student) -> None:
    assert torch.allclose(tiny_student.mean.flatten(), torch.tensor(timm.data.IMAGENET_DEFAULT_MEAN))
    assert "mean" not in tiny_student.state_dict()  # derived from the encoder, not a weight


def test_pretrained_from_local_file(tmp_path) -> None:
    """A file saved from a randomly initialised timm classifier stands in for the ImageNet download."""
    torch.manual_seed(123)
    classifier = timm.create_model("test_efficientnet", pretrained=False)
    weights = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(weights))
    torch.manual_seed(0)  # a different seed: equality below can only come from the file
    model = create_student(tiny_student_config(pretrained=True, pretrained_file=str(weights)))
    torch.testing.assert_close(model.encoder.conv_stem.weight, classifier.conv_stem.weight)


def test_missing_pretrained_weights_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"huggingface-cli download timm/mobilenetv3_large_100\.ra_in1k"):
        create_student(StudentConfig(pretrained=True))
    with pytest.raises(FileNotFoundError, match="pretrained_file"):
        create_student(StudentConfig(pretrained=True, pretrained_file=str(tmp_path / "missing.safetensors")))


@pytest.mark.parametrize("bad", [dict(upsample="bicubic"), dict(output_activation="tanh"), dict(skip_strides=[32])])
def test_config_rejects_unknown_choices(bad) -> None:
    with pytest.raises(ValueError, match="student"):
        StudentConfig(**bad)


def test_save_load_round_trip(student_config: StudentConfig, tmp_path) -> None:
    torch.manual_seed(0)
    model = create_student(student_config)
    with torch.no_grad():  # non-default BN statistics must survive too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
    model.eval()
    folder = save_student(model, student_config, tmp_path / "student")
    assert (folder / WEIGHTS_NAME).is_file() and not list(folder.glob("*.tmp"))
    record = json.loads((folder / CONFIG_NAME).read_text())
    resolved = student_config.resolved()
    assert record["architecture"] == STUDENT_ARCHITECTURE and record["encoder"] == resolved.encoder
    assert is_student_folder(folder)
    loaded, config = load_student(folder)
    assert config == resolved and not loaded.training
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image), atol=0, rtol=0)


def test_load_needs_no_download_for_a_pretrained_config(tmp_path) -> None:
    config = tiny_student_config()
    save_student(create_student(config), dataclasses.replace(config, pretrained=True), tmp_path / "s")
    _, loaded_config = load_student(tmp_path / "s")
    assert loaded_config.pretrained is True  # the record says how it was trained; loading used the file only


def test_foreign_folders_are_refused(tmp_path) -> None:
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"architectures": ["DPTForDepthEstimation"], "model_type": "dpt"}))
    assert not is_student_folder(tmp_path)
    with pytest.raises(ValueError, match="not a student config"):
        read_student_config(tmp_path)


def test_complexity_counts() -> None:
    model = create_student(StudentConfig(pretrained=False))
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert 3.5e6 < count_parameters(model) < 4.0e6  # 3.76 M (BENCHMARKS.md, student latency)
    macs = count_macs(model, (1, 3, 192, 256))
    assert 0.35e9 < macs < 0.45e9  # 0.41 GMAC at 256x192
    assert count_macs(model, (2, 3, 192, 256)) == 2 * macs
    assert model.training  # mode restored
