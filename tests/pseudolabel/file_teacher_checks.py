"""What every exported-file teacher must do, shared by the ONNX tests here and the LiteRT test under
``tests/deploy_runtimes`` (which needs the runtimes' extras): its labels are the file's own output on the crop
stretched to its size and resized back, and a run with it labels, distils and evaluates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from pseudolabel.cli import main as pseudolabel
from pseudolabel.config import PreprocessConfig
from pseudolabel.preprocess import preprocess_image
from shards.reader import build_pipeline
from tests.pseudolabel.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "configs" / "pseudolabel" / "smoke.yaml")
#: The crop of these runs: small, 4:3, so that a 96x64 file is stretched (3:2).
CROP = (128, 96)


def label_with(teacher: Path | str, scenes: Path, out: Path, *extra: str) -> int:
    """One in-process labelling run of the ``rgb/`` pictures of ``scenes`` at :data:`CROP`."""
    return pseudolabel([
        "--config", SMOKE, "--source.path", str(scenes / "rgb"), "--teacher.model", str(teacher),
        "--output.dir", str(out), "--runtime.num_workers", "0", "--runtime.progress", "false",
        "--preprocess.width", str(CROP[0]), "--preprocess.height", str(CROP[1]), *extra,
    ])


def stretched(crop: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (1, 3, height, width) in [0, 1]: PIL's bicubic, aspect not kept."""
    resized = np.asarray(Image.fromarray(crop).resize((width, height), Image.BICUBIC))
    return (resized.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)


def check_labels_are_the_files_output(
    out: Path, scenes: Path, file_output: Callable[[np.ndarray], np.ndarray], size: tuple[int, int]
) -> int:
    """Every label of ``out`` against ``file_output`` (float32 (1, 3, h, w) in [0, 1] -> (h', w'), the file run by
    its own runtime, nothing of ours) on the crop stretched to ``size`` (W, H), resized back bilinearly: median
    relative difference below 1e-3. Returns how many samples were compared."""
    samples = list(build_pipeline(str(out), training=False, split=False))
    assert samples
    for sample in samples:
        crop = preprocess_image((scenes / "rgb" / sample.meta.source).read_bytes(), sample.key,
                                PreprocessConfig(width=CROP[0], height=CROP[1])).image
        raw = torch.from_numpy(file_output(stretched(crop, *size)))[None, None]  # (1, 1, h', w')
        expected = F.interpolate(raw, (CROP[1], CROP[0]), mode="bilinear", align_corners=False)[0, 0].numpy()
        difference = np.abs(sample.depth - expected) / np.maximum(np.abs(expected), 1e-6)
        assert np.median(difference) < 1e-3, (sample.key, float(np.median(difference)))
    return len(samples)


def distil_and_evaluate(shards: Path, scenes: Path, out: Path) -> dict:
    """A tiny student trained for a few steps on ``shards``, then scored on ``scenes`` (an rgb/ + depth/ folder):
    evaluate's metrics.json."""
    from distill.evaluation.evaluate import main as evaluate
    from tests.distill.conftest import train_tiny_student

    student = train_tiny_student(out / "run", shards, steps=4)
    argv = ["--model", str(student), "--data", str(scenes), "--crop", "none", "--out", str(out / "evaluation")]
    assert evaluate(argv) == 0
    return json.loads((out / "evaluation" / "metrics.json").read_text())
