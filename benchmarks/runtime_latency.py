"""Latency of every runtime on the students of the phone table, side by side in one run: PyTorch eager, ONNX
Runtime fp32 and int8, LiteRT fp32 and int8, ExecuTorch (XNNPACK) fp32 and int8, at batch 1 with one thread and
with all threads; printed as the markdown table of BENCHMARKS.md ("A student for the chips it runs on").

    python benchmarks/runtime_latency.py [--repeats 40] [--rounds 2] [--student NAME ...]
        [--accuracy benchmarks/results/compare_phone_ranking.json] [--out benchmarks/results/runtime_latency.json]

The students are the rows of ``benchmarks/compare_students.py`` (its recipe file plus the row's overrides; default
:data:`PHONE_TABLE`: the reference, the phone recipe, the original FastDepth, the phone encoder with the original's
nearest upsampling), each built with random weights (latency does not depend on their values) at 256x192 and exported
to each format through ``distill.deploy.export`` (fp32 parity checked; int8 calibrated on generated scenes). Each
(runtime, threads) and each matmul is timed in its OWN subprocess, one after the other, in ``--rounds`` interleaved
rounds (median of the rounds' medians), so thread pools never share a process and slow spells of a loaded machine
spread over all runtimes. Ratios are to the compute bound of ``distill.deploy.benchmark`` at the same thread count:
2 x MACs / (the faster fp32 GEMM engine's matmul FLOP/s). The accuracy columns (AbsRel and δ1 in both ranking modes)
come from ``--accuracy``, the ranking that ``compare_students.py --name compare_phone`` writes, when it exists. A
runtime whose toolchain is not installed is left out, and the output says so.
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

from benchmarks.compare_students import PHONE_TABLE, RECIPES  # noqa: E402
from distill.deploy.benchmark import (  # noqa: E402
    BACKEND_FORMATS,  # noqa: E402
    BACKEND_LABELS,
    RUNTIME_BACKENDS,
    count_macs,  # noqa: E402
    count_parameters,
    cpu_info,
    lower_bound_ms,
    measure_backend,
    measure_matmul_flops,
)
from distill.deploy.benchmark import BACKENDS as LATENCY_BACKENDS  # noqa: E402
from distill.deploy.export import SUFFIXES, int8_path_for, missing_toolchain  # noqa: E402
from distill.students.config import STUDENT_SIZE  # noqa: E402
from distill.training.config import DistillConfig  # noqa: E402
from shards.cli.config import parse_config  # noqa: E402

BACKENDS = (*LATENCY_BACKENDS, *RUNTIME_BACKENDS)
ACCURACY = ROOT / "benchmarks" / "results" / "compare_phone_ranking.json"


def prepare(student: str, workdir: Path, width: int, height: int) -> tuple[dict[str, str], int, int, list[str]]:
    """The student folder and every exported file; returns backend -> model path, MACs, parameters, runtimes left
    out."""
    import torch

    from distill.deploy.export import export
    from distill.students import create_student, save_student

    torch.manual_seed(0)
    recipe, overrides = RECIPES[student]
    config = parse_config(DistillConfig, ["--config", str(ROOT / recipe), *overrides], prog="runtime_latency")[0]
    config = dataclasses.replace(config.student, pretrained=False, pretrained_file=None)
    model = create_student(config).eval()
    folder = save_student(model, config, workdir / "student")
    macs = count_macs(model, (1, 3, height, width))
    parameters = count_parameters(model)
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
    return models, macs, parameters, missing


def worker(arguments: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(arguments)}):\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(repeats: int, rounds: int, width: int, height: int, names: list[str]) -> dict:
    thread_counts = sorted({1, os.cpu_count() or 1})
    with tempfile.TemporaryDirectory() as tmp:
        students = {name: prepare(name, Path(tmp) / name, width, height) for name in names}
        timings: dict[tuple[str, str, int], list[float]] = {}
        flops: dict[int, list[float]] = {}
        for _ in range(rounds):
            for threads in thread_counts:
                flops.setdefault(threads, []).append(
                    worker(["--worker", "matmul", "--threads", str(threads)])["flops_per_s_median"]
                )
                for student, (models, *_) in students.items():
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
    missing = sorted({item for *_, left_out in students.values() for item in left_out})
    return {"size": [width, height], "students": names, "macs": {name: s[1] for name, s in students.items()},
            "parameters": {name: s[2] for name, s in students.items()}, "repeats": repeats, "rounds": rounds,
            "rows": rows, "load_average": os.getloadavg(), "cpu": cpu_info(),
            "matmul_flops_per_s": {str(t): statistics.median(v) for t, v in flops.items()}, "left_out": missing}


def best(rows: list[dict], int8: bool) -> dict | None:
    """The fastest fp32 (or int8) runtime of one student at one thread count (eager counts as fp32)."""
    chosen = [row for row in rows if row["backend"].endswith("int8") == int8]
    return min(chosen, key=lambda row: row["median_ms"]) if chosen else None


def accuracy_cells(accuracy: dict | None, student: str) -> list[str]:
    """AbsRel and δ1 (mean ± sd over seeds) with exact depth and with pseudo-labels, or blanks."""
    rows = {row["student"]: row for row in (accuracy or {}).get("rows", [])}
    cells = []
    for kind in ("exact", "pseudo"):
        for metric in ("abs_rel", "delta1"):
            value = rows.get(student, {}).get(f"{kind}_{metric}")
            cells.append("" if value is None else f"{value['mean']:.3f}" +
                         (f" ± {value['sd']:.3f}" if value["sd"] is not None else ""))
    return cells


def summary_table(result: dict, accuracy: dict | None) -> str:
    """One row per student: size, the best fp32 and int8 runtime at each thread count, int8's speed-up, accuracy."""
    threads = sorted({row["threads"] for row in result["rows"]})
    header = ["student", "params (M)", "GMAC"]
    for count in threads:
        header += [f"best fp32, {count}T: ms (x bound)", f"best int8, {count}T: ms", f"int8 speed-up, {count}T"]
    header += ["AbsRel exact", "δ1 exact", "AbsRel pseudo", "δ1 pseudo"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for student in result["students"]:
        cells = [student, f"{result['parameters'][student] / 1e6:.2f}", f"{result['macs'][student] / 1e9:.3f}"]
        for count in threads:
            rows = [row for row in result["rows"] if row["student"] == student and row["threads"] == count]
            fp32, int8 = best(rows, False), best(rows, True)
            cells.append(f"{fp32['median_ms']:.1f} ({fp32['ratio_to_bound']:.2f}x, "
                         f"{BACKEND_LABELS[fp32['backend']]})" if fp32 else "")
            cells.append(f"{int8['median_ms']:.1f} ({BACKEND_LABELS[int8['backend']]})" if int8 else "")
            cells.append(f"{fp32['median_ms'] / int8['median_ms']:.2f}x" if fp32 and int8 else "")
        cells += accuracy_cells(accuracy, student)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runtime_table(result: dict) -> str:
    """One row per (runtime, threads), one column per student: batch-1 ms and the ratio to the compute bound."""
    names = result["students"]
    lines = ["| runtime | threads | " + " | ".join(f"{name} ms (x bound)" for name in names) + " |",
             "|---|---|" + "---|" * len(names)]
    index = {(row["student"], row["backend"], row["threads"]): row for row in result["rows"]}
    for threads in sorted({row["threads"] for row in result["rows"]}):
        for backend in BACKENDS:
            cells = [index.get((name, backend, threads)) for name in names]
            if not any(cells):
                continue
            text = [f"{c['median_ms']:.1f} ({c['ratio_to_bound']:.2f}x)" if c else "" for c in cells]
            lines.append(f"| {BACKEND_LABELS[backend]} | {threads} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def report(result: dict, accuracy: dict | None) -> str:
    flops = ", ".join(f"{t} thread(s) {v / 1e9:.1f} GFLOP/s" for t, v in result["matmul_flops_per_s"].items())
    load = ", ".join(f"{v:.2f}" for v in result["load_average"])
    int8_instructions = ", ".join(result["cpu"].get("int8_dot_product") or []) or "none"
    return "\n\n".join([
        summary_table(result, accuracy), runtime_table(result),
        f"{result['size'][0]}x{result['size'][1]}, batch 1, median of {result['rounds']} rounds x {result['repeats']} "
        f"calls; compute bound from the fp32 matmul: {flops}; load average at the end {load}; CPU "
        f"{result['cpu'].get('processor')}, int8 dot product: {int8_instructions}.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=int, default=STUDENT_SIZE[0])
    parser.add_argument("--height", type=int, default=STUDENT_SIZE[1])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime_latency.json")
    parser.add_argument("--student", action="append", choices=sorted(RECIPES),
                        help="a row of benchmarks/compare_students.py (repeatable; default: the phone table)")
    parser.add_argument("--accuracy", type=Path, default=ACCURACY, help="the ranking json for the accuracy columns")
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
    result = run(args.repeats, args.rounds, args.width, args.height, args.student or list(PHONE_TABLE))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    accuracy = json.loads(args.accuracy.read_text()) if args.accuracy.is_file() else None
    print(report(result, accuracy))
    if result["left_out"]:
        print("left out:", "; ".join(result["left_out"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
