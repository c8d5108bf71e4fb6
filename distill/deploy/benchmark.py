"""Deployment latency on this machine: PyTorch eager, ONNX Runtime, LiteRT and ExecuTorch (fp32 and int8), against
the compute lower bound.

``python -m distill.benchmark --model <folder> [--model <folder2> ...] --out result.json``

For each student: parameters and MACs at 1 x 3 x H x W (MACs counted by ``torch.utils.flop_counter``: convolutions,
depthwise included through their weight shape, and matmuls; element-wise ops and resampling are not counted, as in
the usual tables; one MAC = two FLOPs); latency at batch 1 (median of ``--repeats`` calls) and throughput at batch 8
for each backend; the compute lower bound, 2 x MACs divided by this machine's measured fp32 matrix-multiply FLOP/s (a
large matmul, median, the faster of PyTorch's GEMM and ONNX Runtime's); and each figure's ratio to it.

Each backend (and the matmul) is timed in its OWN subprocess, one after the other: PyTorch's and ONNX Runtime's
thread pools both spin, and in one process they steal each other's cores (docs/library-notes.md). The parent only
prepares (export, quantisation, counting) and prints. The subprocess is this module run as a program,
``python -m distill.deploy.benchmark --worker <backend|matmul> ...`` (:data:`WORKER`; not a user command: started by
``distill.benchmark`` and ``distill.compare``), which prints its JSON result on its last stdout line. Backends:
``torch_eager`` (channels_last, ``inference_mode``), ``ort_fp32`` (``ORT_ENABLE_ALL``) and ``ort_int8`` (static QDQ
int8, calibrated on generated scenes), and the phone runtimes whose toolchain is installed (``litert_fp32`` /
``litert_int8``: ``.tflite`` in the LiteRT interpreter; ``executorch_fp32`` / ``executorch_int8``: ``.pte`` on
XNNPACK): their files have batch 1, so they get no batch-8 figure.

One module of over 600 lines, because it is one idea, one measurement: what is counted, how one backend is timed in its
worker, and how the parent runs the workers and combines their rounds belong together (the worker's figures are
the parent's json fields).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from distill.deploy.export import (
    SUFFIXES,
    TOOLCHAINS,
    calibration_pictures,
    check_parity,
    int8_path_for,
    missing_toolchain,
    write_format,
    write_int8,
)
from distill.deploy.model import DepthModel
from distill.deploy.runtime import INPUT_NAME, images_to_batch, onnx_session
from distill.students import is_student_folder
from distill.students.config import STUDENT_SIZE, check_input_size
from shards.cli.config import Command, parse_size, save_config_beside
from shards.cli.errors import UserError, run_command

logger = logging.getLogger(__name__)

#: Every backend by name (the command's choices; a ``Literal`` must be written out).
Backend = Literal[
    "torch_eager", "ort_fp32", "ort_int8", "litert_fp32", "litert_int8", "executorch_fp32", "executorch_int8"
]
BACKENDS = ("torch_eager", "ort_fp32", "ort_int8")
BACKEND_LABELS = {
    "torch_eager": "torch eager", "ort_fp32": "ORT fp32", "ort_int8": "ORT int8", "litert_fp32": "LiteRT fp32",
    "litert_int8": "LiteRT int8", "executorch_fp32": "ExecuTorch fp32", "executorch_int8": "ExecuTorch int8",
}
#: The phone runtimes, timed on their exported files (``.tflite``, ``.pte``) by their runtime's runner.
RUNTIME_BACKENDS = ("litert_fp32", "litert_int8", "executorch_fp32", "executorch_int8")
#: Batch sizes: latency at 1, throughput at 8 (issue 6).
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 8
#: CPU flags of int8 dot-product instructions; without one, int8 convolutions are not faster than fp32.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
#: backend -> (the file format it runs, int8); ``torch_eager`` runs the student folder itself.
BACKEND_FORMATS = {
    "ort_fp32": ("onnx", False), "ort_int8": ("onnx", True), "litert_fp32": ("tflite", False),
    "litert_int8": ("tflite", True), "executorch_fp32": ("executorch", False), "executorch_int8": ("executorch", True),
}


@dataclass(kw_only=True)
class BenchmarkConfig:
    """Latency and throughput of students on this machine: PyTorch eager, ONNX Runtime, LiteRT and ExecuTorch, fp32
    and int8, against the compute lower bound (docs/deploy.md)."""

    model: list[str]
    """the student folders to time (repeatable)"""
    out: str
    """the JSON file of every figure (its config <out>.config.yaml beside it)"""
    size: str = f"{STUDENT_SIZE[0]}x{STUDENT_SIZE[1]}"
    """the models' input WxH (multiples of 32)"""
    warmup: int = 5
    """untimed calls before each timing"""
    repeats: int = 50
    """timed calls at batch 1"""
    throughput_repeats: int = 10
    """timed calls at batch 8"""
    matmul_size: int = 2048
    """side of the square fp32 matmul that measures the compute bound"""
    matmul_repeats: int = 10
    """timed matmuls (the median is reported)"""
    threads: int | None = None
    """threads for every backend (default: each runtime's choice)"""
    backend: list[Backend] | None = None
    """only these backends (repeatable; default: eager, ONNX Runtime, and each phone runtime that is installed)"""
    rounds: int = 1
    """repeat the whole sequence; the median of the rounds is reported"""
    workdir: str | None = None
    """keep the exported models here (default: a temporary folder)"""


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


