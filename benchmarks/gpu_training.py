"""The GPU suite's training section: the student's optimizer step, the loader, and the whole ``distill`` loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_timing import BusySampler, timed_rate

REPO_ROOT = Path(__file__).resolve().parents[1]


def section_training(suite: Any) -> dict[str, Any]:
    from distill.students import StudentConfig, create_student
    from distill.training.config import DistillConfig
    from distill.training.data import build_train_loader
    from distill.training.losses import build_loss
    from distill.training.train import build_optimizer
    from shards.cli.config import parse_config

    width, height = suite.student_size
    batch = suite.student_batch
    records: dict[str, Any] = {"size": [width, height], "batch": batch}
    loss_fn = build_loss()
    image = torch.rand(batch, 3, height, width, device=suite.device).contiguous(memory_format=torch.channels_last)
    target = torch.rand(batch, 1, height, width, device=suite.device) + 0.1
    valid = torch.ones_like(target, dtype=torch.bool)
    autocast = torch.autocast(suite.device.type, dtype=torch.bfloat16)
    for variant, compiled, host_reads in (("eager", False, False), ("eager_host_reads_per_step", False, True),
                                          ("compiled", True, False)):
        torch.manual_seed(0)
        model = create_student(StudentConfig(**suite.student)).to(suite.device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, 1e-3, (0.9, 0.999), 1e-4, suite.device)
        forward = torch.compile(model, backend=suite.compile_backend) if compiled else model

        def step(forward=forward, optimizer=optimizer, host_reads=host_reads) -> None:
            with autocast:
                prediction = forward(image)
            parts = loss_fn(prediction.float(), target, valid, image, None)
            parts["loss"].backward()
            if host_reads:  # what the loop did before: each loss part and the non-finite flag read every step
                _ = [float(value.detach()) for value in parts.values()]
                _ = float((~torch.isfinite(parts["loss"].detach())).float())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        started = time.perf_counter()
        step()
        suite.synchronize()
        first_step_s = round(time.perf_counter() - started, 1)
        suite.reset_peak()
        records[variant] = {**timed_rate(suite, step, batch, suite.seconds(8)), "first_step_s": first_step_s,
                            "peak_gib": suite.peak_gib()}
    shards = suite.results.get("shards_for_training")
    if shards is None:
        raise RuntimeError("the labelling section wrote no shards to train on")
    base = ["--data.train", shards, "--data.size", json.dumps([width, height]), "--data.batch_size", str(batch),
            "--data.shuffle_buffer", "64" if suite.tiny else "1000"]
    for key, value in suite.student.items():
        base += [f"--student.{key}", value if isinstance(value, str) else json.dumps(value)]
    for workers in suite.loader_workers:
        config, _ = parse_config(DistillConfig, base + ["--data.num_workers", str(workers)], prog="distill.py")
        count = 4 if suite.tiny else 10 * workers  # ~10 batches per worker, after its shuffle buffer filled
        loader = iter(build_train_loader(config.data, seed=0, epoch=0, batches=count))
        next(loader)  # workers started and their shuffle buffers filled
        started = time.perf_counter()
        got = sum(1 for _ in loader)
        records[f"loader_workers_{workers}"] = {
            "images_per_s": round(got * batch / (time.perf_counter() - started), 1), "batches": got
        }
    steps = 6 if suite.tiny else 60
    output = suite.work / "distill"
    argv = base + ["--data.num_workers", str(suite.loader_workers[-1]), "--train.steps", str(steps),
                   "--log.every", str(steps // 3), "--log.images_every", "0", "--log.tensorboard", "false",
                   "--checkpoint.every", str(10 * steps), "--optim.warmup_steps", "1", "--output.dir", str(output)]
    # the real command in its own process: Accelerate's precision is fixed per process, and the labelling section
    # already made this one's state
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "bf16" if suite.device.type == "cuda" else "no", "--dynamo_backend", "no"]
    if suite.device.type == "cpu":
        launch.append("--cpu")
    sampler = BusySampler(suite.device)
    sampler.start()
    subprocess.run([*launch, str(REPO_ROOT / "distill.py"), *argv], check=True, cwd=REPO_ROOT)
    sampler.stop.set()
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    records["distill_loop"] = {
        "steps": metrics[-1]["step"], "loader_workers": suite.loader_workers[-1],
        "images_per_s_after_first_interval": [round(m["train/samples_per_s"], 1) for m in metrics[1:]],
        "gpu_busy_fraction": sampler.fraction(),
    }
    return records
