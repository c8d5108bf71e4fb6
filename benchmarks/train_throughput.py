"""Training step throughput on this CPU: the reference student, batch 8 at 256x192, SSI loss, AdamW.

    python benchmarks/train_throughput.py [--steps 10] [--batch 8]

Times full optimizer steps (forward, loss, backward, AdamW step) on a fixed batch of generated scenes, so the figure
is the model's cost alone (the loader is measured by ``train_loader.py``). Two variants, each in its own subprocess:
NCHW and channels_last (the training default). Random init; median step time over ``--steps`` after 2 warm-up steps.
Writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
VARIANTS = ("nchw", "channels_last")
WIDTH, HEIGHT = 256, 192


def worker(variant: str, steps: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from distill.students import StudentConfig, create_student
    from distill.training.losses import build_loss, target_in_space
    from shards.tools.scenes import render_scene

    torch.manual_seed(0)
    scenes = [render_scene(seed, WIDTH, HEIGHT) for seed in range(batch_size)]
    image = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 255
    target = torch.from_numpy(np.stack([s.depth for s in scenes]))[:, None]
    valid = target > 0
    target, valid = target_in_space(target, valid, torch.ones(batch_size, dtype=torch.bool))  # as the loader does
    model = create_student(StudentConfig(pretrained=False)).train()
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = build_loss()
    seconds = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = loss_fn(model(image), target, valid)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"median_step_s": median, "samples_per_s": batch_size / median, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch)))
        return
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--worker", variant, "--steps", str(args.steps)]
        command += ["--batch", str(args.batch)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    base = results["nchw"]["median_step_s"]
    for variant, record in results.items():
        print(f"{variant:14s} batch {args.batch} at {WIDTH}x{HEIGHT}: {record['median_step_s']:.2f} s/step, "
              f"{record['samples_per_s']:.1f} samples/s ({base / record['median_step_s']:.2f}x NCHW)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "batch": args.batch, "size": [WIDTH, HEIGHT], "results": results,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
