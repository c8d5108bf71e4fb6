"""``compare``'s rows: each model's size and compute (:mod:`distill.deploy.complexity`), the file to time (a
student's ONNX export, or the exported file itself), and its batch-1 latency in its runtime (ONNX Runtime, LiteRT,
ExecuTorch), timed by ``distill.deploy.latency_worker`` in a process of its own."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.evaluation.compare_inputs import folder_name

log = logging.getLogger(__name__)



#: The latency worker's backend for each kind of timed file -> the runtime's name in the table.
RUNTIME_NAMES = {"ort_fp32": "ONNX Runtime", "litert_fp32": "LiteRT", "executorch_fp32": "ExecuTorch"}


@dataclass
class ModelEntry:
    """One row: what the model is, its size and compute, its latency, and its results per data set."""

    name: str
    model: str
    source: str  # "student" | "onnx" | "teacher" | "constant"
    architecture: str | None = None
    params: int | None = None
    macs: int | None = None
    input_size: tuple[int, int] | None = None  # (W, H)
    timed_file: str | None = None  # the file timed (a student's temporary ONNX export, or the exported file itself)
    timing_backend: str = "ort_fp32"  # the latency worker that runs it (LiteRT, ExecuTorch for .tflite, .pte)
    latency: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # why a figure is n/a
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # data name -> evaluate's record, reduced

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "type": self.source,
            "architecture": self.architecture,
            "params": self.params,
            "macs": self.macs,
            "input_size": list(self.input_size) if self.input_size else None,
            "latency": self.latency,
            "notes": self.notes,
            "results": self.results,
        }


def _onnx_input_size(path: str) -> tuple[int | None, int | None]:
    """The (W, H) fixed in an exported graph; None for a dynamic axis."""
    from distill.deploy.runtime import onnx_session

    session = onnx_session(path, providers=["CPUExecutionProvider"], spinning=False)
    height, width = session.get_inputs()[0].shape[2:4]
    return (width if isinstance(width, int) else None), (height if isinstance(height, int) else None)


def prepare_model(entry: ModelEntry, input_size: tuple[int, int], workdir: Path | None) -> None:
    """Fill in the architecture, parameters and MACs, and (with ``workdir``) the ONNX graph to time.

    Students are counted at ``input_size`` and exported there (parity-checked on random pictures, as
    ``distill.benchmark`` does); an ``.onnx`` file is timed as it is (its MACs and parameters are n/a: the graph's
    folded initialisers are not the model's parameters); teachers and ``constant`` are not timed."""
    width, height = input_size
    if entry.source == "student":
        from distill.deploy.complexity import count_macs, count_parameters
        from distill.students import is_student_folder, load_student

        record = json.loads((Path(entry.model) / "config.json").read_text())
        if not is_student_folder(entry.model):
            raise ValueError(
                f"{entry.model}: config.json names architecture {record.get('architecture')!r}, which "
                "distill.students does not know"
            )
        entry.architecture = str(record.get("architecture"))
        network, _ = load_student(entry.model)
        entry.input_size = (width, height)
        entry.params = count_parameters(network)
        entry.macs = count_macs(network, (1, 3, height, width))
        if workdir is not None:
            entry.timed_file = _export_for_timing(entry, network, workdir, width, height)
        return
    if entry.source == "onnx":
        graph_width, graph_height = _onnx_input_size(entry.model)
        entry.input_size = (graph_width or width, graph_height or height)
        entry.notes["params"] = entry.notes["macs"] = "an .onnx file: counted only for student folders"
        entry.timed_file = entry.model if workdir is not None else None
        return
    if entry.source in ("tflite", "pte"):
        entry.notes["params"] = entry.notes["macs"] = f"a .{entry.source} file: counted only for student folders"
        from distill.deploy.runtime import load_runner

        runner = load_runner(entry.model, threads=1)
        entry.input_size = (runner.width, runner.height)
        entry.timed_file = entry.model if workdir is not None else None
        entry.timing_backend = "litert_fp32" if entry.source == "tflite" else "executorch_fp32"
        return
    reason = "a teacher: not exported" if entry.source == "teacher" else "the constant baseline: no network"
    for key in ("params", "macs", "latency"):
        entry.notes[key] = reason


def _export_for_timing(
    entry: ModelEntry, network: torch.nn.Module, workdir: Path, width: int, height: int
) -> str | None:
    from distill.deploy.onnx import export_onnx
    from distill.deploy.parity import ParityError, check_parity

    path = workdir / f"{folder_name(entry.name)}.onnx"
    export_onnx(network, path, height=height, width=width)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
    try:
        check_parity(network, path, {"random": pictures})
    except ParityError as error:
        log.warning("%s: not timed: %s", entry.name, error)
        entry.notes["latency"] = f"the ONNX export failed its parity check: {str(error).splitlines()[0]}"
        return None
    return str(path)


@dataclass
class LatencySettings:
    warmup: int = 5
    repeats: int = 50
    threads: int | None = None
    matmul_size: int = 2048
    matmul_repeats: int = 10


def time_models(entries: Sequence[ModelEntry], settings: LatencySettings) -> dict[str, Any]:
    """This machine's fp32 matmul rate, then every model at batch 1 in its runtime (students and ``.onnx`` in ONNX
    Runtime, ``.tflite`` in LiteRT, ``.pte`` in ExecuTorch; the file's own precision), each in its own
    ``distill.deploy.latency_worker`` process, one after the other. Returns the matmul record; fills
    ``entry.latency``."""
    from distill.deploy.benchmark import LATENCY_BATCH, lower_bound_ms, run_worker

    thread_args = ["--threads", str(settings.threads)] if settings.threads else []
    log.info("fp32 matmul %d^3 (the compute bound)", settings.matmul_size)
    matmul = run_worker(
        [
            "--worker",
            "matmul",
            "--matmul_size",
            str(settings.matmul_size),
            "--matmul_repeats",
            str(settings.matmul_repeats),
            *thread_args,
        ]
    )
    for entry in entries:
        if entry.timed_file is None:
            continue
        width, height = entry.input_size
        log.info("%s latency: %s (%dx%d)", entry.timing_backend, entry.name, width, height)
        arguments = ["--worker", entry.timing_backend, "--model", str(entry.timed_file), "--size", f"{width}x{height}"]
        arguments += ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--throughput_repeats", "0"]
        try:
            measured = run_worker([*arguments, *thread_args])[f"batch{LATENCY_BATCH}"]
        except RuntimeError as error:  # one model that cannot run does not take the table down
            log.warning("%s: not timed: %s", entry.name, error)
            entry.notes["latency"] = f"the {entry.timing_backend} worker failed: {str(error).splitlines()[0]}"
            continue
        latency = {"backend": entry.timing_backend, "runtime": RUNTIME_NAMES[entry.timing_backend], **measured}
        if entry.macs is not None:
            latency["lower_bound_ms"] = lower_bound_ms(entry.macs, matmul["flops_per_s_median"])
            latency["ratio_to_lower_bound"] = measured["median_ms"] / latency["lower_bound_ms"]
        else:
            entry.notes["ratio_to_lower_bound"] = "MACs unknown"
        entry.latency = latency
    return matmul
