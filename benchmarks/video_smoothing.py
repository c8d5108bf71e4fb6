"""How much does ``distill.predict``'s temporal smoothing steady a student's maps on video?

    python benchmarks/video_smoothing.py --model runs/compare_students/rt_monodepth/student

Writes a 40-frame clip of one static generated scene (a held-out seed) with per-frame sensor noise (Gaussian,
sigma 8 grey levels) and brightness changes (x 0.9-1.1), runs ``python -m distill.predict`` on it without
smoothing, with ``--smooth mean`` (window 5) and with ``--smooth ema`` (alpha 0.5), and reports the flicker:
mean |change| of the raw inverse depth between consecutive frames over its mean |value|. The scene does not move,
so every change is flicker. Writes ``benchmarks/results/video_smoothing.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from distill.deploy.predict import VideoWriter
from shards.tools.scenes import render_scene

REPO = Path(__file__).resolve().parents[1]
MODES = {"none": [], "mean": ["--smooth", "mean", "--smooth_window", "5"], "ema": ["--smooth", "ema"]}


def write_clip(path: Path, frames: int = 40, seed: int = 200_123) -> None:
    rng = np.random.default_rng(0)
    base = render_scene(seed, 512, 384).image.astype(np.float32)
    with VideoWriter(path, fps=10) as writer:
        for _ in range(frames):
            frame = base * rng.uniform(0.9, 1.1) + rng.normal(0.0, 8.0, base.shape)
            writer.write(frame.clip(0, 255).astype(np.uint8))


def flicker(folder: Path) -> float:
    maps = np.stack([np.load(path) for path in sorted(folder.glob("*.npy"))])
    return float(np.abs(np.diff(maps, axis=0)).mean() / np.abs(maps).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a student folder or .onnx file")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "video_smoothing.json")
    args = parser.parse_args(argv)
    result = {"student": args.model, "frames": 40, "flicker": {}}
    with tempfile.TemporaryDirectory() as work:
        clip = Path(work) / "static_noisy.mp4"
        write_clip(clip)
        for mode, flags in MODES.items():
            out = Path(work) / mode
            command = [sys.executable, "-m", "distill.predict", "--model", args.model, str(clip), "--out",
                       str(out), "--save_raw", "npy", "--video_out", "frames", *flags]
            subprocess.run(command, cwd=REPO, check=True, capture_output=True)
            result["flicker"][mode] = flicker(out / "static_noisy_inverse_depth")
            print(f"{mode:5s} {' '.join(flags) or '(no smoothing)':32s} flicker {result['flicker'][mode]:.4f}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
