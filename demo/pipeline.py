"""The demo's steps: each is a user-facing command, printed, run and timed; a summary closes the run.

The demo sits above both stages (docs/decisions.md, "Layout"): it may use either, but the stages themselves only
meet in shards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from demo.picture import draw_comparison
from demo.report import write_summary
from demo.test_scenes import write_nyu_test_scenes

REPO = Path(__file__).resolve().parents[1]


@dataclass
class DemoSize:
    """How much work each step does; ``full`` fits 15 minutes on 2 CPU cores, ``small`` is for CI."""

    train_scenes: int
    val_scenes: int
    test_scenes: int
    teacher_steps: int
    distill_steps: int
    batch_size: int = 8
    require_win: bool = True  # fail unless the student beats both baselines (the small CI size only checks it runs)

    @classmethod
    def full(cls) -> DemoSize:
        return cls(train_scenes=400, val_scenes=48, test_scenes=48, teacher_steps=400, distill_steps=200)

    @classmethod
    def small(cls) -> DemoSize:
        return cls(train_scenes=48, val_scenes=16, test_scenes=8, teacher_steps=40, distill_steps=30,
                   require_win=False)


@dataclass
class StepLog:
    """What the summary needs: each command with its wall time."""

    steps: list[dict] = field(default_factory=list)

    def run(self, title: str, command: list[str], env: dict[str, str] | None = None) -> None:
        shown = " ".join(command).replace(sys.executable, "python")
        print(f"\n=== {title}\n$ {shown}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=REPO, env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - started
        self.steps.append({"title": title, "command": shown, "seconds": round(seconds, 1)})
        if completed.returncode != 0:
            raise SystemExit(f"demo step failed ({title}), exit code {completed.returncode}: {shown}")
        print(f"--- {title}: {seconds:.1f} s", flush=True)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _accelerate(script: str, *args: str) -> list[str]:
    """``accelerate launch`` on one CPU process (the demo's machine has no GPU)."""
    return [shutil.which("accelerate") or "accelerate", "launch", "--num_processes", "1", "--cpu", script, *args]


def run_demo(out: str | os.PathLike, size: DemoSize, fresh: bool = False) -> int:
    out = Path(out).resolve()
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    log = StepLog()
    started = time.perf_counter()
    scenes, shards_dir = out / "scenes", out / "shards"

    log.run("1/9 generate RGB-D scenes (train images, validation and test ground truth)", _python(
        "-m", "shards", "scenes", "--count", str(size.train_scenes), "--start", "0",
        "--size", "512x384", "--out", str(scenes / "train")))
    log.run("1/9 (validation scenes, with sensor-like holes)", _python(
        "-m", "shards", "scenes", "--count", str(size.val_scenes), "--start", "100000", "--holes", "true",
        "--out", str(scenes / "val")))
    nyu = write_nyu_test_scenes(out / "nyu", size.test_scenes, seed=200000)
    print(f"    test scenes in the official NYU layout: {nyu.labeled} + {nyu.splits}")

    log.run("2/9 fit the demo's tiny teacher on training-scene ground truth (a stand-in for DPT-Hybrid)", _python(
        "-m", "demo.teacher", "--scenes", str(scenes / "train"), "--out", str(out / "teacher"),
        "--steps", str(size.teacher_steps)))

    log.run("3/9 pseudo-label the training images with the teacher", _accelerate(
        "pseudolabel.py", "--config", "configs/pseudolabel/demo.yaml",
        "--source.path", str(scenes / "train" / "rgb"), "--teacher.model", str(out / "teacher"),
        "--output.dir", str(shards_dir / "pseudo")))
    log.run("4/9 import held-out ground truth as validation shards", _python(
        "-m", "shards", "import-rgbd", "--images", str(scenes / "val" / "rgb"), "--depths",
        str(scenes / "val" / "depth"), "--depth_scale", "1000", "--out", str(shards_dir / "val")))

    log.run("5/9 verify the shards and draw them", _python("-m", "shards", "verify", str(shards_dir / "pseudo")))
    log.run("5/9 (validation shards)", _python("-m", "shards", "verify", str(shards_dir / "val")))
    log.run("5/9 (picture)", _python("-m", "shards", "show", str(shards_dir / "pseudo"), "--count", "8",
                        "--out", str(out / "shards_pseudo.png")))

    shutil.rmtree(out / "distill", ignore_errors=True)  # distill.py refuses a folder holding a run: a rerun trains anew
    log.run("6/9 distil the student", _accelerate(
        "distill.py", "--config", "configs/distill/demo.yaml",
        "--data.train", str(shards_dir / "pseudo"), "--data.val", str(shards_dir / "val"),
        "--train.steps", str(size.distill_steps), "--data.batch_size", str(size.batch_size),
        "--output.dir", str(out / "distill")))

    student = out / "distill" / "student"
    evaluations = {
        "student": str(student),
        "untrained student": str(out / "untrained_student"),
        "constant": "constant",
        "teacher": str(out / "teacher"),
    }
    _save_untrained_student(student, out / "untrained_student")
    for name, model in evaluations.items():  # --overwrite: a second demo writes over its own reports on purpose
        log.run(f"7/9 evaluate on held-out scenes, NYU protocol: {name}", _python(
            "-m", "distill.evaluate", "--model", model, "--data", str(nyu.labeled), "--splits", str(nyu.splits),
            "--out", str(out / "eval" / name.replace(" ", "_")), "--overwrite", "true"))

    picture = draw_comparison(shards_dir / "val", out / "teacher", student, out / "demo_picture.png")
    print(f"    picture of held-out scenes (input, ground truth, teacher, student): {picture}")

    onnx = out / "export" / "student.onnx"
    log.run("8/9 export to ONNX (with the parity check) and time it", _python(
        "-m", "distill.export", "--model", str(student), "--format", "onnx", "--out", str(onnx)))
    log.run("8/9 (latency)", _python("-m", "distill.benchmark", "--model", str(student), "--repeats", "10",
                                     "--throughput_repeats", "3", "--out", str(out / "export" / "benchmark.json")))

    pictures = sorted((scenes / "val" / "rgb").glob("*.png"))[:4]
    log.run("9/9 predict on a few pictures", _python(  # --overwrite: a second demo writes over its own maps
        "-m", "distill.predict", "--model", str(onnx), *map(str, pictures), "--out", str(out / "predict"),
        "--overwrite", "true"))

    summary = write_summary(out, evaluations, log.steps, time.perf_counter() - started, size.require_win)
    print("\n" + summary)
    return 0


def _save_untrained_student(trained: Path, folder: Path) -> None:
    """The untrained baseline: the same architecture, freshly initialised with the same seed the training used."""
    import torch

    from distill.students import create_student, read_student_config, save_student

    config = read_student_config(trained)
    torch.manual_seed(0)
    np.random.seed(0)
    save_student(create_student(config), config, folder)
    (folder / "demo.json").write_text(json.dumps({"note": "untrained baseline, random initialisation, seed 0"}))
