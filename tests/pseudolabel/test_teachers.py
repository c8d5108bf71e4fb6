"""Teachers: loaded by path or hub id through one code path, native-aspect sizes, normalisation, TTA, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pseudolabel.teachers import (
    TeacherNotFoundError,
    compute_precision,
    load_teacher,
)
from pseudolabel.tiny_teacher import REFERENCE_TEACHERS, reference_config
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH
from tests.pseudolabel.conftest import gradient_rgb

ARCHITECTURES = ["dpt", "dpt_hybrid", "depth_anything"]


def images(count: int = 2, width: int = 128, height: int = 96) -> torch.Tensor:
    return torch.from_numpy(np.stack([gradient_rgb(width, height, seed=seed) for seed in range(count)]))


class Recorder:
    """Wraps a teacher's network and records the pixel batches it is given."""

    def __init__(self, network):
        self.network, self.seen = network, []

    def __call__(self, pixels):
        self.seen.append(pixels.detach().clone())
        return self.network(pixels)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tiny_teacher_by_path_labels_at_the_input_size(tiny_teachers, architecture):
    teacher = load_teacher(str(tiny_teachers[architecture]), short_side=96)
    recorder = teacher.network = Recorder(teacher.network)
    depth = teacher(images())
    assert depth.dtype == torch.float32 and depth.device.type == "cpu" and depth.shape == (2, 96, 128)
    assert torch.isfinite(depth).all() and (depth >= 0).all()
    assert depth[0].std() > 1e-3, "a test teacher must give maps that vary, or every label is rejected as constant"
    assert teacher.kind == RELATIVE_INVERSE_DEPTH
    assert teacher.model_id == str(tiny_teachers[architecture].resolve())
    assert teacher.revision.startswith("sha256:")
    expected = (96, 128) if architecture.startswith("dpt") else (98, 126)  # DA: both sides >= 96, rounded to 14
    assert tuple(recorder.seen[0].shape[-2:]) == expected


@pytest.mark.parametrize(("architecture", "size"), [("dpt", (384, 512)), ("depth_anything", (518, 686))])
def test_network_size_for_the_512x384_crop(tiny_teachers, architecture, size):
    teacher = load_teacher(str(tiny_teachers[architecture]))
    assert teacher.network_size(384, 512) == size  # DPT unsquashed; DA its authors' lower bound 518, multiple of 14
    assert teacher.network_size(480, 640) == size


