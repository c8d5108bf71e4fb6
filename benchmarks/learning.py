"""Does distillation learn? Train the student on generated RGB-D scenes, evaluate on held-out scenes.

    python benchmarks/learning.py [--train-scenes 2000] [--val-scenes 200] [--steps 400] [--width 128 --height 96]

1. Renders ``--train-scenes`` generated scenes (``shards.tools.scenes``) at 1.25x the training size and writes them as
   metric-depth shards with ``shards.format`` (the same format ``import-rgbd`` writes); renders ``--val-scenes``
   other scenes (different seeds) at the training size as the held-out set.
2. Trains the reference student (MobileNetV3-Large FastDepth; RANDOM INIT: no ImageNet weights offline) with the
   training stage itself (``distill.training.train``: SSI loss, AdamW, warm-up + cosine, the usual augmentation) for
   ``--steps`` steps of ``--batch`` at ``--width`` x ``--height``.
3. Evaluates with the project's metric code (``distill.metrics.inverse_depth_metrics``: per-image least-squares
   scale and shift in inverse depth, depth capped at 10 m, all valid pixels) three predictions: a constant map, the
   untrained student (same initial weights), and the trained student. Reports AbsRel and delta1 (and the rest).

Writes ``benchmarks/results/learning.json``; the work folder (shards, run) goes to ``--work`` (a temporary folder
by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from distill.metrics import inverse_depth_metrics, mean_metrics
from distill.students import StudentConfig, create_student, load_student
from distill.training.config import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    LogConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
)
from distill.training.train import train
from shards.format import METRIC_DEPTH, SampleMeta, encode_sample, inverse_depth
from shards.tools.scenes import render_scene
from shards.writer import ShardWriter

RESULTS = Path(__file__).resolve().parent / "results" / "learning.json"
HELD_OUT_SEED = 1_000_000  # held-out scenes use seeds from here: never seen in training
SHOWN = ("abs_rel", "delta1", "rmse", "sq_rel", "rmse_log", "delta2", "delta3")


def write_train_shards(folder: Path, count: int, width: int, height: int, per_shard: int = 250) -> None:
    for shard in range((count + per_shard - 1) // per_shard):
        with ShardWriter(folder, "scenes", 0, shard) as writer:
            for index in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                scene = render_scene(index, width, height)
                meta = SampleMeta(source=f"scene:{index}", kind=METRIC_DEPTH, source_size=(width, height))
                writer.write(encode_sample(f"scenes/{index:06d}", scene.image, scene.depth, meta, valid=scene.valid))


def constant_prediction(image: torch.Tensor) -> torch.Tensor:
    """The same inverse depth everywhere: after alignment, the mean inverse depth of each image."""
    return torch.ones_like(image[:, :1])


def evaluate(predict, scenes) -> dict[str, float]:
    """Mean per-image metrics of ``predict(image (1, 3, H, W)) -> (1, 1, H, W)`` inverse depth over the scenes."""
    per_image: dict[str, list[float]] = {}
    with torch.inference_mode():
        for scene in scenes:
            image = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 255
            valid = torch.from_numpy(scene.valid & (scene.depth > 0))[None, None]
            target_inverse = inverse_depth(torch.from_numpy(scene.depth)[None, None], valid)
            metrics = inverse_depth_metrics(predict(image).float(), target_inverse, valid, metric_label=True)
            for name, values in metrics.items():
                per_image.setdefault(name, []).extend(values.tolist())
    return mean_metrics(per_image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 avoids spinning on a busy host)")
    parser.add_argument("--work", type=Path, default=None, help="keep shards and the run here (default: temporary)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        timings = {}
        start = time.perf_counter()
        sample_size = (int(args.width * 1.25), int(args.height * 1.25))
        if not (work / "shards").is_dir():
            write_train_shards(work / "shards", args.train_scenes, *sample_size)
        held_out = [render_scene(HELD_OUT_SEED + i, args.width, args.height) for i in range(args.val_scenes)]
        timings["generate_s"] = time.perf_counter() - start

        student = StudentConfig(pretrained=False)
        config = DistillConfig(
            student=student,
            data=DataConfig(train=str(work / "shards"), size=[args.width, args.height], batch_size=args.batch,
                            num_workers=args.workers, shuffle_buffer=500, epoch_steps=args.steps),
            optim=OptimConfig(lr=args.lr, warmup_steps=min(50, args.steps // 10)),
            train=TrainConfig(steps=args.steps, ema_decay=None, seed=0),
            checkpoint=CheckpointConfig(every=args.steps, keep=1),
            log=LogConfig(every=max(1, args.steps // 20), images_every=0, tensorboard=False),
            output=OutputConfig(dir=str(work / "run")),
        )
        start = time.perf_counter()
        shutil.rmtree(work / "run", ignore_errors=True)  # train() refuses a folder holding a run: each call trains anew
        result = train(config)
        timings["train_s"] = time.perf_counter() - start

        start = time.perf_counter()
        torch.manual_seed(0)  # train() seeds 0 before creating the student: the same initial weights
        untrained = create_student(student).eval()
        trained, _ = load_student(result.student)
        rows = {
            "constant": evaluate(constant_prediction, held_out),
            "untrained student": evaluate(untrained, held_out),
            "trained student": evaluate(trained, held_out),
        }
        timings["evaluate_s"] = time.perf_counter() - start
        losses = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]

    print(f"{args.train_scenes} training scenes, {args.val_scenes} held-out, {args.steps} steps of batch {args.batch} "
          f"at {args.width}x{args.height}: train {timings['train_s']:.0f} s")
    print(f"{'prediction':20s} " + " ".join(f"{name:>9s}" for name in SHOWN))
    for name, metrics in rows.items():
        print(f"{name:20s} " + " ".join(f"{metrics[m]:9.4f}" for m in SHOWN))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/learning.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "settings": vars(args) | {"work": str(args.work) if args.work else None},
        "timings_s": timings,
        "loss_curve": [(r["step"], r["train/loss"]) for r in losses],
        "metrics": rows,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
