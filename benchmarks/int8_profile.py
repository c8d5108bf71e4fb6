"""Where a student's ONNX Runtime int8 time goes, and what ONNX Runtime's quantisation options change (issue 27).

    python benchmarks/int8_profile.py [--student fastdepth_minimal] [--rounds 5]
        [--out benchmarks/results/int8_profile.json]

1. Builds the student of ``benchmarks/compare_students.py``'s row ``--student`` (random weights: time does not
   depend on their values) at 256x192, exports it to ONNX and to the project's int8 (``distill.deploy.export``:
   QDQ, per-channel int8 weights, uint8 activations, 16 generated calibration scenes).
2. Profiles both files with ONNX Runtime's profiler, one thread, full graph optimisation: kernel time per operator
   type, and the convolutions split into depthwise (by kernel size), 1x1 and full kernels (read from the optimised
   graph).
3. Times quantisation variants of the same graph in one process, ``--rounds`` interleaved rounds of 30 calls after
   5 warm-up calls (median of the rounds' medians): QOperator format, uint8 weights, per-tensor weights, and every
   layer int8 but the depthwise ones; each with its mean |difference| to fp32 relative to the fp32 map's range.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

from benchmarks.compare_students import RECIPES  # noqa: E402
from distill.deploy.export import CalibrationReader, calibration_pictures, export, int8_path_for  # noqa: E402
from distill.deploy.runtime import images_to_batch  # noqa: E402
from distill.students import create_student  # noqa: E402
from distill.training.config import DistillConfig  # noqa: E402
from shards.cli.config import parse_config  # noqa: E402

WIDTH, HEIGHT = 256, 192
RESULTS = ROOT / "benchmarks" / "results" / "int8_profile.json"


def session(path: Path, profile_prefix: Path | None = None) -> ort.InferenceSession:
    """One thread, full optimisation; with ``profile_prefix``, profiling on and the optimised graph saved beside."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
        options.optimized_model_filepath = str(profile_prefix) + ".optimized.onnx"
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def conv_class(node: onnx.NodeProto) -> str:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("group", 1) > 1:
        return "depthwise conv " + "x".join(map(str, attributes.get("kernel_shape", [])))
    return "1x1 conv" if list(attributes.get("kernel_shape", [])) == [1, 1] else "full conv"


def profile(path: Path, batch: np.ndarray, work: Path, calls: int = 50) -> dict[str, dict[str, float]]:
    """Milliseconds per call over ``calls`` profiled calls (the first, cold call of each node left out): ``parts``
    by operator type (convolutions by kind), ``depthwise_layers`` by kernel and width (ONNX Runtime's fast int8
    depthwise kernel takes widths that are multiples of 16 only)."""
    prefix = work / f"profile_{path.stem}"
    runner = session(path, prefix)
    name = runner.get_inputs()[0].name
    for _ in range(calls):
        runner.run(None, {name: batch})
    events = json.loads(Path(runner.end_profiling()).read_text())
    graph = onnx.load(str(prefix) + ".optimized.onnx").graph
    kinds = {node.name: conv_class(node) for node in graph.node if "Conv" in node.op_type}
    widths = {node.name: onnx.helper.get_attribute_value(a) for node in graph.node for a in node.attribute
              if a.name == "group" and node.name in kinds and kinds[node.name].startswith("depthwise")}
    parts: collections.Counter = collections.Counter()
    layers: collections.Counter = collections.Counter()
    seen: set[str] = set()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")]
            if node not in seen:
                seen.add(node)
                continue
            milliseconds = event["dur"] / 1000 / (calls - 1)
            parts[kinds.get(node, event["args"]["op_name"])] += milliseconds
            if node in widths:
                layers[f"{kinds[node][len('depthwise conv '):]}, {widths[node]} channels"] += milliseconds
    return {"parts": {key: round(value, 3) for key, value in parts.most_common()},
            "depthwise_layers": {key: round(value, 3) for key, value in layers.most_common()}}


def variants(fp32: Path, batches: list[np.ndarray], work: Path) -> dict[str, Path]:
    """The project's int8 settings and ONNX Runtime's alternatives, quantised from the same prepared graph."""
    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared)).graph
    depthwise = [node.name for node in graph.node
                 if node.op_type == "Conv" and conv_class(node).startswith("depthwise")]
    base = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8)
    settings = {
        "QDQ, per-channel int8 weights (the project's)": base,
        "QOperator format": {**base, "quant_format": QuantFormat.QOperator},
        "uint8 weights": {**base, "weight_type": QuantType.QUInt8},
        "per-tensor weights": {**base, "per_channel": False},
        "depthwise layers kept fp32": {**base, "nodes_to_exclude": depthwise},
    }
    paths = {"fp32": fp32}
    for index, (label, options) in enumerate(settings.items()):
        paths[label] = work / f"variant_{index}.onnx"
        quantize_static(str(prepared), str(paths[label]), CalibrationReader(batches), **options)
    return paths


def time_variants(paths: dict[str, Path], batch: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    """Median ms of each file over interleaved rounds, and its mean |difference| to fp32 over fp32's range."""
    runners = {label: session(path) for label, path in paths.items()}
    name = runners["fp32"].get_inputs()[0].name
    medians: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(rounds):
        for label, runner in runners.items():
            for _ in range(5):
                runner.run(None, {name: batch})
            calls = []
            for _ in range(30):
                started = time.perf_counter()
                runner.run(None, {name: batch})
                calls.append(time.perf_counter() - started)
            medians[label].append(statistics.median(calls) * 1000)
    reference = runners["fp32"].run(None, {name: batch})[0]
    result = {}
    for label, runner in runners.items():
        difference = np.abs(runner.run(None, {name: batch})[0] - reference).mean() / np.ptp(reference)
        result[label] = {"median_ms": round(statistics.median(medians[label]), 3),
                         "rounds_ms": [round(m, 3) for m in medians[label]], "relative_difference": float(difference)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="fastdepth_minimal", choices=sorted(RECIPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    recipe, overrides = RECIPES[args.student]
    config = parse_config(DistillConfig, ["--config", str(ROOT / recipe), *overrides], prog="int8_profile")[0]
    model = create_student(dataclasses.replace(config.student, pretrained=False, pretrained_file=None)).eval()
    work = Path(tempfile.mkdtemp(prefix="int8_profile_"))
    fp32 = work / "student.onnx"
    export(model, "onnx", fp32, int8=True, height=HEIGHT, width=WIDTH, calibration_count=16)
    batches = [images_to_batch([p], WIDTH, HEIGHT) for p in calibration_pictures(None, 16, WIDTH, HEIGHT)]
    result = {
        "student": args.student,
        "profile_ms": {"fp32": profile(fp32, batches[0], work), "int8": profile(int8_path_for(fp32), batches[0], work)},
        "variants": time_variants(variants(fp32, batches, work), batches[0], args.rounds),
        "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d"), "onnxruntime": ort.__version__,
    }
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for kind, tables in result["profile_ms"].items():
        for table in tables.values():
            print(f"{kind}: " + ", ".join(f"{op} {ms:.2f}" for op, ms in list(table.items())[:8]) + " (ms per call)")
    for label, row in result["variants"].items():
        print(f"{label:<48} {row['median_ms']:7.2f} ms   difference {row['relative_difference']:.4f}")


if __name__ == "__main__":
    main()
