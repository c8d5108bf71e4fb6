"""``python -m distill.deploy.latency_worker``: one timing in a process of its own, its JSON result on the last
stdout line. Started by ``distill.benchmark`` and ``distill.compare`` (one process per backend: PyTorch's and ONNX
Runtime's thread pools both spin, and in one process they steal each other's cores); not a user command."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Literal

from distill.deploy.configs import Backend
from distill.deploy.latency import measure_backend, measure_matmul_flops
from shards.argv import parse_size
from shards.config import Command
from shards.errors import run_command


@dataclass(kw_only=True)
class LatencyWorkerConfig:
    """One timing (internal: started by distill.benchmark and distill.compare)."""

    worker: Literal["matmul"] | Backend
    """what to time: the fp32 matmul, or a backend running --model"""
    model: str | None = None
    """the model file or folder the backend runs"""
    size: str = "256x192"
    """the model's input WxH"""
    warmup: int = 5
    """untimed calls before timing"""
    repeats: int = 50
    """timed calls at batch 1"""
    throughput_repeats: int = 10
    """timed calls at batch 8 (0: none)"""
    threads: int | None = None
    """threads (default: the runtime's choice)"""
    matmul_size: int = 2048
    """side of the square fp32 matmul"""
    matmul_repeats: int = 10
    """timed matmuls"""


COMMAND = Command("python -m distill.deploy.latency_worker", LatencyWorkerConfig)


def _main(argv: list[str] | None) -> int:
    config, _ = COMMAND.parse(argv)
    if config.worker == "matmul":
        result = measure_matmul_flops(config.matmul_size, repeats=config.matmul_repeats, threads=config.threads)
    else:
        width, height = parse_size(config.size)
        result = measure_backend(
            config.worker, config.model, height, width, config.warmup, config.repeats, config.throughput_repeats,
            config.threads,
        )
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


if __name__ == "__main__":
    sys.exit(main())
