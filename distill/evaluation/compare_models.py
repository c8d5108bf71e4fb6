"""``compare``'s rows: each model's size and compute (:mod:`distill.deploy.complexity`), its ONNX graph, and its
ONNX Runtime fp32 latency at batch 1, timed by ``distill.deploy.latency_worker`` in a process of its own."""

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
    onnx_path: str | None = None  # the graph timed (a student's temporary export, or the .onnx itself)
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
            entry.onnx_path = _export_for_timing(entry, network, workdir, width, height)
        return
    if entry.source == "onnx":
        graph_width, graph_height = _onnx_input_size(entry.model)
        entry.input_size = (graph_width or width, graph_height or height)
        entry.notes["params"] = entry.notes["macs"] = "an .onnx file: counted only for student folders"
        entry.onnx_path = entry.model if workdir is not None else None
        return
    if entry.source in ("tflite", "pte"):
        entry.notes["params"] = entry.notes["macs"] = f"a .{entry.source} file: counted only for student folders"
        entry.notes["latency"] = f"a .{entry.source} file: time it with benchmarks/runtime_latency.py"
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
    """This machine's fp32 matmul rate, then every exported model at batch 1 in ONNX Runtime fp32, each in its own
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
        if entry.onnx_path is None:
            continue
        width, height = entry.input_size
        log.info("ORT fp32 latency: %s (%dx%d)", entry.name, width, height)
        arguments = ["--worker", "ort_fp32", "--model", str(entry.onnx_path), "--size", f"{width}x{height}"]
        arguments += ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--throughput_repeats", "0"]
        try:
            measured = run_worker([*arguments, *thread_args])[f"batch{LATENCY_BATCH}"]
        except RuntimeError as error:  # one model that cannot run does not take the table down
            log.warning("%s: not timed: %s", entry.name, error)
            entry.notes["latency"] = f"the ONNX Runtime worker failed: {str(error).splitlines()[0]}"
            continue
        latency = {"backend": "ort_fp32", **measured}
        if entry.macs is not None:
            latency["lower_bound_ms"] = lower_bound_ms(entry.macs, matmul["flops_per_s_median"])
            latency["ratio_to_lower_bound"] = measured["median_ms"] / latency["lower_bound_ms"]
        else:
            entry.notes["ratio_to_lower_bound"] = "MACs unknown"
        entry.latency = latency
    return matmul