# --------------------------------------------------------------------------------------------------------------
# Size and compute


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them by default; buffers such as BN statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass on a zero input of ``input_shape`` (e.g. (1, 3, 192, 256)), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(tuple(input_shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


# --------------------------------------------------------------------------------------------------------------
# Timing, inside a worker process


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_matmul_flops(size: int = 2048, warmup: int = 2, repeats: int = 10, threads: int | None = None) -> dict:
    """This machine's fp32 matrix-multiply rate: the median FLOP/s of ``size`` x ``size`` @ ``size`` x ``size``, the
    faster of PyTorch's GEMM and ONNX Runtime's (MLAS), each reported. Why both: a library may not use the CPU's
    widest units (seen here: MKL through torch at 221 GFLOP/s against MLAS at 454 on an AMD EPYC with AVX-512), and
    a bound taken from the slower one would let a model look faster than the machine."""
    if threads:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    left = torch.rand(size, size, generator=generator)
    right = torch.rand(size, size, generator=generator)
    result = torch.empty(size, size)
    flops = 2.0 * size**3
    engines = {"torch": time_calls(lambda: torch.matmul(left, right, out=result), warmup, repeats)}
    ort_matmul = _onnxruntime_matmul(size, threads)
    if ort_matmul is not None:
        left_array, right_array = left.numpy(), right.numpy()
        engines["onnxruntime"] = time_calls(lambda: ort_matmul(left_array, right_array), warmup, repeats)
    rates = {name: flops / statistics.median(seconds) for name, seconds in engines.items()}
    fastest = max(rates, key=rates.get)
    return {
        "size": size,
        "repeats": len(engines[fastest]),
        "engine": fastest,
        "flops_per_s_median": rates[fastest],
        "flops_per_s_max": flops / min(engines[fastest]),
        "flops_per_s_median_by_engine": rates,
        "threads": torch.get_num_threads(),
    }


def _onnxruntime_matmul(size: int, threads: int | None) -> Callable[[np.ndarray, np.ndarray], object] | None:
    """A one-node ONNX MatMul session (None without onnxruntime / onnx): MLAS's GEMM, which the students use."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        return None
    shape = [size, size]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    try:
        session = onnx_session(model.SerializeToString(), threads=threads, providers=["CPUExecutionProvider"])
    except ImportError:
        return None
    return lambda a, b: session.run(["c"], {"a": a, "b": b})


def _backend_runner(backend: str, model: str, threads: int | None) -> tuple[Callable[[np.ndarray], Callable], object]:
    """Load ``model`` once for ``backend``; returns ``bind(images) -> call`` (input prepared outside the timing) and
    the thread count in use. ONNX Runtime runs a bare session whose idle threads spin (as a serving process would)."""
    if backend == "torch_eager":
        student = DepthModel.from_pretrained(model, device="cpu", precision="fp32", threads=threads)
        network = student.runner.model.to(memory_format=torch.channels_last)

        def bind_torch(images: np.ndarray) -> Callable[[], object]:
            tensor = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)

            def run() -> object:
                with torch.inference_mode():
                    return network(tensor)

            return run

        return bind_torch, torch.get_num_threads()
    if backend in RUNTIME_BACKENDS:
        runner = DepthModel.from_pretrained(model, threads=threads).runner
        return (lambda images: lambda: runner(images)), threads or "default"
    session = onnx_session(model, threads=threads, optimization="all", providers=["CPUExecutionProvider"])

    def bind_ort(images: np.ndarray) -> Callable[[], object]:
        return lambda: session.run(None, {INPUT_NAME: images})

    return bind_ort, threads or "default"


def measure_backend(
    backend: str,
    model: str,
    height: int,
    width: int,
    warmup: int,
    repeats: int,
    throughput_repeats: int,
    threads: int | None = None,
) -> dict:
    """Latency at batch 1 and throughput at batch 8 of one backend (call it in a process of its own).

    ``throughput_repeats=0`` skips batch 8 (``distill.compare`` reports latency only)."""
    bind, used_threads = _backend_runner(backend, model, threads)
    result: dict = {"backend": backend, "threads": used_threads}
    rng = np.random.default_rng(0)
    for batch, count in ((LATENCY_BATCH, repeats), (THROUGHPUT_BATCH, throughput_repeats)):
        if batch == THROUGHPUT_BATCH and count <= 0:
            continue
        images = rng.random((batch, 3, height, width), dtype=np.float32)  # (B, 3, H, W) RGB in [0, 1]
        seconds = time_calls(bind(images), warmup, count)
        median = statistics.median(seconds)
        result[f"batch{batch}"] = {
            "batch": batch,
            "repeats": len(seconds),
            "median_ms": median * 1e3,
            "min_ms": min(seconds) * 1e3,
            "images_per_s": batch / median,
        }
    return result


def lower_bound_ms(macs: int, flops_per_s: float, batch: int = 1) -> float:
    """The compute lower bound in milliseconds: 2 x MACs per image (one MAC = two FLOPs) at the measured rate."""
    return 2.0 * macs * batch / flops_per_s * 1e3


def cpu_info() -> dict:
    """Processor name, cores and whether it has int8 dot-product instructions (from /proc/cpuinfo on Linux)."""
    flags: set[str] = set()
    name = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    found = sorted(flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags)
    return {
        "processor": name,
        "logical_cores": os.cpu_count(),
        "avx2": "avx2" in flags,
        "int8_dot_product": found,
    }


def int8_note(cpu: dict) -> str:
    """Why int8 is or is not expected to beat fp32 on this CPU (printed beside the figures)."""
    if cpu["int8_dot_product"]:
        return (
            f"this CPU has int8 dot-product instructions ({', '.join(cpu['int8_dot_product'])}): int8 convolutions "
            "can run up to ~4x fp32's rate; ops without an int8 kernel (hard-swish, SE pooling) limit the gain"
        )
    return (
        "this CPU has no int8 dot-product instructions (AVX-VNNI, AVX512-VNNI, AMX, ARM dotprod): int8 convolutions "
        "run on AVX2 multiply-add sequences with 16-bit intermediates (about 2x fp32's rate at best), and every op "
        "without an int8 kernel (hard-swish, SE pooling) runs in fp32 between a dequantise and a quantise, so "
        "int8 is not expected to be faster here (see docs/deploy.md, 'int8 and its accuracy'); "
        "the gain is for CPUs with VNNI or ARM dot-product"
    )


# --------------------------------------------------------------------------------------------------------------
# The parent: one subprocess per measurement


def run_worker(arguments: list[str], timeout: float = 1800.0) -> dict:
    """``python -m distill.deploy.benchmark ...`` in a fresh process; its last stdout line is the JSON result."""
    command = [sys.executable, "-m", "distill.deploy.benchmark", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(arguments)}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def default_backends() -> list[str]:
    """PyTorch eager and ONNX Runtime, and each phone runtime whose toolchain is installed."""
    return [*BACKENDS, *(b for b in RUNTIME_BACKENDS if not missing_toolchain(*BACKEND_FORMATS[b]))]


def prepare_student(
    folder: str, name: str, workdir: Path, height: int, width: int, backends: Sequence[str] = BACKENDS,
    calibration_count: int = 8,
) -> dict:
    """Count parameters and MACs, and write the file each backend runs: fp32 ONNX (parity-checked on random inputs),
    static int8 ONNX, and the phone formats (``.tflite``, ``.pte``, fp32 and int8, batch 1) when asked for."""
    student = DepthModel.from_pretrained(folder, device="cpu", precision="fp32", input_size=(width, height))
    model, config = student.runner.model.to(memory_format=torch.contiguous_format), student.runner.config
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

    thread_args = ["--threads", str(threads)] if threads else []
    matmul_args = ["--matmul_size", str(matmul_size), "--matmul_repeats", str(matmul_repeats), *thread_args]
    timing_args = ["--size", f"{width}x{height}", "--warmup", str(warmup), "--repeats", str(repeats), *thread_args]
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as scratch:
        folder = Path(workdir) if workdir else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        names = list(names) if names else student_names(students)
        prepared = [
            prepare_student(student, name, folder, height, width, backends) for student, name in zip(students, names)
        ]
        matmul_rounds, backend_rounds = _time_rounds(
            prepared, backends, rounds, matmul_args, timing_args, throughput_repeats
        )
    matmul = _combine_matmul(matmul_rounds)
    for index, student in enumerate(prepared):
        _add_figures(student, {backend: backend_rounds[(index, backend)] for backend in backends}, matmul)
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


def _time_rounds(
    prepared: list[dict], backends: Sequence[str], rounds: int, matmul_args: list[str], timing_args: list[str],
    throughput_repeats: int,
) -> tuple[list[dict], dict[tuple[int, str], list[dict]]]:
    """Each round: the matmul, then every (student, backend), each in a worker of its own. Returns the matmul's
    rounds and each (student index, backend)'s rounds."""
    matmul_rounds: list[dict] = []
    backend_rounds: dict[tuple[int, str], list[dict]] = {}
    for round_number in range(rounds):
        logger.info("round %d of %d: fp32 matmul (%s^3)", round_number + 1, rounds, matmul_args[1])
        matmul_rounds.append(run_worker(["--worker", "matmul", *matmul_args]))
        for index, student in enumerate(prepared):
            for backend in backends:
                logger.info("round %d: %s on %s", round_number + 1, BACKEND_LABELS[backend], student["name"])
                # the phone files have batch 1: no throughput at batch 8 for them
                batch8 = 0 if backend in RUNTIME_BACKENDS else throughput_repeats
                measured = run_worker(["--worker", backend, "--model", student["models"][backend], *timing_args,
                                       "--throughput_repeats", str(batch8)])
                backend_rounds.setdefault((index, backend), []).append(measured)
    return matmul_rounds, backend_rounds


def _add_figures(student: dict, backend_rounds: dict[str, list[dict]], matmul: dict) -> None:
    """A prepared student's lower bounds, its backends' combined rounds with their ratios to the bound, and the
    speed-ups between backends."""
    student["lower_bound_ms"] = {
        f"batch{batch}": lower_bound_ms(student["macs"], matmul["flops_per_s_median"], batch)
        for batch in (LATENCY_BATCH, THROUGHPUT_BATCH)
    }
    student["backends"] = {}
    for backend, rounds in backend_rounds.items():
        measured = _combine_backend(rounds)
        for key in (f"batch{LATENCY_BATCH}", f"batch{THROUGHPUT_BATCH}"):
            if key in measured:
                bound = student["lower_bound_ms"][key]
                measured[key]["ratio_to_lower_bound"] = measured[key]["median_ms"] / bound
        student["backends"][backend] = measured
    student["ratios"] = _ratios(student["backends"])


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
# The command and its worker


#: ``python -m distill.benchmark``: its config.
COMMAND = Command("python -m distill.benchmark", BenchmarkConfig)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    width, height, backends = _checked_request(config)
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


def _checked_request(config: BenchmarkConfig) -> tuple[int, int, list[str]]:
    """(width, height, backends) once every model is a student folder and every backend's toolchain is installed;
    else a user error saying what to give or install."""
    _check_out_file(config.out)
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
    return width, height, backends


def _check_out_file(out: str) -> None:
    """``--out`` names a file that can be written once the timings are done (minutes later): not a folder, nor a path
    ending in ``/``, nor one under a file."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        raise UserError(f"--out {out} is a folder: name the JSON file to write, e.g. --out {path / 'benchmark.json'}")
    holder = next(parent for parent in path.absolute().parents if parent.exists())
    if not holder.is_dir():
        raise UserError(f"--out {out}: {holder} is a file, so no folder can hold the output")


#: ``python -m distill.deploy.benchmark``: one timing in a process of its own (the worker; not a user command).
WORKER = Command("python -m distill.deploy.benchmark", LatencyWorkerConfig)


def worker_main(argv: list[str] | None = None) -> int:
    """One timing: its JSON result on the last stdout line."""
    return run_command(_worker_main, argv, WORKER.prog)


def _worker_main(argv: list[str] | None) -> int:
    config, _ = WORKER.parse(argv)
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


if __name__ == "__main__":  # the worker; ``python -m distill.benchmark`` runs :func:`main`
    sys.exit(worker_main())
