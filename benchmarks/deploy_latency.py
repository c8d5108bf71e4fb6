"""Deployment latency: our student and the original FastDepth architecture, side by side in one run on this machine.

    python benchmarks/deploy_latency.py [--repeats 50] [--throughput_repeats 10] [--threads N]

Both students are built from their recipes (``configs/distill/places365_fastdepth.yaml``: MobileNetV3-Large,
bilinear; ``configs/distill/fastdepth_original.yaml``: MobileNet v1, nearest) with random weights (latency does not
depend on weight values) and timed by ``distill.benchmark``: PyTorch eager (channels_last), ONNX Runtime fp32
(``ORT_ENABLE_ALL``) and ONNX Runtime int8 (static QDQ), each backend in its own subprocess one after the other, at
batch 1 (latency) and batch 8 (throughput), against the compute lower bound 2 x MACs / (measured fp32 matmul FLOP/s).
Prints the table and the issue's targets, and writes ``benchmarks/results/deploy_latency.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

from distill.deploy import benchmark
from distill.students import create_student, save_student
from distill.students.config import STUDENT_SIZE
from distill.training.config import DistillConfig
from shards.cli.config import load_config

ROOT = Path(__file__).resolve().parents[1]
#: name in the table -> the recipe whose ``student`` section is benchmarked.
RECIPES = {
    "ours_mobilenetv3_bilinear": ROOT / "configs" / "distill" / "places365_fastdepth.yaml",
    "fastdepth_original_mobilenetv1": ROOT / "configs" / "distill" / "fastdepth_original.yaml",
}
#: Targets from the deployment issue.
TARGET_ORT_SPEEDUP = 1.5
TARGET_LOWER_BOUND_RATIO = 4.0


def targets(result: dict) -> list[dict]:
    """The issue's three targets, checked on each student's batch-1 figures."""
    checks = []
    for student in result["students"]:
        backends, ratios = student["backends"], student["ratios"]
        best = min(backends, key=lambda name: backends[name]["batch1"]["median_ms"])
        checks += [
            {
                "student": student["name"],
                "target": f"ORT fp32 >= {TARGET_ORT_SPEEDUP}x faster than eager at batch 1",
                "value": ratios["ort_fp32_vs_torch_eager_speedup_batch1"],
                "met": ratios["ort_fp32_vs_torch_eager_speedup_batch1"] >= TARGET_ORT_SPEEDUP,
            },
            {
                "student": student["name"],
                "target": f"within {TARGET_LOWER_BOUND_RATIO}x of the compute lower bound at batch 1 ({best})",
                "value": backends[best]["batch1"]["ratio_to_lower_bound"],
                "met": backends[best]["batch1"]["ratio_to_lower_bound"] <= TARGET_LOWER_BOUND_RATIO,
            },
            {
                "student": student["name"],
                "target": "int8 faster than ORT fp32 at batch 1",
                "value": ratios["ort_int8_vs_ort_fp32_speedup_batch1"],
                "met": ratios["ort_int8_vs_ort_fp32_speedup_batch1"] > 1.0,
            },
        ]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls at batch 1")
    parser.add_argument("--throughput_repeats", type=int, default=10, help="timed calls at batch 8")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sequence; median of the rounds")
    parser.add_argument("--threads", type=int, help="threads for every backend (default: each runtime's choice)")
    parser.add_argument("--height", type=int, default=STUDENT_SIZE[1])
    parser.add_argument("--width", type=int, default=STUDENT_SIZE[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deploy_latency.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="deploy-latency-") as scratch:
        folders = []
        for name, recipe in RECIPES.items():
            config = dataclasses.replace(load_config(DistillConfig, recipe).student, pretrained=False)
            folders.append(str(save_student(create_student(config), config, Path(scratch) / name)))
        result = benchmark.run_benchmark(
            folders,
            names=list(RECIPES),
            height=args.height,
            width=args.width,
            warmup=args.warmup,
            repeats=args.repeats,
            throughput_repeats=args.throughput_repeats,
            threads=args.threads,
            rounds=args.rounds,
        )
    result["recipes"] = {name: str(path.relative_to(ROOT)) for name, path in RECIPES.items()}
    result["command"] = "python benchmarks/deploy_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["targets"] = targets(result)
    print(benchmark.format_report(result))
    print("\ntargets (issue 6):")
    for check in result["targets"]:
        verdict = "met" if check["met"] else "NOT met"
        print(f"  {check['student']}: {check['target']}: {check['value']:.2f} -> {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
