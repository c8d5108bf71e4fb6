"""What int8 costs in accuracy: the same student as PyTorch, ONNX fp32 and ONNX int8 (static and dynamic), scored by
the evaluation command (``distill.evaluate``) on the same data.

    python benchmarks/deploy_int8_accuracy.py [--minutes 3] [--model FOLDER] [--size 128x96]

Without ``--model``, a reference student (MobileNetV3-Large FastDepth, random init: no ImageNet weights offline)
is first trained for ``--minutes`` on generated scenes (``shards.tools.scenes``, metric depth as inverse-depth labels,
the project's SSI loss, AdamW 1e-3, batch 16) so that the quantised model has real structure to lose. Then it is
exported (parity-checked), quantised (static: calibrated on 16 training scenes; dynamic), and every form is
evaluated on held-out scenes written in the official NYU layout (``shards.tools.nyu.write_nyu_labeled`` /
``write_nyu_splits``, raw depth with sensor-like holes) under the reference protocol. Prints the table and writes
``benchmarks/results/deploy_int8_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distill.deploy.export import check_parity, export_onnx, parity_inputs, quantize_int8
from distill.evaluation import evaluate
from distill.students import StudentConfig, create_student, load_student, save_student
from distill.training.losses import build_loss, target_in_space
from shards.tools.scenes import render_scene
from shards.tools.testing import write_nyu_labeled, write_nyu_splits

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("abs_rel", "rmse", "delta1")


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def train_student(folder: Path, width: int, height: int, minutes: float, scenes: int, seed: int = 0) -> dict:
    """A reference student fitted to generated scenes for a bounded time; returns what was done."""
    torch.manual_seed(seed)
    config = StudentConfig(pretrained=False)
    model = create_student(config).to(memory_format=torch.channels_last).train()
    rendered = [render_scene(seed + index, width=width, height=height) for index in range(scenes)]
    images = torch.from_numpy(np.stack([s.image for s in rendered])).permute(0, 3, 1, 2).float() / 255.0
    depth = torch.from_numpy(np.stack([s.depth for s in rendered]))[:, None]  # (N, 1, H, W) metres
    inverse, valid = target_in_space(depth, depth > 0, torch.ones(len(rendered), dtype=torch.bool))  # 1 / metres
    loss_fn = build_loss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    started, steps, losses = time.perf_counter(), 0, []
    while time.perf_counter() - started < minutes * 60:
        batch = torch.randint(0, len(rendered), (16,), generator=generator)
        flip = torch.rand(()) < 0.5
        image, target, mask = images[batch], inverse[batch], valid[batch]
        if flip:
            image, target, mask = image.flip(-1), target.flip(-1), mask.flip(-1)
        prediction = model(image.contiguous(memory_format=torch.channels_last))
        loss = loss_fn(prediction, target, mask)["loss"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        steps += 1
    save_student(model.eval(), config, folder)
    return {"steps": steps, "seconds": time.perf_counter() - started, "scenes": scenes, "loss_last_10": losses[-10:]}


def write_nyu_scenes(folder: Path, count: int, first_seed: int) -> tuple[Path, Path]:
    """Held-out 640x480 scenes in the official NYU files (raw depth with holes; in-painted = exact depth): frame 1 is
    the train split, frames 2..count + 1 the test split."""
    count += 1
    with_holes = [render_scene(first_seed + index, holes=True) for index in range(count)]
    images = np.stack([scene.image for scene in with_holes])
    raw = np.stack([np.where(scene.valid, scene.depth, 0.0) for scene in with_holes]).astype(np.float32)
    exact = np.stack([render_scene(first_seed + index).depth for index in range(count)])
    labeled = write_nyu_labeled(folder / "nyu_depth_v2_labeled.mat", images, exact, raw)
    splits = write_nyu_splits(folder / "splits.mat", [1], list(range(2, count + 1)))
    return labeled, splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a trained student folder (default: train one on scenes)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time when no --model is given")
    parser.add_argument("--train-scenes", type=int, default=512)
    parser.add_argument("--eval-scenes", type=int, default=32)
    parser.add_argument("--size", type=_size, default=(128, 96), help="model input WxH (multiples of 32)")
    parser.add_argument("--threads", type=int, help="PyTorch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deploy_int8_accuracy.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = args.size
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"command": "python benchmarks/deploy_int8_accuracy.py " + " ".join(argv or sys.argv[1:])}

    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as scratch:
        work = Path(scratch)
        student = args.student
        if student is None:
            student = work / "student"
            result["training"] = train_student(student, width, height, args.minutes, args.train_scenes)
            logging.info("trained: %s", result["training"])
        model, _ = load_student(student)
        fp32 = export_onnx(model, work / "student.onnx", height=height, width=width)
        result["parity"] = check_parity(model, fp32, parity_inputs(height, width)).to_dict()
        calibration = [render_scene(seed, width=width, height=height).image for seed in range(16)]
        models = {"torch": student, "onnx_fp32": fp32}
        for mode in ("static", "dynamic"):
            models[f"onnx_int8_{mode}"] = quantize_int8(fp32, work / f"student.int8.{mode}.onnx", mode, calibration)
        labeled, splits = write_nyu_scenes(work, args.eval_scenes, first_seed=100_000)
        scores = {}
        for name, model_path in models.items():
            out = work / f"eval_{name}"
            data = ["--data", str(labeled), "--splits", str(splits), "--size", f"{width}x{height}"]
            evaluate.main(["--model", str(model_path), *data, "--out", str(out)])
            record = json.loads((out / "metrics.json").read_text())
            scores[name] = {key: record["metrics"][key] for key in record["metrics"]}
            scores[name]["frames"] = record["count"]
    result.update(input_size=[width, height], eval_scenes=args.eval_scenes, protocol="reference", metrics=scores)
    result["change_vs_fp32"] = {
        name: {key: scores[name][key] - scores["onnx_fp32"][key] for key in METRICS} for name in scores
    }
    print(f"\n{'model':<18} " + " ".join(f"{key:>9}" for key in METRICS) + "   change vs ONNX fp32")
    for name, figures in scores.items():
        change = result["change_vs_fp32"][name]
        print(
            f"{name:<18} "
            + " ".join(f"{figures[key]:>9.4f}" for key in METRICS)
            + "   "
            + ", ".join(f"{key} {change[key]:+.4f}" for key in METRICS)
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
