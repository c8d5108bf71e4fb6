"""The demo's picture: held-out scenes with their ground truth, the teacher's label and the student's prediction.

Every map is inverse depth, aligned per image onto the ground truth's by least-squares scale and shift (the
evaluation's alignment), and drawn on one colour scale per row, so the columns compare directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from distill.align import align_scale_shift
from distill.students import load_student
from pseudolabel.teachers import load_teacher
from shards.format import inverse_depth
from shards.reader import build_pipeline
from shards.tools.pictures import colorize_depth, image_grid, save_picture

INVERSE_METRES = "inverse depth (1/m)"  # every map is aligned onto the ground truth's 1 / metres


@torch.inference_mode()
def draw_comparison(val_shards: Path, teacher_folder: Path, student_folder: Path, out: Path, count: int = 4) -> Path:
    teacher = load_teacher(str(teacher_folder))
    student, _ = load_student(student_folder)
    student.eval()
    rows, labels = [], []
    for sample in build_pipeline(str(val_shards), training=False, split=False):
        if len(rows) == count:
            break
        image = torch.tensor(sample.image)[None]  # (1, 384, 512, 3) uint8 (a copy: decoded arrays are read-only)
        valid = torch.from_numpy(sample.valid)[None, None]  # (1, 1, 384, 512)
        truth = torch.from_numpy(sample.depth)[None, None]  # metres, 0 where invalid
        truth_inverse = inverse_depth(truth, valid)
        teacher_map = teacher(image)[:, None]  # (1, 1, 384, 512)
        pixels = image.permute(0, 3, 1, 2).float() / 255.0
        small = F.interpolate(pixels, size=(192, 256), mode="bicubic", antialias=True, align_corners=False)
        student_map = F.interpolate(student(small.clamp(0, 1)), size=pixels.shape[-2:], mode="bilinear")
        aligned = [align_scale_shift(m, truth_inverse, valid)[0, 0].numpy() for m in (teacher_map, student_map)]
        shown = truth_inverse[0, 0].numpy()
        value_range = tuple(np.percentile(shown[sample.valid], [2, 98]))
        rows.append([
            sample.image,
            colorize_depth(shown, sample.valid, value_range, units=INVERSE_METRES),
            *(colorize_depth(m, None, value_range, units=INVERSE_METRES) for m in aligned),
        ])
        labels.append(sample.key.rsplit("/", 1)[-1])
    titles = ["input", "ground truth", "teacher label", "student (256x192)"]
    picture = image_grid(rows, titles=titles, row_labels=labels, cell_height=192)
    save_picture(picture, str(out))
    return out
