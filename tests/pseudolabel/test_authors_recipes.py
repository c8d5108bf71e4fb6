"""Each existing teacher family labels as its authors run it, checked against a short re-implementation of each
reference written here, not the project's code: DPT against transformers' ``DPTImageProcessor`` (the authors'
processor itself: keep aspect ratio, size 384, multiple of 32, bicubic) and its ``post_process_depth_estimation``;
Depth Anything against Depth-Anything-V2's ``infer_image`` (``cv2.INTER_CUBIC`` to the lower-bound multiple-of-14
size of 518, /255, ImageNet mean and std; the map back with ``F.interpolate(bilinear, align_corners=True)``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pseudolabel.teachers import load_teacher
from tests.pseudolabel.conftest import gradient_rgb
from tests.pseudolabel.references import (
    IMAGENET_STD,
    aligned_error,
    depth_anything_input,
    depth_anything_reference,
    depth_anything_size,
    dpt_processor,
)


class Recorder:
    """Wraps a teacher's network: records the pixel batches it is given and the maps it returns."""

    def __init__(self, network):
        self.network, self.seen, self.maps = network, [], []

    def __call__(self, pixels):
        self.seen.append(pixels.detach().clone())
        self.maps.append(self.network(pixels))
        return self.maps[-1]


def varied_depth_anything(folder) -> object:
    """The tiny Depth Anything teacher with its final ReLU removed: a map that varies everywhere, negative in
    places (the random tiny map is otherwise >99% ReLU zeros)."""
    teacher = load_teacher(str(folder), precision="fp32")
    teacher.network.model.head.activation2 = torch.nn.Identity()
    return teacher


# ---------------------------------------------------------------------------------------------------------- tests


def test_depth_anything_sees_518x686_for_a_512x384_crop(tiny_teachers):
    """Depth Anything runs at its own 518 lower bound, not the old short side 384 (378x504: 53% of the pixels)."""
    assert depth_anything_size(384, 512) == (518, 686)
    teacher = load_teacher(str(tiny_teachers["depth_anything"]))
    recorder = teacher.network = Recorder(teacher.network)
    teacher(torch.from_numpy(gradient_rgb(512, 384))[None])
    assert tuple(recorder.seen[0].shape) == (1, 3, 518, 686)
    assert teacher.network_size(384, 512) == (518, 686)


@pytest.mark.parametrize(("width", "height"), [(512, 384), (640, 480), (333, 250), (250, 333)])
def test_depth_anything_input_and_label_follow_infer_image(tiny_teachers, width, height):
    teacher = varied_depth_anything(tiny_teachers["depth_anything"])
    recorder = teacher.network = Recorder(teacher.network)
    image = gradient_rgb(width, height, seed=width)
    label = teacher(torch.from_numpy(image)[None])[0].numpy()
    expected_input = depth_anything_input(image)
    seen = recorder.seen[0].numpy()
    assert seen.shape == expected_input.shape
    grey_levels = np.abs(seen - expected_input) * IMAGENET_STD.reshape(1, 3, 1, 1) * 255
    assert grey_levels.max() < 0.1  # one grey level allowed; torch's bicubic is OpenCV's cubic (a = -0.75)
    reference = depth_anything_reference(teacher.network.network.model, image)
    assert label.shape == reference.shape == (height, width)
    assert aligned_error(label, reference) < 0.005
    assert np.abs(label - reference).max() < 0.01 * np.ptp(reference)  # without alignment too


def test_a_relative_depth_anything_map_is_not_clamped(tiny_teachers):
    """A relative map's offset is free: its values below 0 are kept, resized bilinearly as infer_image does."""
    teacher = varied_depth_anything(tiny_teachers["depth_anything"])
    recorder = teacher.network = Recorder(teacher.network)
    label = teacher(torch.from_numpy(gradient_rgb(512, 384))[None])
    network_map = recorder.maps[0].float()
    assert network_map.min() < 0 and label.min() < 0
    expected = F.interpolate(network_map[:, None], (384, 512), mode="bilinear", align_corners=True)[:, 0]
    torch.testing.assert_close(label, expected, rtol=0, atol=1e-4 * float(network_map.abs().max()))


