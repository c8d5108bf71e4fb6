"""The phone recipe's student (configs/distill/places365_fastdepth_minimal.yaml, real size, random init, trained 30
steps on generated scenes) through every export format whose runtime runs here: fp32 parity against PyTorch and the
int8 file behind the same accuracy gate as every student (``distill.deploy.export.MAX_ABS_REL_DROP``).

Select with ``-k phone_student``. Each format exports the full-size network at 96x64 twice (fp32, int8) and scores
both on 8 scenes: about 100 s of CPU for the three formats (5 min wall on a loaded 2-core host), the price of
checking the architecture the recipe ships rather than a tiny stand-in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distill import DepthModel
from distill.cli import main as distill_main
from distill.deploy.export import EXPORT_PARITY_TOLERANCE, MAX_ABS_REL_DROP, SUFFIXES, export
from distill.students import load_student
from shards.format import RELATIVE_INVERSE_DEPTH
from shards.tools.scenes import render_scene
from tests.deploy_runtimes.conftest import SIZE, needs
from tests.distill.conftest import torch_threads, write_scene_shards

WIDTH, HEIGHT = SIZE
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "distill" / "places365_fastdepth_minimal.yaml"
RUNNABLE = [pytest.param(f, marks=needs(f)) for f in ("onnx", "tflite", "executorch")]


@pytest.fixture(scope="module")
def phone_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recipe's student as written (only weights off, data and length tiny), trained for 30 steps: its output
    has structure, so parity and int8 errors mean something."""
    root = tmp_path_factory.mktemp("phone_student")
    write_scene_shards(root / "shards", RELATIVE_INVERSE_DEPTH, shards=2, per_shard=8, size=(128, 96))
    argv = [
        "--config", str(RECIPE), "--student.pretrained", "false", "--student.pretrained_file", "null",
        "--data.train", str(root / "shards"), "--data.val", "null", "--data.size", f"[{WIDTH}, {HEIGHT}]",
        "--data.batch_size", "4", "--data.num_workers", "0", "--data.shuffle_buffer", "8", "--data.epoch_steps", "4",
        "--optim.lr", "0.003", "--optim.warmup_steps", "2", "--train.steps", "30", "--train.ema_decay", "null",
        "--checkpoint.every", "1000", "--log.every", "10", "--log.images_every", "0", "--log.tensorboard", "false",
        "--output.dir", str(root / "run"),
    ]
    with torch_threads(1):
        assert distill_main(argv) == 0
    return root / "run" / "student"


@pytest.mark.parametrize("format", RUNNABLE)
def test_phone_student_exports_with_parity_and_a_gated_int8_file(
    phone_student: Path, held_out_scenes: Path, format: str, tmp_path: Path
) -> None:
    model, config = load_student(phone_student)
    assert config.encoder == "mobilenetv3_large_minimal_100"
    record = export(model, format, tmp_path / f"phone{SUFFIXES[format]}", height=HEIGHT, width=WIDTH, int8=True,
                    validation=str(held_out_scenes))
    parity = record["parity"]
    assert parity["passed"] and max(case["relative_difference"] for case in parity["cases"]) < EXPORT_PARITY_TOLERANCE
    gate = record["int8"]["gate"]
    print(f"phone student {format} int8: ΔAbsRel {gate['abs_rel_drop']:+.4f} (fp32 {gate['abs_rel_fp32']:.4f})")
    assert gate["frames"] == 8 and gate["passed"] and gate["abs_rel_drop"] <= MAX_ABS_REL_DROP
    for file in (record["file"], record["int8"]["file"]):
        assert DepthModel.from_pretrained(file).predict(render_scene(3, width=100, height=80).image).values.shape \
            == (80, 100)
