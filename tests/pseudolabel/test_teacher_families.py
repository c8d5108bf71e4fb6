"""The five teacher families (issue 25 item 3): each labels a 512x384 crop through ``load_teacher`` with the right
kind, its network fed what its own reference gives for that crop; every other ``model_type`` is refused in one line.

The references are written here, not taken from the project: transformers' image processor of the family (DPT,
ZoeDepth, Depth Pro, GLPN; for the three metric ones also its ``post_process_depth_estimation``), and for Depth
Anything its authors' ``infer_image`` (Depth-Anything-V2 ``depth_anything_v2/dpt.py`` and ``util/transform.py``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pseudolabel.teachers import TeacherModelError, load_teacher
from shards.cli.errors import UserError
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH
from tests.pseudolabel.conftest import gradient_rgb

FIVE = ("dpt", "depth_anything", "zoedepth", "depth_pro", "glpn")
KINDS = {"dpt": RELATIVE_INVERSE_DEPTH, "depth_anything": RELATIVE_INVERSE_DEPTH, "zoedepth": METRIC_DEPTH,
         "depth_pro": METRIC_DEPTH, "glpn": METRIC_DEPTH}
IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))


def crops(count: int = 2) -> np.ndarray:
    """uint8 (count, 384, 512, 3): the pipeline's crop size."""
    return np.stack([gradient_rgb(512, 384, seed=seed) for seed in range(count)])


class Recorder:
    def __init__(self, network):
        self.network, self.seen = network, []

    def __call__(self, pixels):
        self.seen.append(pixels.detach().clone())
        return self.network(pixels)