@pytest.mark.parametrize("architecture", ["dpt", "dpt_hybrid"])
@pytest.mark.parametrize(("width", "height"), [(512, 384), (640, 480), (333, 250), (250, 333), (160, 120)])
def test_dpt_input_follows_dpt_image_processor(tiny_teachers, architecture, width, height):
    """The network input equals transformers' DPTImageProcessor's to 1e-5, at its size: scaled as little as possible
    (a 160x120 picture runs at 384x288, long side 384), sides rounded to 32, the uint8 image resized bicubically."""
    teacher = load_teacher(str(tiny_teachers[architecture]), precision="fp32")
    recorder = teacher.network = Recorder(teacher.network)
    image = gradient_rgb(width, height, seed=height)
    teacher(torch.from_numpy(image)[None])
    expected = dpt_processor()(images=image, return_tensors="pt").pixel_values
    assert tuple(recorder.seen[0].shape) == tuple(expected.shape)
    torch.testing.assert_close(recorder.seen[0], expected, rtol=0, atol=1e-5)


def test_dpt_label_follows_the_processor_and_its_post_processing(tiny_teachers):
    """Label of a 480x480 picture (square: transformers' own DPT forward takes it) against the processor, the model
    and ``post_process_depth_estimation`` (bicubic to the picture's size)."""
    teacher = load_teacher(str(tiny_teachers["dpt"]), precision="fp32")
    image = gradient_rgb(480, 480, seed=7)
    label = teacher(torch.from_numpy(image)[None])[0].numpy()
    processor = dpt_processor()
    model = teacher.network.model
    with torch.no_grad():
        outputs = model(pixel_values=processor(images=image, return_tensors="pt").pixel_values)
    reference = processor.post_process_depth_estimation(outputs, target_sizes=[(480, 480)])[0]["predicted_depth"]
    reference = reference.numpy()
    assert aligned_error(label, reference) < 0.005
    assert np.abs(label - reference).max() < 1e-4 * np.ptp(reference)


def test_short_side_overrides_the_size_only(tiny_teachers):
    """``teacher.short_side`` replaces the family's size; its fit, multiple and kernels stay the family's."""
    teacher = load_teacher(str(tiny_teachers["depth_anything"]), short_side=96)
    assert teacher.network_size(96, 128) == depth_anything_size(96, 128, input_size=96) == (98, 126)
    assert teacher.info()["short_side"] == 96 and teacher.info()["size"] == 96
    assert load_teacher(str(tiny_teachers["dpt"]), short_side=96).network_size(96, 128) == (96, 128)


def test_the_manifest_records_what_ran(tiny_teachers, scene_folder, tmp_path):
    """Family, reference, size (and that no override was given), the network's input for the crop, both kernels."""
    from pseudolabel.cli import main

    out = tmp_path / "out"
    argv = ["--source.path", str(scene_folder), "--source.sample_count", "2", "--teacher.model",
            str(tiny_teachers["depth_anything"]), "--output.dir", str(out), "--preprocess.width", "128",
            "--preprocess.height", "96", "--runtime.num_workers", "0", "--runtime.progress", "false"]
    assert main(argv) == 0
    recorded = json.loads((out / "manifest.json").read_text())["teacher"]
    assert recorded["family"] == "depth_anything" and "infer_image" in recorded["reference"]
    assert (recorded["size"], recorded["short_side"], recorded["size_fit"]) == (518, None, "lower_bound")
    assert recorded["network_input"] == [518, 686]
    assert (recorded["input_resize"], recorded["output_resize"]) == ("cv2_cubic", "bilinear_align_corners")