@pytest.mark.parametrize(
    ("architecture", "mean", "std"),
    [("dpt", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ("depth_anything", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
)
def test_normalisation_comes_from_the_processor_config(tiny_teachers, architecture, mean, std, tmp_path):
    teacher = load_teacher(str(tiny_teachers[architecture]), short_side=96)
    recorder = teacher.network = Recorder(teacher.network)
    batch = torch.full((1, 96, 128, 3), 255, dtype=torch.uint8)
    batch[..., 1] = 0
    teacher(batch)
    pixels = recorder.seen[0][0, :, 10, 10]
    expected = [(1 - mean[0]) / std[0], (0 - mean[1]) / std[1], (1 - mean[2]) / std[2]]
    torch.testing.assert_close(pixels, torch.tensor(expected), atol=1e-5, rtol=0)
    # A folder without preprocessor_config.json falls back to the model type's known normalisation.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_teachers[architecture], bare)
    (bare / "preprocessor_config.json").unlink()
    assert load_teacher(str(bare)).info()["mean"] == pytest.approx(list(mean))


def test_flip_tta_averages_the_unflipped_map_of_the_flipped_image(tiny_teachers):
    plain = load_teacher(str(tiny_teachers["dpt"]), short_side=96)
    tta = load_teacher(str(tiny_teachers["dpt"]), short_side=96, flip_tta=True)
    batch = images()
    expected = (plain(batch) + plain(batch.flip(2)).flip(2)) / 2
    torch.testing.assert_close(tta(batch), expected, atol=1e-5, rtol=1e-5)


def test_hub_id_loads_from_the_cache_with_its_commit(tiny_teachers, tmp_path, monkeypatch):
    """A hub id goes through the same code as a folder; offline it is read from the Hugging Face cache."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-dpt"
    shutil.copytree(tiny_teachers["dpt"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    teacher = load_teacher("tiny-org/tiny-dpt", short_side=96)
    assert (teacher.model_id, teacher.revision) == ("tiny-org/tiny-dpt", commit)
    by_path = load_teacher(str(tiny_teachers["dpt"]), short_side=96)
    torch.testing.assert_close(teacher(images(1)), by_path(images(1)))


@pytest.mark.parametrize("model", ["Intel/dpt-large", "depth-anything/Depth-Anything-V2-Small-hf"])
def test_missing_hub_teacher_says_how_to_download(model):
    with pytest.raises(TeacherNotFoundError) as missing:
        load_teacher(model)
    message = str(missing.value)
    assert f"huggingface-cli download {model}" in message
    assert "teacher.model" in message and "folder" in message


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(TeacherNotFoundError, match="does not exist"):
        load_teacher(str(tmp_path / "no" / "such" / "teacher"))


def test_metric_depth_anything_is_labelled_metric(tiny_teachers, tmp_path):
    folder = tmp_path / "metric"
    shutil.copytree(tiny_teachers["depth_anything"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(depth_estimation_type="metric", max_depth=20)
    (folder / "config.json").write_text(json.dumps(config))
    assert load_teacher(str(folder)).kind == METRIC_DEPTH


def test_identity_teacher_is_a_cheap_function_of_the_image():
    teacher = load_teacher("identity")
    batch = images()
    depth = teacher(batch)
    assert depth.shape == (2, 96, 128)
    torch.testing.assert_close(depth, batch[..., 1].float() / 255)


def test_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert compute_precision("auto", torch.device("cuda")) is torch.bfloat16
    assert compute_precision("auto", torch.device("cpu")) is None
    assert compute_precision("fp16", torch.device("cuda")) is torch.float16


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bf16_backbone_keeps_a_float32_head_and_map(tiny_teachers, architecture):
    """Under bf16 autocast (CPU here, CUDA's default) the map must keep float32 resolution: a bf16 output holds at
    most a few hundred distinct values per octave, which the 16-bit label would then store as rounding steps."""
    bf16 = load_teacher(str(tiny_teachers[architecture]), short_side=96, precision="bf16")
    fp32 = load_teacher(str(tiny_teachers[architecture]), short_side=96, precision="fp32")
    batch = images(2, 128, 96)
    mixed, full = bf16(batch), fp32(batch)
    assert mixed.dtype == torch.float32
    assert bf16.precisions() == {"backbone": "bfloat16", "head": "float32", "output": "float32"}
    # the network's own map, before the resize to the input size, is what the head wrote
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pixels = torch.rand(1, 3, 96, 128)
        head_map = bf16.network(pixels)
    assert head_map.dtype == torch.float32
    if architecture == "depth_anything":
        return  # the tiny Depth Anything map is >99% ReLU zeros: too few values to count; dtype checked above
    distinct = torch.unique(head_map).numel()
    bf16_representable = torch.unique(head_map.bfloat16()).numel()
    assert distinct > 4 * bf16_representable, (distinct, bf16_representable)
    # and the map follows the full-precision one closely (the backbone's bf16 error only)
    relative = ((mixed - full).abs() / full.abs().clamp(min=1e-3)).median()
    assert relative < 0.05


@pytest.mark.parametrize("name", sorted(REFERENCE_TEACHERS))
def test_reference_teacher_configs_have_the_published_sizes(name):
    """The GPU suite times random-weight teachers built from these configs: right only if the sizes are the real
    ones (built on the meta device: no memory, no time)."""
    from transformers import AutoModelForDepthEstimation

    with torch.device("meta"):
        model = AutoModelForDepthEstimation.from_config(reference_config(name))
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(millions, 1) == REFERENCE_TEACHERS[name][1]


@pytest.mark.parametrize("flip_tta", [False, True])
def test_a_fixed_batch_pads_and_returns_only_the_real_maps(tiny_teachers, flip_tta):
    """A compiled teacher sees one batch shape: a short batch is padded to it, and only its own maps come back."""
    plain = load_teacher(str(tiny_teachers["dpt"]), short_side=96, flip_tta=flip_tta)
    padded = load_teacher(str(tiny_teachers["dpt"]), short_side=96, flip_tta=flip_tta)
    padded.fixed_batch = 5
    seen = Recorder(padded.network)
    padded.network = seen
    batch = images(3)
    torch.testing.assert_close(padded(batch), plain(batch), rtol=1e-5, atol=1e-5)
    assert seen.seen[0].shape[0] == (10 if flip_tta else 5)


def test_a_student_folder_as_teacher_is_named_as_one(scene_folder, tmp_path, capsys):
    """``pseudolabel.py --teacher.model <a student folder>``: one line saying it is a student, not a teacher, and what
    a teacher is; the same for a folder whose config.json is no transformers model's. Nothing is written."""
    from distill.students import create_student, save_student
    from pseudolabel.cli import main
    from tests.distill.conftest import tiny_student_config

    config = tiny_student_config()
    student = save_student(create_student(config), config, tmp_path / "student")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"hidden_size": 8}))
    expected = {student: "is a student folder (config.json with our 'architecture' field, written by distill), not "
                         "a teacher", other: "its config.json has no model_type, so it is not a transformers model"}
    for folder, said in expected.items():
        out = tmp_path / f"shards_{folder.name}"
        assert main(["--source.path", str(scene_folder), "--teacher.model", str(folder), "--output.dir", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"error: teacher.model {folder}" in err[0] and said in err[0]
        assert "Intel/dpt-hybrid-midas" in err[0] and "identity" in err[0]
        assert not out.exists() or not any(out.iterdir())
