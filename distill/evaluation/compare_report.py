"""``compare.md``: the one table of ``python -m distill.compare`` (best value per column in bold) and the text
around it that says how every figure was made (machine, latency settings, compute bound, protocols)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shards.format import STUDENT_SIZE

if TYPE_CHECKING:
    from distill.evaluation.compare_models import ModelEntry

NOT_AVAILABLE = "n/a"
#: Per data set: (header, metric key, which is best); also the columns of ``compare.md``.
DATA_COLUMNS = (("AbsRel", "abs_rel", "min"), ("δ1", "delta1", "max"), ("RMSE", "rmse", "min"))


def _fmt(value: float | None, digits: int) -> str:
    return NOT_AVAILABLE if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table_columns(datasets: Sequence[str]) -> list[tuple[str, str, int]]:
    """(header, best = "min" / "max" / "", digits) of every column of ``compare.md``, in order."""
    columns = [
        ("Model", "", 0),
        ("Architecture", "", 0),
        ("Input", "", 0),
        ("Params (M)", "min", 3),
        ("MACs (G)", "min", 3),
        ("Runtime", "", 0),
        ("Batch-1 ms", "min", 2),
        ("x compute bound", "min", 2),
    ]
    for dataset in datasets:
        columns += [(f"{dataset} {header}", best, 3) for header, _, best in DATA_COLUMNS]
    return columns


def table_values(entry: ModelEntry, datasets: Sequence[str]) -> list[Any]:
    """The raw values of one row, in ``table_columns`` order (None = n/a)."""
    latency = entry.latency or {}
    size = f"{entry.input_size[0]}x{entry.input_size[1]}" if entry.input_size else NOT_AVAILABLE
    values: list[Any] = [
        entry.name,
        entry.architecture or NOT_AVAILABLE,
        size,
        entry.params / 1e6 if entry.params is not None else None,
        entry.macs / 1e9 if entry.macs is not None else None,
        latency.get("runtime", NOT_AVAILABLE),
        latency.get("median_ms"),
        latency.get("ratio_to_lower_bound"),
    ]
    for dataset in datasets:
        metrics = entry.results.get(dataset, {}).get("metrics", {})
        values += [metrics.get(key) for _, key, _ in DATA_COLUMNS]
    return values


def format_table(entries: Sequence[ModelEntry], datasets: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells; in each numeric column with at least two values the best (as displayed) is in bold."""
    columns = table_columns(datasets)
    values = [table_values(entry, datasets) for entry in entries]
    cells = [
        [value if not digits else _fmt(value, digits) for value, (_, _, digits) in zip(row, columns)] for row in values
    ]
    for index, (_, best, _) in enumerate(columns):
        shown = [float(row[index]) for row in cells if best and row[index] != NOT_AVAILABLE]
        if len(shown) < 2:
            continue
        target = min(shown) if best == "min" else max(shown)
        for row in cells:
            if row[index] != NOT_AVAILABLE and float(row[index]) == target:
                row[index] = f"**{row[index]}**"
    return [header for header, _, _ in columns], cells


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_markdown(record: dict[str, Any], header: list[str], cells: list[list[str]]) -> str:
    """``compare.md``: the machine, the command, each data set's protocol, then the one table."""
    machine = record["machine"]
    lines = ["# Model comparison", "", f"Command: `{record['command']}`", ""]
    dots = ", ".join(machine["int8_dot_product"]) or "none"
    lines.append(
        f"Machine: {machine['processor']}, {machine['logical_cores']} logical cores, AVX2 "
        f"{'yes' if machine['avx2'] else 'no'}, int8 dot-product {dots}; torch {machine['torch']}, onnxruntime "
        f"{machine['onnxruntime']}; evaluation on {record['settings']['device']}."
    )
    latency = record["settings"]["latency"]
    if latency is None:
        lines.append("Latency: not measured (--latency false).")
    else:
        matmul = record["matmul"]
        lines.append(
            "Latency: each model in its runtime (student folders exported to ONNX, and .onnx files, in ONNX Runtime "
            "with ORT_ENABLE_ALL; .tflite in the LiteRT interpreter; .pte in ExecuTorch; an exported file runs at its "
            f"own precision), CPU, batch 1, median of {latency['repeats']} calls after "
            f"{latency['warmup']} warm-up, threads {latency['threads'] or 'default'}; each model in its own "
            f"subprocess, one after the other (distill.benchmark's worker). Compute bound = 2 x MACs / "
            f"{matmul['flops_per_s_median'] / 1e9:.1f} GFLOP/s (fp32 matmul {matmul['size']}^3, median, this "
            f"machine, the faster engine: {matmul.get('engine', 'torch')}); 'x compute bound' = latency / bound. "
            "MACs count every kernel tap, padding included (DeepLab's ASPP dilations 12/24/36 reach past a small "
            "feature map, where direct convolution skips those taps), so a ratio below 1 is possible."
        )
    lines.append("")
    width, height = record["settings"]["input_size"]
    size = "" if (width, height) == STUDENT_SIZE else f" (students: add `--size {width}x{height}`)"
    for data in record["datasets"]:
        frames = f"{data['count']} frame" + ("s" if data["count"] != 1 else "")
        note = f" ({data['note']})" if data["note"] != "as given" else ""
        keys = [word for key, value in data["evaluate_keys"].items() for word in (f"--{key}", str(value))]
        command = f"python -m distill.evaluate --model MODEL {shlex.join(keys)} --out DIR"
        lines.append(
            f"- **{data['name']}**: `{data['path']}`, {frames}, protocol `{data['protocol']['name']}`{note}; "
            f"each cell as `{command}`{size}"
        )
    for entry in record["models"]:
        for data_name, result in entry["results"].items():
            if result["protocol"]["name"] != _dataset(record, data_name)["protocol"]["name"] or (
                result["protocol_note"] != "as given"
            ):
                lines.append(
                    f"- {entry['name']} on {data_name}: protocol `{result['protocol']['name']}` "
                    f"({result['protocol_note']})"
                )
    lines += [
        "",
        "Bold: the best value of each column (lowest; highest for δ1) where at least two models have one. "
        "Metrics: per-image means over the frames (docs/evaluation.md); RMSE in metres. n/a: not applicable to that "
        "model (compare.json says why).",
        "",
        markdown_table(header, cells),
    ]
    return "\n".join(lines)


def _dataset(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(data for data in record["datasets"] if data["name"] == name)


