"""The demo's teacher fit runs each stand-in family on the training window (benchmarks/teacher_mix.py pairs them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForDepthEstimation

from demo.teacher import CROP, fit_teacher, tiny_teacher_depth
from pseudolabel.teachers import dpt_depth
from pseudolabel.tiny_teacher import save_tiny_teacher
from shards.tools.scenes import write_scene_folder


def test_dpt_runs_through_the_pipelines_forward(tmp_path: Path) -> None:
    model = AutoModelForDepthEstimation.from_pretrained(save_tiny_teacher(tmp_path / "dpt", "dpt")).eval()
    pixels = torch.randn(2, 3, *CROP)
    with torch.no_grad():
        torch.testing.assert_close(tiny_teacher_depth(model, pixels), dpt_depth(model, pixels)[:, None])


def test_depth_anything_gives_a_window_sized_map_from_a_multiple_of_14(tmp_path: Path) -> None:
    model = AutoModelForDepthEstimation.from_pretrained(save_tiny_teacher(tmp_path / "da", "depth_anything")).eval()
    with torch.no_grad():
        depth = tiny_teacher_depth(model, torch.randn(2, 3, *CROP))
    assert depth.shape == (2, 1, *CROP) and torch.isfinite(depth).all() and depth.std() > 0


@pytest.mark.parametrize("architecture", ["dpt", "depth_anything"])
def test_a_fit_lowers_the_loss_and_saves_a_teacher_of_its_family(tmp_path: Path, architecture: str) -> None:
    write_scene_folder(tmp_path / "scenes", 8, seed=0, width=256, height=192)
    record = fit_teacher(tmp_path / "scenes", tmp_path / "teacher", steps=30, batch_size=4, architecture=architecture)
    assert record["architecture"] == architecture and record["last_loss"] < record["first_loss"]
    saved = AutoModelForDepthEstimation.from_pretrained(tmp_path / "teacher")
    assert saved.config.model_type == architecture
