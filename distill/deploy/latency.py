"""Timing on this machine, run inside ``python -m distill.deploy.latency_worker`` processes: calls of one backend
(PyTorch eager, ONNX Runtime fp32 or int8), the fp32 matmul rate that gives the compute lower bound, and what the
CPU offers for int8.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BACKENDS = ("torch_eager", "ort_fp32", "ort_int8")
BACKEND_LABELS = {
    "torch_eager": "torch eager", "ort_fp32": "ORT fp32", "ort_int8": "ORT int8", "litert_fp32": "LiteRT fp32",
    "litert_int8": "LiteRT int8", "executorch_fp32": "ExecuTorch fp32", "executorch_int8": "ExecuTorch int8",
}
#: The phone runtimes, timed on their exported files (``.tflite``, ``.pte``) through ``load_runner``.
RUNTIME_BACKENDS = ("litert_fp32", "litert_int8", "executorch_fp32", "executorch_int8")
#: Batch sizes: latency at 1, throughput at 8 (issue 6).
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 8
#: CPU flags of int8 dot-product instructions; without one, int8 convolutions are not faster than fp32.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")





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
    import torch

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
    from distill.deploy.runtime import onnx_session

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
    the thread count in use."""
    if backend == "torch_eager":
        import torch

        from distill.students import load_student

        if threads:
            torch.set_num_threads(threads)
        network, _ = load_student(model)
        network = network.to(memory_format=torch.channels_last)

        def bind_torch(images: np.ndarray) -> Callable[[], object]:
            tensor = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)

            def run() -> object:
                with torch.inference_mode():
                    return network(tensor)

            return run

        return bind_torch, torch.get_num_threads()
    if backend in RUNTIME_BACKENDS:
        from distill.deploy.runtime import load_runner

        runner = load_runner(model, threads=threads)
        return (lambda images: lambda: runner(images)), threads or "default"
    from distill.deploy.runtime import INPUT_NAME, onnx_session

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
    import os

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
