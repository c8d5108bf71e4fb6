"""``python -m distill.benchmark`` times the phone runtimes beside ONNX Runtime in one run: every installed
runtime's fp32 and int8 file gets a batch-1 latency and a ratio to the compute bound (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from distill.deploy import benchmark
from distill.deploy.benchmark import BACKEND_LABELS
from tests.deploy_runtimes.conftest import SIZE, needs

WIDTH, HEIGHT = SIZE
TINY_RUN = ["--size", f"{WIDTH}x{HEIGHT}", "--warmup", "0", "--repeats", "2", "--throughput_repeats", "1"]
TINY_RUN += ["--matmul_size", "128", "--matmul_repeats", "2", "--threads", "1"]
PHONE = ["litert_fp32", "litert_int8", "executorch_fp32", "executorch_int8"]


@needs("tflite")
@needs("executorch")
def test_phone_runtimes_are_timed_beside_onnx_runtime(student: Path, tmp_path: Path) -> None:
    backends = [item for backend in ["ort_fp32", *PHONE] for item in ("--backend", backend)]
    out = tmp_path / "bench.json"
    assert benchmark.main(["--model", str(student), "--out", str(out), "--workdir", str(tmp_path / "files"),
                           *TINY_RUN, *backends]) == 0
    (result,) = json.loads(out.read_text())["students"]
    assert set(result["backends"]) == {"ort_fp32", *PHONE}
    for backend in PHONE:
        figures = result["backends"][backend]
        assert figures["batch1"]["median_ms"] > 0 and figures["batch1"]["ratio_to_lower_bound"] > 0
        assert "batch8" not in figures  # the phone files have batch 1
        assert Path(result["models"][backend]).is_file()
    assert result["models"]["litert_int8"].endswith(".int8.tflite")
    assert result["models"]["executorch_int8"].endswith(".int8.pte")
    report = benchmark.format_report(json.loads(out.read_text()))
    for backend in PHONE:
        assert BACKEND_LABELS[backend] in report


def test_default_backends_are_the_installed_ones() -> None:
    defaults = benchmark.default_backends()
    assert defaults[:3] == ["torch_eager", "ort_fp32", "ort_int8"]
    for backend in PHONE:
        format, int8 = benchmark.BACKEND_FORMATS[backend]
        assert (backend in defaults) == (not benchmark.missing_toolchain(format, int8))


@needs("tflite")
def test_compare_times_a_tflite_file_in_litert(student: Path, held_out_scenes: Path, tmp_path: Path) -> None:
    """``compare --model x.tflite`` times the file in its own runtime beside a student timed in ONNX Runtime."""
    from distill.deploy.export import export
    from distill.evaluation import compare
    from distill.students import load_student

    model, _ = load_student(student)
    tflite = tmp_path / "student.tflite"
    export(model, "tflite", tflite, height=HEIGHT, width=WIDTH)
    argv = ["--model", str(student), "--model", f"phone={tflite}", "--data", str(held_out_scenes), "--limit", "1"]
    argv += ["--size", f"{WIDTH}x{HEIGHT}", "--picture_frames", "1", "--latency_warmup", "1", "--latency_repeats", "2"]
    argv += ["--matmul_size", "128", "--matmul_repeats", "2", "--threads", "1", "--out", str(tmp_path / "out")]
    assert compare.main(argv) == 0
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    student_row, phone_row = record["models"]
    assert student_row["latency"]["runtime"] == "ONNX Runtime"
    assert phone_row["latency"]["runtime"] == "LiteRT" and phone_row["latency"]["median_ms"] > 0
    assert phone_row["input_size"] == [WIDTH, HEIGHT]
    assert "LiteRT" in (tmp_path / "out" / "compare.md").read_text()
