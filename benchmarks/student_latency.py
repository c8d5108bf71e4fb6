"""Student size, compute and CPU latency beside the original FastDepth, each timed in its own subprocess.

    python benchmarks/student_latency.py [--repeats 50] [--threads N]

For each architecture (our MobileNetV3-Large FastDepth, the phone recipe's MobileNetV3-Large "minimal" FastDepth, and
the original MobileNet v1 FastDepth: NNConv5, nearest, skips at strides 2/4/8): parameters, MACs at 1x3x192x256
(``distill.deploy.benchmark``) and PyTorch eager latency at batch 1 (median of ``--repeats`` calls under
``inference_mode``), NCHW and channels_last, random init (the weights do not change the time). Each (architecture,
layout) runs in a fresh subprocess, one after the other, so no thread pool or allocator state carries over.
Writes ``benchmarks/results/student_latency.json``.
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

ARCHITECTURES = {
    "fastdepth_mobilenetv3": dict(pretrained=False),
    "fastdepth_minimal": dict(encoder="mobilenetv3_large_minimal_100", pretrained=False),
    "fastdepth_original": dict(encoder="mobilenetv1_100", pretrained=False, skip_strides=[2, 4, 8], upsample="nearest"),
}
LAYOUTS = ("nchw", "channels_last")
INPUT_SHAPE = (1, 3, 192, 256)
RESULTS = Path(__file__).resolve().parent / "results" / "student_latency.json"


def worker(name: str, layout: str, repeats: int, threads: int | None) -> dict:
    import torch

    from distill.deploy.benchmark import count_macs, count_parameters
    from distill.students import StudentConfig, create_student

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_student(StudentConfig(**ARCHITECTURES[name])).eval()
    image = torch.rand(INPUT_SHAPE)
    record = {"parameters": count_parameters(model), "macs": count_macs(model, INPUT_SHAPE)}
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    seconds = []
    with torch.inference_mode():
        for _ in range(5):
            model(image)
        for _ in range(repeats):
            start = time.perf_counter()
            model(image)
            seconds.append(time.perf_counter() - start)
    record.update(median_ms=1e3 * statistics.median(seconds), min_ms=1e3 * min(seconds))
    record["threads"] = torch.get_num_threads()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=2, metavar=("ARCH", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats, args.threads)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results = {}
    for name in ARCHITECTURES:
        for layout in LAYOUTS:
            command = [sys.executable, __file__, "--worker", name, layout, "--repeats", str(args.repeats)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
            results[f"{name}/{layout}"] = json.loads(output.strip().splitlines()[-1])
    reference = results["fastdepth_original/nchw"]["median_ms"]
    header = f"{'params (M)':>10s} {'GMAC':>7s} {'median ms':>10s} {'vs original NCHW':>17s}"
    print(f"{'student':24s} {'layout':14s} {header}")
    for key, record in results.items():
        name, layout = key.split("/")
        print(f"{name:24s} {layout:14s} {record['parameters'] / 1e6:10.2f} {record['macs'] / 1e9:7.3f} "
              f"{record['median_ms']:10.1f} {record['median_ms'] / reference:16.2f}x")
    record = {
        "command": "python benchmarks/student_latency.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "input_shape": list(INPUT_SHAPE),
        "repeats": args.repeats,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
