"""Every student recipe under one bounded training budget, then one comparison table (issue: all students).

    make demo                                                   # once: scenes, the demo teacher, pseudo-label shards
    python benchmarks/compare_students.py --demo demo_out [--steps 300] [--work runs/compare_students]

1. Trains each recipe of :data:`RECIPES` (its file in configs/distill, architecture and loss as written) on the
   demo's pseudo-label shards with one set of overrides shared by all (the demo's: 256x192, batch 8, AdamW lr 2e-3,
   20 warm-up steps, ``--steps`` steps, no EMA, RANDOM INIT: no ImageNet weights offline), each through the
   training command in its own process, timed.
2. Runs ``python -m distill.compare`` on the trained students, the demo teacher and the constant baseline, with
   ONNX Runtime latency, on two held-out sets of generated scenes that no training step saw: the demo's test scenes
   in the official NYU layout (``reference`` protocol) and ``--diode-scenes`` scenes written in DIODE's released
   layout at 1024x768 with sensor-like holes as the mask (``diode_indoor`` protocol).

Copies ``compare.md`` / ``compare.json`` / ``compare.png`` to ``benchmarks/results/compare_students.*`` (the picture
to ``docs/images/compare_students.png``) and writes the training times into ``compare_students_training.json``.
Run it on a quiet machine: the latency column is a timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: Row name -> recipe file. Students that predict metres (the metric recipes) need metric labels; here every
#: student learns from the same relative pseudo-labels, so each recipe is its pseudo-label variant.
RECIPES = {
    "fastdepth": "configs/distill/places365_fastdepth.yaml",
    "fastdepth_original": "configs/distill/fastdepth_original.yaml",
    "resnet18_additive": "configs/distill/resnet18_additive_distill.yaml",
    "deeplabv3_resnet50": "configs/distill/deeplabv3_distill.yaml",
    "rt_monodepth": "configs/distill/rt_monodepth_distill.yaml",
    "rt_monodepth_s": "configs/distill/rt_monodepth_s_distill.yaml",
}
DIODE_SEED = 300_000  # the demo uses seeds below 300,000 (train 0.., val 100000.., test 200000..)


def shared_overrides(demo: Path, steps: int) -> list[str]:
    """The budget every recipe gets: the demo's data and optimisation settings (configs/distill/demo.yaml)."""
    return [
        "--student.pretrained", "false", "--student.pretrained_file", "null",
        "--data.train", str(demo / "shards" / "pseudo"), "--data.train_weights", "null",
        "--data.val", str(demo / "shards" / "val"), "--data.size", "[256, 192]", "--data.batch_size", "8",
        "--data.val_batch_size", "16", "--data.num_workers", "1", "--data.shuffle_buffer", "256",
        "--data.epoch_steps", "100", "--optim.lr", "0.002", "--optim.warmup_steps", "20",
        "--train.steps", str(steps), "--train.ema_decay", "null", "--checkpoint.every", str(steps),
        "--checkpoint.keep", "1", "--log.every", "25", "--log.images_every", "0", "--log.val_every", "0",
        "--log.tensorboard", "false",
    ]


def train_all(demo: Path, work: Path, steps: int) -> dict[str, dict]:
    timings = {}
    for name, recipe in RECIPES.items():
        out = work / name
        if (out / "student" / "model.safetensors").is_file():
            print(f"=== {name}: already trained in {out}", flush=True)
            continue
        command = [sys.executable, "distill.py", "--config", recipe, *shared_overrides(demo, steps),
                   "--output.dir", str(out), "--resume", "latest"]  # an interrupted run continues
        print(f"=== {name}: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True)
        timings[name] = {"recipe": recipe, "steps": steps, "seconds": round(time.perf_counter() - started, 1)}
    return timings


def write_diode_scenes(root: Path, count: int) -> Path:
    """Held-out generated scenes (seeds from :data:`DIODE_SEED`) as a DIODE ``val/indoors`` tree: holes -> mask 0."""
    from shards.tools.rgbd import write_diode_scan
    from shards.tools.scenes import render_scene

    if (root / "val" / "indoors").is_dir():
        return root
    for index in range(count):
        scene = render_scene(DIODE_SEED + index, 1024, 768, holes=True)
        valid = scene.valid & (scene.depth > 0)
        write_diode_scan(root, "val", "indoors", (index, 0, 0, 0), scene.image, scene.depth * valid, valid)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=REPO / "demo_out", help="a finished `make demo` output folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "compare_students")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per student (the demo's budget)")
    parser.add_argument("--latency_repeats", type=int, default=50)
    parser.add_argument("--diode-scenes", type=int, default=24, help="held-out scenes in the DIODE layout")
    args = parser.parse_args(argv)
    demo = args.demo.resolve()
    for needed in (demo / "shards" / "pseudo", demo / "teacher", demo / "nyu"):
        if not needed.exists():
            parser.error(f"{needed} is missing: run `make demo` (or python -m demo --out {demo}) first")
    args.work.mkdir(parents=True, exist_ok=True)
    timings_path = args.work / "training.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings.update(train_all(demo, args.work, args.steps))
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")

    nyu = demo / "nyu"
    compare_out = args.work / "compare"
    command = [sys.executable, "-m", "distill.compare", "--out", str(compare_out), "--overwrite", "true",
               "--latency_repeats", str(args.latency_repeats), "--splits", str(nyu / "splits.mat"),
               "--data", f"scenes_nyu_layout={nyu / 'nyu_depth_v2_labeled.mat'}:reference"]
    if args.diode_scenes:
        diode = write_diode_scenes(args.work / "diode_scenes", args.diode_scenes)
        command += ["--data", f"scenes_diode_layout={diode}:diode_indoor"]
    for name in RECIPES:
        command += ["--model", f"{name}={args.work / name / 'student'}"]
    command += ["--model", f"teacher={demo / 'teacher'}", "--model", "constant"]
    print("=== compare: " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(compare_out / "compare.md", RESULTS / "compare_students.md")
    shutil.copy(compare_out / "compare.json", RESULTS / "compare_students.json")
    shutil.copy(compare_out / "compare.png", REPO / "docs" / "images" / "compare_students.png")
    (RESULTS / "compare_students_training.json").write_text(json.dumps(timings, indent=2) + "\n")
    print((compare_out / "compare.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
