"""Evaluation throughput: images per second of ``distill.evaluate`` for the student on CPU, reference protocol.

    python benchmarks/evaluate_throughput.py [--frames 32] [--batch_size 8] [--threads N] [--model FOLDER|.onnx]

Without ``--model`` a reference student (MobileNetV3-Large FastDepth, 256x192, random init: speed does not depend
on weight values) is saved to a temporary folder. ``--frames`` generated 640x480 scenes (``shards.tools.scenes``, raw
depth with sensor-like holes) are written in the official NYU layout (``shards.tools.nyu``), then evaluated end to end
exactly as ``python -m distill.evaluate`` does: reading frames from the .mat, resize, model, resize back,
alignment, metrics, per-image CSV and picture. The figure covers the evaluation loop (reading, model, protocol);
the best / median / worst picture after it is timed apart. A second timing runs the model alone on the same
batches, so the share of the model is known. Prints and writes ``benchmarks/results/evaluate_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distill.deploy.model import DepthModel
from distill.evaluation.evaluate import evaluate
from distill.evaluation.protocols import PRESETS, resize_images
from distill.students import StudentConfig, create_student, save_student
from shards.tools.nyu import NyuSplit
from shards.tools.scenes import render_scene
from shards.tools.testing import write_nyu_labeled, write_nyu_splits

ROOT = Path(__file__).resolve().parents[1]


def write_scenes(folder: Path, count: int) -> tuple[Path, Path]:
    scenes = [render_scene(seed, holes=True) for seed in range(count)]
    images = np.stack([scene.image for scene in scenes])
    raw = np.stack([np.where(scene.valid, scene.depth, 0.0) for scene in scenes]).astype(np.float32)
    labeled = write_nyu_labeled(folder / "nyu_depth_v2_labeled.mat", images, raw, raw)
    splits = write_nyu_splits(folder / "splits.mat", [], list(range(1, count + 1)))
    return labeled, splits


def model_only_seconds(model, source, batch_size: int) -> float:
    """The model alone (input resize included) on the same frames and batches."""
    frames = [source[i] for i in range(len(source))]
    started = time.perf_counter()
    for start in range(0, len(frames), batch_size):
        images = torch.from_numpy(np.stack([f.image for f in frames[start : start + batch_size]]))
        width, height = model.input_size_for(images.shape[2], images.shape[1])  # a teacher: the frame's own
        inputs = resize_images(images.permute(0, 3, 1, 2).float() / 255.0, height, width, "bicubic")
        with torch.inference_mode():
            model.infer(inputs.clamp(0.0, 1.0))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--model", help="a student folder or .onnx (default: a random reference student)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "evaluate_throughput.json")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path = args.model
        if model_path is None:
            torch.manual_seed(0)
            config = StudentConfig(pretrained=False)
            model_path = str(save_student(create_student(config), config, folder / "student"))
        labeled, splits = write_scenes(folder, args.frames)
        model = DepthModel.from_pretrained(model_path, device="cpu", precision="fp32")
        with NyuSplit(labeled, splits) as source:
            model_only_seconds(model, NyuSplit(labeled, splits, limit=args.batch_size), args.batch_size)  # warm-up
            started = time.perf_counter()
            record = evaluate(model, source, PRESETS["reference"], folder / "report", args.batch_size, device="cpu")
            total = time.perf_counter() - started
            model_seconds = model_only_seconds(model, source, args.batch_size)
    loop = record["seconds"]
    result = {
        "benchmark": "evaluate_throughput",
        "command": " ".join(["python benchmarks/evaluate_throughput.py", *given]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "model": record["model"],
        "protocol": "reference",
        "frames": args.frames,
        "batch_size": args.batch_size,
        "images_per_second": args.frames / loop,
        "seconds_evaluation_loop": loop,
        "seconds_with_picture_and_files": total,
        "seconds_model_only": model_seconds,
        "model_share": model_seconds / loop,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{record['model']['model']} on CPU, reference protocol, {args.frames} frames of 640x480, batch "
        f"{args.batch_size}: {result['images_per_second']:.2f} images/s (loop {loop:.1f} s, model alone "
        f"{model_seconds:.1f} s = {100 * result['model_share']:.0f}%; with picture and files {total:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