def infer_image_input(image: np.ndarray, input_size: int = 518) -> torch.Tensor:
    """Depth-Anything-V2 ``image2tensor``: RGB / 255, ``Resize(keep_aspect_ratio, ensure_multiple_of=14,
    resize_method="lower_bound", cv2.INTER_CUBIC)``, ImageNet ``NormalizeImage``, channels first."""
    import cv2

    height, width = image.shape[:2]
    scale = max(input_size / height, input_size / width)

    def constrain(value: float) -> int:
        rounded = int(np.round(value / 14) * 14)
        return rounded if rounded >= input_size else math.ceil(value / 14) * 14

    size = (constrain(width * scale), constrain(height * scale))
    resized = cv2.resize(image / 255.0, size, interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(((resized - IMAGENET[0]) / IMAGENET[1]).transpose(2, 0, 1).copy()).float()


def reference_input(family: str, folder, batch: np.ndarray) -> tuple[torch.Tensor, float]:
    """What the family's reference feeds its network for ``batch``, and the tolerance: 1e-5 for a transformers
    processor (the same float operations), one grey level for Depth Anything (OpenCV's cubic against torch's)."""
    if family == "depth_anything":
        return torch.stack([infer_image_input(image) for image in batch]), 1 / 255 / float(IMAGENET[1].min())
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    return processor(images=list(batch), return_tensors="pt")["pixel_values"], 1e-5


def reference_label(family: str, folder, pixel_values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The metric families' own inference: the model on the processor's input, then the processor's
    ``post_process_depth_estimation`` back to the crop (ZoeDepth's padding cut off; Depth Pro's field of view)."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForDepthEstimation.from_pretrained(folder).eval()
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
    sizes = [size] * len(pixel_values)
    if family == "zoedepth":
        results = processor.post_process_depth_estimation(outputs, source_sizes=sizes)
    else:
        results = processor.post_process_depth_estimation(outputs, target_sizes=sizes)
    return torch.stack([result["predicted_depth"] for result in results])


@pytest.mark.parametrize("family", FIVE)
def test_each_family_labels_the_crop_as_its_reference_runs_it(tiny_teachers, family):
    folder = tiny_teachers[family]
    teacher = load_teacher(str(folder))
    recorder = teacher.network = Recorder(teacher.network)
    batch = crops()
    depth = teacher(torch.from_numpy(batch))
    assert depth.shape == (2, 384, 512) and depth.dtype == torch.float32 and torch.isfinite(depth).all()
    assert teacher.kind == KINDS[family] and teacher.info()["family"] == family
    assert depth[0].std() > 1e-3, "a test teacher's map must vary, or every label is rejected as constant"
    expected, tolerance = reference_input(family, folder, batch)
    assert recorder.seen[0].shape == expected.shape
    assert (recorder.seen[0] - expected).abs().max() <= tolerance
    if KINDS[family] == METRIC_DEPTH:
        label = reference_label(family, folder, expected, (384, 512))
        torch.testing.assert_close(depth, label, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["zoedepth", "depth_pro", "glpn"])
def test_a_metric_family_follows_its_processor_at_any_frame_size(tiny_teachers, family):
    """A whole odd-sized frame (as a teacher is scored): GLPN resizes the uint8 image to multiples of 32, ZoeDepth
    pads by the frame's own sides; input and label still equal the processor's."""
    folder = tiny_teachers[family]
    teacher = load_teacher(str(folder))
    recorder = teacher.network = Recorder(teacher.network)
    frame = gradient_rgb(641, 479, seed=3)[None]
    depth = teacher(torch.from_numpy(frame))
    expected, _ = reference_input(family, folder, frame)
    torch.testing.assert_close(recorder.seen[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(depth, reference_label(family, folder, expected, (479, 641)), rtol=1e-4, atol=1e-5)


def test_the_metric_families_record_their_processor_settings(tiny_teachers):
    """The manifest says what ran: the processor and its settings (here the tiny teachers' small sizes)."""
    zoedepth = load_teacher(str(tiny_teachers["zoedepth"])).info()
    assert zoedepth["processor"]["processor"] == "ZoeDepthImageProcessor"
    assert zoedepth["processor"]["size"] == [96, 128] and zoedepth["processor"]["pad"] is True
    assert load_teacher(str(tiny_teachers["depth_pro"])).network_size(384, 512) == (64, 64)
    assert load_teacher(str(tiny_teachers["glpn"])).network_size(390, 500) == (384, 480)  # floored to 32


def test_a_size_override_is_refused_for_a_processor_family(tiny_teachers):
    with pytest.raises(UserError, match="leave teacher.short_side unset"):
        load_teacher(str(tiny_teachers["glpn"]), short_side=384)


def test_depth_pro_without_its_field_of_view_is_refused(tiny_teachers, tmp_path):
    folder = tmp_path / "no_fov"
    from transformers import AutoModelForDepthEstimation

    model = AutoModelForDepthEstimation.from_pretrained(tiny_teachers["depth_pro"], use_fov_model=False)
    model.config.use_fov_model = False
    model.save_pretrained(folder)
    with pytest.raises(TeacherModelError, match="without its field-of-view model"):
        load_teacher(str(folder))


def _config_folder(tmp_path, config) -> str:
    config.save_pretrained(tmp_path)
    return str(tmp_path)


def test_another_model_type_is_refused_in_one_line_naming_the_five(tmp_path):
    from transformers import ViTConfig

    folder = _config_folder(tmp_path, ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=32))
    with pytest.raises(TeacherModelError) as refused:
        load_teacher(folder)
    message = str(refused.value)
    assert "\n" not in message and "'vit' model" in message and message.startswith(f"teacher.model {folder}")
    assert all(family in message for family in FIVE)


def test_prompt_depth_anything_is_refused_for_its_lidar_prompt(tmp_path):
    from transformers import PromptDepthAnythingConfig

    folder = _config_folder(tmp_path, PromptDepthAnythingConfig())
    with pytest.raises(TeacherModelError, match="prompt_depth_anything model: it needs a LiDAR depth map") as refused:
        load_teacher(folder)
    assert "\n" not in str(refused.value) and all(family in str(refused.value) for family in FIVE)


def test_the_commands_read_the_same_table(tiny_teachers, tmp_path):
    """``--model``: a metric family's folder is a teacher of kind metric_depth; a prompt_depth_anything folder is
    refused by the teacher loader under ``--model``; a folder of another model names the families."""
    from transformers import PromptDepthAnythingConfig

    from distill.deploy.model import DepthModel, detect_source

    glpn = DepthModel.from_pretrained(str(tiny_teachers["glpn"]), device="cpu")
    assert glpn.kind == METRIC_DEPTH and "floored" in repr(glpn)
    prompt = tmp_path / "prompt"
    PromptDepthAnythingConfig(architectures=["PromptDepthAnythingForDepthEstimation"]).save_pretrained(prompt)
    assert detect_source(str(prompt))[0] == "teacher"
    with pytest.raises(TeacherModelError, match=f"--model {prompt} is a prompt_depth_anything model: it needs a LiDAR"):
        DepthModel.from_pretrained(str(prompt), device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="one of dpt, depth_anything, zoedepth, depth_pro, glpn"):
        detect_source(str(other))
