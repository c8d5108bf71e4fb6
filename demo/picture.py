"""The demo's picture: held-out scenes with their ground truth, the teacher's label and the student's prediction.

Each map is aligned onto the ground truth as the evaluation aligns it (least-squares scale and shift in inverse
depth, capped at 10 m: ``distill.evaluation.protocols.predicted_depth``) and drawn in metres, the convention of every
picture here (``shards.tools.pictures``: metres on the reversed turbo map, near = warm), on one colour scale per row,
so the columns compare directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from distill.evaluation.protocols import Protocol, predicted_depth, valid_mask
from distill.students import load_student
from pseudolabel.teachers import load_teacher
from shards.format import RELATIVE_INVERSE_DEPTH
from shards.reader import build_pipeline
from shards.tools.pictures import colorize_depth, frame_label, image_grid, save_picture

#: The evaluation's reference alignment and 10 m cap, on the whole frame (a held-out scene is its own crop).
ALIGNMENT = Protocol(name="demo", crop=None)


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
        truth = torch.from_numpy(sample.depth)[None]  # (1, 384, 512) metres, 0 where invalid
        valid = valid_mask(ALIGNMENT, truth) & torch.from_numpy(sample.valid)[None]
        teacher_map = teacher(image)  # (1, 384, 512) relative inverse depth
        pixels = image.permute(0, 3, 1, 2).float() / 255.0
        small = F.interpolate(pixels, size=(192, 256), mode="bicubic", antialias=True, align_corners=False)
        student_map = F.interpolate(student(small.clamp(0, 1)), size=pixels.shape[-2:], mode="bilinear")[:, 0]
        aligned = [
            predicted_depth(ALIGNMENT, relative, RELATIVE_INVERSE_DEPTH, truth, valid)[0][0].numpy()
            for relative in (teacher_map, student_map)
        ]
        value_range = tuple(np.percentile(sample.depth[valid[0].numpy()], [2, 98]))
        rows.append([
            sample.image,
            colorize_depth(sample.depth, sample.valid, value_range, inverse=False),
            *(colorize_depth(depth, None, value_range, inverse=False) for depth in aligned),
        ])
        labels.append(frame_label(sample.key))
    titles = ["input", "ground truth (m)", "teacher label, aligned (m)", "student 256x192, aligned (m)"]
    picture = image_grid(rows, titles=titles, row_labels=labels, cell_height=192)
    save_picture(picture, str(out))
    return out
