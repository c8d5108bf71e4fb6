"""Latency of every runtime on the reference student and the original FastDepth, side by side in one run:
PyTorch eager, ONNX Runtime fp32 and int8, LiteRT fp32 and int8, ExecuTorch (XNNPACK) fp32 and int8, at batch 1
with one thread and with all threads.

    python benchmarks/runtime_latency.py [--repeats 40] [--rounds 2] [--recipe configs/distill/X.yaml ...]
        [--out benchmarks/results/runtime_latency.json]

Each student is built from its recipe (default: ``places365_fastdepth.yaml``, the reference, and
``fastdepth_original.yaml``) with random weights (latency does not depend
on their values) at 256x192 and exported to each format through ``distill.deploy.export`` (fp32 parity checked;
int8 calibrated on generated scenes). Each (runtime, threads) and each matmul is timed in its OWN subprocess, one
after the other, in ``--rounds`` interleaved rounds (median of the rounds' medians), so thread pools never share a
process and slow spells of a loaded machine spread over all runtimes. Ratios are to the compute bound of
``distill.deploy.benchmark`` at the same thread count: 2 x MACs / (the faster fp32 GEMM engine's matmul FLOP/s).
A runtime whose toolchain is not installed is left out, and the output says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.deploy.benchmark import (  # noqa: E402
    BACKEND_FORMATS,  # noqa: E402
    BACKEND_LABELS,
    RUNTIME_BACKENDS,
    count_macs,  # noqa: E402
    lower_bound_ms,
    measure_backend,
    measure_matmul_flops,
)
from distill.deploy.benchmark import BACKENDS as LATENCY_BACKENDS  # noqa: E402
from distill.deploy.export import SUFFIXES, int8_path_for, missing_toolchain  # noqa: E402
from distill.students.config import STUDENT_SIZE  # noqa: E402
from distill.training.config import DistillConfig  # noqa: E402
from shards.cli.config import load_config  # noqa: E402

RECIPES = [ROOT / "configs" / "distill" / name for name in ("places365_fastdepth.yaml", "fastdepth_original.yaml")]
BACKENDS = (*LATENCY_BACKENDS, *RUNTIME_BACKENDS)


def prepare(recipe: Path, workdir: Path, width: int, height: int) -> tuple[dict[str, str], int, list[str]]:
    """The student folder and every exported file; returns backend -> model path, MACs, runtimes left out."""
    import torch

    from distill.deploy.export import export
    from distill.students import create_student, save_student

    torch.manual_seed(0)
    config = load_config(DistillConfig, recipe).student
    config = dataclasses.replace(config, pretrained=False, pretrained_file=None)
    model = create_student(config).eval()
    folder = save_student(model, config, workdir / "student")
    macs = count_macs(model, (1, 3, height, width))
    models, missing = {"torch_eager": str(folder)}, []
    done: set[str] = set()
    for backend, (format, int8) in BACKEND_FORMATS.items():
        absent = missing_toolchain(format, int8)
        if absent:
            missing.append(f"{backend} ({', '.join(absent)} not installed)")
            continue
        out = workdir / f"student{SUFFIXES[format]}"
        if format not in done:
            torch.set_num_threads(1)
            export(model, format, out, int8=True, height=height, width=width, calibration_count=16)
            done.add(format)
        models[backend] = str(int8_path_for(out) if int8 else out)
    return models, macs, missing


def worker(arguments: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(arguments)}):\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(repeats: int, rounds: int, width: int, height: int, recipes: list[Path]) -> dict:
    thread_counts = sorted({1, os.cpu_count() or 1})
    with tempfile.TemporaryDirectory() as tmp:
        students = {}
        for recipe in recipes:
            students[recipe.stem] = prepare(recipe, Path(tmp) / recipe.stem, width, height)
        timings: dict[tuple[str, str, int], list[float]] = {}
        flops: dict[int, list[float]] = {}
        for _ in range(rounds):
            for threads in thread_counts:
                flops.setdefault(threads, []).append(
                    worker(["--worker", "matmul", "--threads", str(threads)])["flops_per_s_median"]
                )
                for student, (models, _, _) in students.items():
                    for backend, model in models.items():
                        result = worker(["--worker", backend, "--model", model, "--threads", str(threads),
                                         "--repeats", str(repeats), "--width", str(width), "--height", str(height)])
                        timings.setdefault((student, backend, threads), []).append(result["batch1"]["median_ms"])
    rows = []
    for (student, backend, threads), values in timings.items():
        bound = lower_bound_ms(students[student][1], statistics.median(flops[threads]))
        median = statistics.median(values)
        rows.append({"student": student, "backend": backend, "threads": threads, "median_ms": median,
                     "rounds_ms": values, "bound_ms": bound, "ratio_to_bound": median / bound})
    missing = sorted({item for _, _, left_out in students.values() for item in left_out})
    return {"size": [width, height], "macs": {name: macs for name, (_, macs, _) in students.items()},
            "repeats": repeats, "rounds": rounds, "rows": rows,
            "matmul_flops_per_s": {str(t): statistics.median(v) for t, v in flops.items()}, "left_out": missing}


def table(result: dict) -> str:
    lines = ["| student | runtime | threads | batch-1 ms | compute bound ms | ratio to bound |",
             "|---|---|---|---|---|---|"]
    for row in sorted(result["rows"], key=lambda r: (r["student"], r["threads"], r["median_ms"])):
        lines.append(f"| {row['student']} | {BACKEND_LABELS[row['backend']]} | {row['threads']} | "
                     f"{row['median_ms']:.1f} | {row['bound_ms']:.1f} | {row['ratio_to_bound']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=int, default=STUDENT_SIZE[0])
    parser.add_argument("--height", type=int, default=STUDENT_SIZE[1])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime_latency.json")
    parser.add_argument("--recipe", type=Path, action="append", help="a student recipe (repeatable; default: both)")
    parser.add_argument("--worker", choices=("matmul", *BACKENDS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "matmul":
        print(json.dumps(measure_matmul_flops(threads=args.threads)))
        return 0
    if args.worker:
        print(json.dumps(measure_backend(args.worker, args.model, args.height, args.width, 5, args.repeats, 0,
                                         threads=args.threads)))
        return 0
    logging.basicConfig(level=logging.WARNING)
    result = run(args.repeats, args.rounds, args.width, args.height, args.recipe or RECIPES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    if result["left_out"]:
        print("left out:", "; ".join(result["left_out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
