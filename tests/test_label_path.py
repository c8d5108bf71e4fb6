"""The label's path stays short: the project files one image passes through, from its bytes to the loss.

One picture is labelled by a tiny teacher through the labelling run's own pieces (its input record, the teacher, the
label batch and the shard writer thread), read back by the training stream (``TrainBatches``, as the training loop
draws a step's batch, target already in the loss's space) and passed to the reference loss. ``sys.setprofile``
records every project file entered on the way; docs/decisions.md ("The label's path") draws the same path. A new
detour across the layers shows up here as a longer list.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: Most project files one label may cross (18 at commit 3b35d0b, before "One concept, one place"; 11 after).
MAX_FILES = 12
#: The project's packages (the tests and the environments under the checkout are not on the path).
PACKAGES = ("shards", "pseudolabel", "distill")


def _picture(width: int = 640, height: int = 480) -> bytes:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _project_files(frame_files: set[str]) -> list[str]:
    found = set()
    for name in frame_files:
        path = Path(name)
        if path.is_absolute() and ROOT in path.parents and path.relative_to(ROOT).parts[0] in PACKAGES:
            found.add(path.relative_to(ROOT).as_posix())
    return sorted(found)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pseudolabel.tiny_teacher import save_tiny_teacher

    return save_tiny_teacher(tmp_path_factory.mktemp("teacher") / "dpt", "dpt")


def test_one_label_from_bytes_to_the_loss(teacher_folder: Path, tmp_path: Path) -> None:
    from distill.training.config import DataConfig, LossConfig
    from distill.training.data import TrainBatches
    from distill.training.losses import build_loss
    from pseudolabel.config import PseudolabelConfig
    from pseudolabel.plan import InputItem, Job
    from pseudolabel.run import JobWriter, LabelBatch, LabelInputs, collate_records
    from pseudolabel.teachers import load_teacher

    # Everything built and imported before recording: the path, not the set-up, is measured.
    picture = _picture()
    teacher = load_teacher(str(teacher_folder))
    config = PseudolabelConfig()
    config.runtime.encode_threads = 1
    inputs = LabelInputs(plan=None, units=[], reader=lambda item: picture, config=config)
    job = Job(job=0, info={"inputs": 1}, items=[InputItem("photos/0001", "photos/0001.jpg", "photos/0001.jpg")])
    data = DataConfig(train=str(tmp_path), size=[256, 192], batch_size=1, num_workers=0, shuffle_buffer=1,
                      epoch_steps=1, flip=0.0)
    loss = build_loss(LossConfig())

    entered: set[str] = set()

    def record_call(frame, event, arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        if event == "call":
            entered.add(frame.f_code.co_filename)

    import threading

    threading.setprofile(record_call)  # the writer and its encoding pool run in threads
    sys.setprofile(record_call)
    try:
        batch = collate_records([inputs.record(job, job.items[0])])  # bytes -> 512x384 crop and its JPEG
        depth = teacher(batch["images"])  # (1, 384, 512) relative inverse depth
        writer = JobWriter(tmp_path, config, process=0, teacher=teacher)
        writer.start()
        writer.submit(batch["records"], LabelBatch(depth))  # codes, json, checksums -> shard + stats json
        writer.finish()
        step = TrainBatches(data, seed=0, accumulation=1, device=torch.device("cpu"), space="inverse_depth").next(0)
        parts = loss(torch.rand_like(step["target"]), step["target"], step["valid"])
    finally:
        sys.setprofile(None)
        threading.setprofile(None)

    assert writer.labeled == 1 and step["target"].shape == (1, 1, 192, 256)
    assert torch.isfinite(parts["loss"])
    files = _project_files(entered)
    assert {"pseudolabel/run.py", "shards/writer.py", "shards/reader.py", "distill/training/losses.py"} <= set(files)
    assert len(files) <= MAX_FILES, f"{len(files)} project files on the label's path: {files}"
