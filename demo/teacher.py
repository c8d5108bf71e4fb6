"""``python -m demo.teacher``: fit the demo's tiny DPT teacher on generated-scene ground truth.

A randomly initialised teacher labels noise, and a student distilled from it learns noise. So the demo first
teaches a tiny DPT (the real DPT architecture at 0.1 M parameters) the scenes' depth for a fixed number of steps
(so the demo's figures are the same on a fast and a slow machine) with the project's scale-and-shift-invariant
loss, saves it with ``save_pretrained``, and pseudolabel then loads it by path like any hub teacher. It runs at the
pipeline's 384x512 through the same grid-aware forward as DPT-Hybrid.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForDepthEstimation

from distill.training.config import LossConfig
from distill.training.losses import build_loss, target_in_space
from pseudolabel.teachers import DEFAULT_NORMALISATION, dpt_depth
from pseudolabel.tiny_teacher import save_tiny_teacher

logger = logging.getLogger("demo.teacher")


def load_scene_folder(folder: Path, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rgb/*.png`` and ``depth/*.png`` (16-bit millimetres) -> uint8 (N, H, W, 3) and metres (N, H, W)."""
    names = sorted((folder / "rgb").glob("*.png"))[:limit]
    if not names:
        raise FileNotFoundError(f"no scenes in {folder / 'rgb'}: run python -m shards scenes --out {folder}")
    images = np.stack([np.asarray(Image.open(name).convert("RGB")) for name in names])
    depth_files = [folder / "depth" / name.name for name in names]
    depths = np.stack([np.asarray(Image.open(path), dtype=np.float32) / 1000.0 for path in depth_files])
    return torch.from_numpy(images), torch.from_numpy(depths)


#: Training window (height, width), a quarter of a 384x512 frame: steps alternate between random crops at the
#: pipeline's pixel scale (the teacher labels 384x512 frames) and whole frames at half scale (the global layout), at a
#: quarter of the full-frame cost; position embeddings are interpolated to each grid by the same forward.
CROP = (192, 256)


def half_frames(
    images: torch.Tensor, depths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` whole scenes at half size: images area-averaged, depth nearest (never averaged across edges)."""
    index = torch.randint(len(images), (batch_size,), generator=generator)
    pixels = torch.nn.functional.interpolate(images[index].permute(0, 3, 1, 2).float(), size=CROP, mode="area")
    depth = torch.nn.functional.interpolate(depths[index][:, None], size=CROP, mode="nearest-exact")[:, 0]
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1), depth


def random_crops(
    images: torch.Tensor, depths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random CROP-sized windows of random scenes, image and depth aligned."""
    index = torch.randint(len(images), (batch_size,), generator=generator).tolist()
    height, width = images.shape[1:3]
    tops = torch.randint(height - CROP[0] + 1, (batch_size,), generator=generator).tolist()
    lefts = torch.randint(width - CROP[1] + 1, (batch_size,), generator=generator).tolist()
    crop_images = torch.stack([images[i, t : t + CROP[0], l : l + CROP[1]] for i, t, l in zip(index, tops, lefts)])
    crop_depths = torch.stack([depths[i, t : t + CROP[0], l : l + CROP[1]] for i, t, l in zip(index, tops, lefts)])
    return crop_images, crop_depths


def tiny_teacher_depth(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Normalised CROP-sized pixels (B, 3, H, W) -> the teacher's map (B, 1, H, W): DPT through the pipeline's
    grid-aware forward; Depth Anything (patches of 14) on the nearest multiple of 14, its map resized back."""
    if model.config.model_type == "dpt":
        return dpt_depth(model, pixels)[:, None]
    size = [max(14, round(side / 14) * 14) for side in pixels.shape[-2:]]
    resized = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
    depth = model(pixel_values=resized).predicted_depth[:, None]
    return torch.nn.functional.interpolate(depth, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


def fit_teacher(scenes: Path, out: Path, steps: int, batch_size: int = 8, limit: int = 256, seed: int = 0,
                architecture: str = "dpt") -> dict:
    """Fit the tiny teacher (``dpt``, or ``depth_anything`` for a second family) for ``steps`` optimizer steps
    (seeded: the same teacher on every machine), save it."""
    torch.manual_seed(seed)
    images, depths = load_scene_folder(scenes, limit)
    save_tiny_teacher(out, architecture, seed)  # config, preprocessor config, initial weights
    model = AutoModelForDepthEstimation.from_pretrained(out).train()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in DEFAULT_NORMALISATION[architecture])
    loss_function = build_loss(LossConfig(name="ssi"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    started, losses = time.perf_counter(), []
    for step in range(1, steps + 1):
        sampler = random_crops if step % 2 == 1 else half_frames
        crop_images, crop_depths = sampler(images, depths, batch_size, generator)
        pixels = (crop_images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std  # (B, 3, 192, 256)
        metres = crop_depths[:, None]  # (B, 1, 192, 256), 0 = invalid
        target, valid = target_in_space(metres, metres > 0, torch.ones(batch_size, dtype=torch.bool))  # 1 / metres
        prediction = tiny_teacher_depth(model, pixels)  # (B, 1, 192, 256) relative inverse depth
        parts = loss_function(prediction, target, valid)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        losses.append(float(parts["loss"].detach()))
        if step % 25 == 0:
            logger.info("step %d  loss %.4f  (%.0f s)", step, np.mean(losses[-25:]), time.perf_counter() - started)
    model.eval().save_pretrained(out)
    record = {"architecture": architecture, "steps": steps, "seconds": round(time.perf_counter() - started, 1),
              "first_loss": losses[0],
              "last_loss": float(np.mean(losses[-10:])), "scenes": len(images)}
    logger.info("teacher fitted: %s -> %s", record, out)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.teacher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=Path, required=True, help="a folder written by python -m shards scenes")
    parser.add_argument("--out", type=Path, required=True, help="the teacher folder to write (save_pretrained)")
    parser.add_argument("--steps", type=int, default=400,
                        help="optimizer steps (a fixed count: the same teacher on every machine)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    fit_teacher(args.scenes, args.out, args.steps, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
