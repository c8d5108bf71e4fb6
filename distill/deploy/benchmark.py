"""Deployment latency on this machine: PyTorch eager, ONNX Runtime, LiteRT and ExecuTorch (fp32 and int8), against
the compute lower bound.

``python -m distill.benchmark --model <folder> [--model <folder2> ...] --out result.json``

For each student: parameters and MACs (``distill.deploy.complexity``) at 1 x 3 x H x W; latency at batch 1 (median of
``--repeats`` calls) and throughput at batch 8 for each backend; the compute lower bound, 2 x MACs divided by this
machine's measured fp32 matrix-multiply FLOP/s (a large ``torch.matmul``, median); and each figure's ratio to it.

Each backend (and the matmul) is timed in its OWN subprocess, one after the other: PyTorch's and ONNX Runtime's
thread pools both spin, and in one process they steal each other's cores (docs/library-notes.md). The parent only
prepares (export, quantisation, counting) and prints. Backends: ``torch_eager`` (channels_last, ``inference_mode``),
``ort_fp32`` (``ORT_ENABLE_ALL``) and ``ort_int8`` (static QDQ int8, calibrated on generated scenes), and the phone
runtimes whose toolchain is installed (``litert_fp32``/``litert_int8``: ``.tflite`` in the LiteRT interpreter;
``executorch_fp32``/``executorch_int8``: ``.pte`` on XNNPACK): their files have batch 1, so they get no batch-8 figure.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.deploy.configs import BENCHMARK_SPELLING, BenchmarkConfig
from distill.deploy.formats import SUFFIXES, TOOLCHAINS, int8_path_for, missing_toolchain, write_format, write_int8
from distill.deploy.latency import (
    BACKEND_LABELS,
    BACKENDS,
    LATENCY_BATCH,
    RUNTIME_BACKENDS,
    THROUGHPUT_BATCH,
    cpu_info,
    int8_note,
    lower_bound_ms,
)
from distill.deploy.runtime import check_input_size
from distill.students import is_student_folder
from shards.argv import parse_size
from shards.config import Command, save_config_beside
from shards.errors import UserError, run_command
from shards.format import STUDENT_SIZE

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# The parent: one subprocess per measurement


def run_worker(arguments: list[str], timeout: float = 1800.0) -> dict:
    """``python -m distill.deploy.latency_worker ...`` in a fresh process; its last stdout line is the JSON result."""
    command = [sys.executable, "-m", "distill.deploy.latency_worker", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(arguments)}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


#: backend -> (the file format it runs, int8); ``torch_eager`` runs the student folder itself.
BACKEND_FORMATS = {
    "ort_fp32": ("onnx", False), "ort_int8": ("onnx", True), "litert_fp32": ("tflite", False),
    "litert_int8": ("tflite", True), "executorch_fp32": ("executorch", False), "executorch_int8": ("executorch", True),
}


def default_backends() -> list[str]:
    """PyTorch eager and ONNX Runtime, and each phone runtime whose toolchain is installed."""
    return [*BACKENDS, *(b for b in RUNTIME_BACKENDS if not missing_toolchain(*BACKEND_FORMATS[b]))]


def prepare_student(
    folder: str, name: str, workdir: Path, height: int, width: int, backends: Sequence[str] = BACKENDS,
    calibration_count: int = 8,
) -> dict:
    """Count parameters and MACs, and write the file each backend runs: fp32 ONNX (parity-checked on random inputs),
    static int8 ONNX, and the phone formats (``.tflite``, ``.pte``, fp32 and int8, batch 1) when asked for."""
    from distill.deploy.complexity import count_macs, count_parameters
    from distill.deploy.parity import check_parity
    from distill.deploy.quantize import calibration_pictures
    from distill.deploy.runtime import images_to_batch
    from distill.students import load_student

    model, config = load_student(folder)
    model.eval()
    pictures = calibration_pictures(None, calibration_count, width, height)
    batches = [images_to_batch([picture], width, height) for picture in pictures]
    models: dict[str, str] = {"torch_eager": str(folder)}
    for backend in backends:
        if backend not in BACKEND_FORMATS:
            continue
        format, int8 = BACKEND_FORMATS[backend]
        fp32_path = workdir / f"{name}{SUFFIXES[format]}"
        if not fp32_path.exists():
            write_format(model, format, fp32_path, height, width)
            if format == "onnx":
                rng = np.random.default_rng(0)
                random_pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
                check_parity(model, fp32_path, {"random": random_pictures})
        path = fp32_path
        if int8:
            path = int8_path_for(fp32_path)
            if not path.exists():
                write_int8(model, format, fp32_path, path, height, width, batches)
        models[backend] = str(path)
    return {
        "name": name,
        "folder": str(folder),
        "encoder": config.encoder,
        "upsample": config.upsample,
        "input": [1, 3, height, width],
        "params": count_parameters(model),
        "macs": count_macs(model, (1, 3, height, width)),
        "models": models,
    }


def student_names(folders: Sequence[str]) -> list[str]:
    """Folder names, made unique (``student``, ``student_2``) for the table and the exported files."""
    return unique_names([Path(folder).resolve().name or "student" for folder in folders])


def unique_names(names: Sequence[str]) -> list[str]:
    """``a``, ``a_2``, ``a_3`` ...: every row and column needs its own name (and report folder)."""
    result: list[str] = []
    for name in names:
        candidate, number = name, 1
        while candidate in result:
            number += 1
            candidate = f"{name}_{number}"
        result.append(candidate)
    return result


def run_benchmark(
    students: Sequence[str],
    names: Sequence[str] | None = None,
    height: int = STUDENT_SIZE[1],
    width: int = STUDENT_SIZE[0],
    warmup: int = 5,
    repeats: int = 50,
    throughput_repeats: int = 10,
    matmul_size: int = 2048,
    matmul_repeats: int = 10,
    threads: int | None = None,
    backends: Sequence[str] = BACKENDS,
    workdir: str | Path | None = None,
    rounds: int = 1,
) -> dict:
    """Prepare every student, then time the matmul and each (student, backend) in its own subprocess, in turn.

    With ``rounds`` > 1 the whole sequence is repeated and each figure is the median of its rounds' medians: on a
    shared machine, load that comes and goes then hits every backend alike instead of one of them.
    """
    import onnxruntime
    import torch

    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as scratch:
        folder = Path(workdir) if workdir else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        names = list(names) if names else student_names(students)
        prepared = [
            prepare_student(student, name, folder, height, width, backends) for student, name in zip(students, names)
        ]
        thread_args = ["--threads", str(threads)] if threads else []
        size_args = ["--size", f"{width}x{height}", "--warmup", str(warmup)]
        size_args += ["--repeats", str(repeats), *thread_args]
        matmul_rounds: list[dict] = []
        backend_rounds: dict[tuple[int, str], list[dict]] = {}
        for round_number in range(rounds):
            logger.info("round %d of %d: fp32 matmul (%d^3)", round_number + 1, rounds, matmul_size)
            matmul_args = ["--matmul_size", str(matmul_size), "--matmul_repeats", str(matmul_repeats), *thread_args]
            matmul_rounds.append(run_worker(["--worker", "matmul", *matmul_args]))
            for index, student in enumerate(prepared):
                for backend in backends:
                    logger.info("round %d: %s on %s", round_number + 1, BACKEND_LABELS[backend], student["name"])
                    # the phone files have batch 1: no throughput at batch 8 for them
                    batch8 = 0 if backend in RUNTIME_BACKENDS else throughput_repeats
                    measured = run_worker(["--worker", backend, "--model", student["models"][backend], *size_args,
                                           "--throughput_repeats", str(batch8)])
                    backend_rounds.setdefault((index, backend), []).append(measured)
    matmul = _combine_matmul(matmul_rounds)
    for index, student in enumerate(prepared):
        student["lower_bound_ms"] = {
            f"batch{batch}": lower_bound_ms(student["macs"], matmul["flops_per_s_median"], batch)
            for batch in (LATENCY_BATCH, THROUGHPUT_BATCH)
        }
        student["backends"] = {}
        for backend in backends:
            measured = _combine_backend(backend_rounds[(index, backend)])
            for key in (f"batch{LATENCY_BATCH}", f"batch{THROUGHPUT_BATCH}"):
                if key in measured:
                    bound = student["lower_bound_ms"][key]
                    measured[key]["ratio_to_lower_bound"] = measured[key]["median_ms"] / bound
            student["backends"][backend] = measured
        student["ratios"] = _ratios(student["backends"])
    cpu = cpu_info()
    return {
        "machine": {
            **cpu,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": threads or "default",
        },
        "settings": {
            "height": height,
            "width": width,
            "warmup": warmup,
            "repeats_batch1": repeats,
            "repeats_batch8": throughput_repeats,
            "rounds": rounds,
            "each_backend_in_own_subprocess": True,
        },
        "matmul": matmul,
        "int8_note": int8_note(cpu),
        "students": prepared,
    }


def _combine_matmul(rounds: list[dict]) -> dict:
    combined = dict(rounds[0])
    rates = [entry["flops_per_s_median"] for entry in rounds]
    combined.update(
        flops_per_s_median=statistics.median(rates),
        flops_per_s_max=max(entry["flops_per_s_max"] for entry in rounds),
        rounds=len(rounds),
        round_medians=rates,
    )
    return combined


def _combine_backend(rounds: list[dict]) -> dict:
    combined = {"backend": rounds[0]["backend"], "threads": rounds[0]["threads"], "rounds": len(rounds)}
    for key in (f"batch{LATENCY_BATCH}", f"batch{THROUGHPUT_BATCH}"):
        if key not in rounds[0]:
            continue
        medians = [entry[key]["median_ms"] for entry in rounds]
        median = statistics.median(medians)
        combined[key] = {
            "batch": rounds[0][key]["batch"],
            "repeats": sum(entry[key]["repeats"] for entry in rounds),
            "median_ms": median,
            "min_ms": min(entry[key]["min_ms"] for entry in rounds),
            "images_per_s": rounds[0][key]["batch"] / median * 1e3,
            "round_medians_ms": medians,
        }
    return combined


def _ratios(backends: dict) -> dict:
    """Speed-ups (> 1 = faster): ORT fp32 over eager, int8 over ORT fp32, at both batch sizes."""
    ratios = {}
    pairs = {"ort_fp32_vs_torch_eager": ("torch_eager", "ort_fp32"), "ort_int8_vs_ort_fp32": ("ort_fp32", "ort_int8")}
    for name, (slow, fast) in pairs.items():
        if slow in backends and fast in backends:
            for key in (f"batch{LATENCY_BATCH}", f"batch{THROUGHPUT_BATCH}"):
                if key in backends[slow] and key in backends[fast]:
                    speedup = backends[slow][key]["median_ms"] / backends[fast][key]["median_ms"]
                    ratios[f"{name}_speedup_{key}"] = speedup
    return ratios


def format_report(result: dict) -> str:
    """The printed table: one row per (student, backend), then the ratios and the int8 note."""
    machine, matmul = result["machine"], result["matmul"]
    width = max([7] + [len(student["name"]) for student in result["students"]])
    lines = [
        f"machine: {machine['processor']}, {machine['logical_cores']} logical cores; torch {machine['torch']}, "
        f"onnxruntime {machine['onnxruntime']}; threads {machine['threads']}; rounds {result['settings']['rounds']}",
        f"fp32 matmul {matmul['size']}^3 ({matmul.get('engine', 'torch')}): "
        f"{matmul['flops_per_s_median'] / 1e9:.1f} GFLOP/s (median, "
        f"{matmul['threads']} threads)",
        "",
        f"{'student':<{width}} {'params':>7} {'GMAC':>6}  {'backend':<15} {'b1 ms':>8} {'bound ms':>8} {'x bound':>7} "
        f"{'b8 img/s':>8} {'x bound':>7}",
    ]
    for student in result["students"]:
        bound = student["lower_bound_ms"]
        for row, (backend, measured) in enumerate(student["backends"].items()):
            head = f"{student['name']:<{width}} {student['params'] / 1e6:>6.2f}M {student['macs'] / 1e9:>6.3f}"
            b1, b8 = measured["batch1"], measured.get("batch8")
            batch8 = f"{b8['images_per_s']:>8.1f} {b8['ratio_to_lower_bound']:>7.2f}" if b8 else f"{'-':>8} {'-':>7}"
            lines.append(
                f"{head if row == 0 else ' ' * len(head)}  {BACKEND_LABELS[backend]:<15} {b1['median_ms']:>8.2f} "
                f"{bound['batch1']:>8.2f} {b1['ratio_to_lower_bound']:>7.2f} {batch8}"
            )
        ratios = student["ratios"]
        for pair, label in (("ort_fp32_vs_torch_eager", "ORT fp32 vs eager"), ("ort_int8_vs_ort_fp32", "int8 vs fp32")):
            if f"{pair}_speedup_batch1" in ratios:
                batch8 = ratios.get(f"{pair}_speedup_batch8")
                lines.append(
                    f"{'':<{width}}   {label}: {ratios[f'{pair}_speedup_batch1']:.2f}x at batch 1"
                    + (f", {batch8:.2f}x at batch 8" if batch8 else "") + " (> 1 = faster)"
                )
    lines += ["", "int8: " + result["int8_note"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Command line


#: ``python -m distill.benchmark``: its config and old spellings.
COMMAND = Command("python -m distill.benchmark", BenchmarkConfig, BENCHMARK_SPELLING)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    if not config.model:
        raise UserError("give at least one student folder: --model runs/x/student")
    width, height = parse_size(config.size)
    try:
        check_input_size(width, height)
    except ValueError as error:
        raise UserError(f"--size: {error}") from error
    for model in config.model:
        if not Path(model).is_dir() or not is_student_folder(Path(model)):
            what = "no such folder" if not Path(model).exists() else "not a student folder"
            raise UserError(
                f"--model {model}: {what}; benchmark times student folders (config.json + model.safetensors, as "
                "written by training)"
            )
    backends = config.backend or default_backends()
    for backend in backends:
        format, int8 = BACKEND_FORMATS.get(backend, ("", False))
        absent = missing_toolchain(format, int8) if format else []
        if absent:
            raise UserError(
                f"--backend {backend} needs {', '.join(absent)}: pip install 'depth-distill[{TOOLCHAINS[format][2]}]'"
            )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = Path(config.out)
    save_config_beside(resolved_yaml, path)
    result = run_benchmark(
        config.model,
        height=height,
        width=width,
        warmup=config.warmup,
        repeats=config.repeats,
        throughput_repeats=config.throughput_repeats,
        matmul_size=config.matmul_size,
        matmul_repeats=config.matmul_repeats,
        threads=config.threads,
        backends=backends,
        workdir=config.workdir,
        rounds=config.rounds,
    )
    print(format_report(result))
    path.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
