"""The phone recipe (configs/distill/places365_fastdepth_minimal.yaml): FastDepth on MobileNetV3-Large "minimal"
(ReLU, no squeeze-excitation) built with PyTorch padding, loading the weights of timm's TensorFlow port.

Each test builds the real architecture from random init (no ImageNet weights offline); the weights' loading path is
tested with a file saved from a random classifier of the same timm model, as for the reference encoder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import Conv2dSame

from distill.deploy.export import check_parity, export_onnx, parity_inputs
from distill.students import StudentConfig, create_student
from distill.students.base import TIMM_ENCODER_VARIANTS
from distill.training.config import DistillConfig
from shards.cli.config import load_config

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "distill"
RECIPE, REFERENCE = RECIPES / "places365_fastdepth_minimal.yaml", RECIPES / "places365_fastdepth.yaml"
ENCODER = "mobilenetv3_large_minimal_100"
TF_ENCODER = "tf_mobilenetv3_large_minimal_100"


def phone_config(**overrides) -> StudentConfig:
    """The recipe's student, random init (offline), with ``overrides``."""
    config = load_config(DistillConfig, RECIPE).student
    return dataclasses.replace(config, **{"pretrained": False, "pretrained_file": None, **overrides})


def test_the_recipe_is_the_minimal_encoder_with_the_reference_decoder() -> None:
    config = phone_config().resolved()
    reference = dataclasses.replace(load_config(DistillConfig, REFERENCE).student, pretrained=False).resolved()
    assert (config.architecture, config.encoder) == ("fastdepth", ENCODER)
    assert dataclasses.replace(config, encoder=reference.encoder) == reference  # only the encoder differs
    assert TIMM_ENCODER_VARIANTS[ENCODER][0] == TF_ENCODER


def test_the_encoder_is_timms_minimal_network_with_pytorch_padding() -> None:
    """Same parameters as timm's TensorFlow port (so its weights load), none of its dynamic 'same' padding."""
    model = create_student(phone_config())
    ported = timm.create_model(TF_ENCODER, features_only=True, exportable=True)
    ours = {name: tuple(p.shape) for name, p in model.encoder.state_dict().items()}
    assert ours == {name: tuple(p.shape) for name, p in ported.state_dict().items()}
    assert any(isinstance(m, Conv2dSame) for m in ported.modules())
    assert not any(isinstance(m, Conv2dSame) for m in model.encoder.modules())
    stride2 = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(stride2) == 5 and all(m.padding == (m.kernel_size[0] // 2,) * 2 for m in stride2)
    assert model.encoder.feature_info.channels() == [16, 24, 40, 112, 960]
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # the TensorFlow weights' input statistics


def test_imagenet_weights_load_from_a_local_file(tmp_path: Path) -> None:
    """A file saved from a randomly initialised timm classifier of the TensorFlow port stands in for the download."""
    torch.manual_seed(123)
    classifier = timm.create_model(TF_ENCODER, pretrained=False)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(weights))
    torch.manual_seed(0)  # another seed: equality below can only come from the file
    model = create_student(phone_config(pretrained=True, pretrained_file=str(weights)))
    torch.testing.assert_close(model.encoder.conv_stem.weight, classifier.conv_stem.weight)
    torch.testing.assert_close(model.encoder.blocks[5][2].conv_dw.weight, classifier.blocks[5][2].conv_dw.weight)


def test_missing_weights_name_the_tensorflow_ports_download(tmp_path: Path) -> None:
    hub = r"huggingface-cli download timm/tf_mobilenetv3_large_minimal_100\.in1k"
    with pytest.raises(FileNotFoundError, match=hub):
        create_student(phone_config(pretrained=True))  # HF_HUB_OFFLINE=1 and an empty cache in the test run
    with pytest.raises(FileNotFoundError, match="pretrained_file"):
        create_student(phone_config(pretrained=True, pretrained_file=str(tmp_path / "missing.safetensors")))


#: Every operation of the phone student's ONNX graph: convolutions, ReLU, sums, the decoder's resizes, the input
#: normalisation (Sub, Div) and the output softplus.
PHONE_OPS = {"Add", "Constant", "Conv", "Div", "Identity", "Relu", "Resize", "Softplus", "Sub"}


@pytest.mark.parametrize("encoder, slow_ops", [(ENCODER, set()), (TF_ENCODER, {"Pad"}),
                                               ("mobilenetv3_large_100", {"HardSwish", "HardSigmoid", "ReduceMean"})])
def test_the_exported_encoder_keeps_to_fast_operations(encoder: str, slow_ops: set, tmp_path: Path) -> None:
    """The phone student's ONNX graph holds only :data:`PHONE_OPS` (no Pad from TF padding, no hard-swish,
    hard-sigmoid or squeeze-excitation) and matches PyTorch; the TensorFlow port and the reference encoder show what
    is avoided."""
    torch.manual_seed(0)
    model = create_student(phone_config(encoder=encoder)).eval()
    path = export_onnx(model, tmp_path / "student.onnx", height=96, width=128)
    assert check_parity(model, path, parity_inputs(96, 128)).passed
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops & {"Pad", "HardSwish", "HardSigmoid", "ReduceMean"} == slow_ops, ops
    assert (ops <= PHONE_OPS) == (encoder == ENCODER), ops
